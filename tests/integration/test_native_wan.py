"""ComfyUI's native Wan inputs against the pack's core paths, in-process with the ComfyUI of COMFYUI_DIR.

- VAE: ComfyUI's own Wan2.1 VAE (``comfy.sd.VAE`` from ``wan_2.1_vae``-named weights, what Load VAE builds) behind
  ``FramesVideoVAE`` encodes and decodes what our ``WanVideoVAE`` does; ``VAE.encode`` returns *raw* latents and
  ``latent_formats.Wan21`` holds the statistics our format normalises with.
- CONDITIONING: ComfyUI's Wan text encoder (``comfy.text_encoders.wan`` umT5, as Load CLIP type wan builds it; here
  from a tiny file, see ``probe_pack/wan_stand_ins.py``) pads every prompt to 512 tokens and zeroes the padded rows;
  the rows are our core umT5's for the same token ids, and ``umt5_rows`` turns them into upstream's trimmed rows.
- CLIP_VISION_OUTPUT: ComfyUI's CLIP vision tower gives our core tower's penultimate-block features for the same
  tower input; its own preprocessing (antialiased resize, rounding to 1/255) differs from upstream's.
- LoRA: patches on a clone of the DiT's ModelPatcher give the weights our core merge gives, fp8-stored weights
  included, and are undone when the model is loaded without them.
- MV-DiT-17B from ``comfy.ops`` layers, loaded partially by ComfyUI, samples what the whole model samples.
"""

from __future__ import annotations

import copy
import os
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.dit.lora import apply_lora
from mtv_pack.mtv_core.dit.pipeline_17b import umt5_rows
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.sampler_17b import denoise_17b
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config, write_tiny_mvdit17b
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B
from mtv_pack.mtv_core.dit.vae_wan import WAN21, load_wan_video_vae
from mtv_pack.mtv_core.wan.image_encoder import load_clip_vision
from mtv_pack.mtv_core.wan.text_encoder import load_umt5
from mtv_pack.mtv_core.wan.vae import write_tiny_wan_vae
from mtv_pack.nodes import _comfy
from mtv_pack.nodes.dit17b import NativeClipEncoder, native_wan_vae

from .workflow_assets import stand_ins, write_tiny_model

pytestmark = pytest.mark.integration
CPU = torch.device("cpu")
CONFIG = tiny_mvdit17b_config(clip_dim=128)


@pytest.fixture(scope="module")
def comfy():
    sys.path.insert(0, os.environ["COMFYUI_DIR"])
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import comfy.latent_formats
    import comfy.model_management
    import comfy.sd
    import comfy.utils

    torch.set_num_threads(1)
    yield types.SimpleNamespace(mm=comfy.model_management, sd=comfy.sd, utils=comfy.utils,
                                latent_formats=comfy.latent_formats)
    comfy.model_management.current_loaded_models.clear()


def test_native_wan_vae_is_ours_in_the_frames_interface(comfy, tmp_path):
    path = write_tiny_wan_vae(tmp_path / "wan_2.1_vae.safetensors", naming="comfy")
    native = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))  # what Load VAE does with the file
    assert native.vae_dtype == torch.float32
    ours = load_wan_video_vae(path, dtype=torch.float32)
    adapter = native_wan_vae(native)
    pixels = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    raw_native, raw_ours = adapter.encode(pixels, sample=False), ours.encode(pixels, sample=False)
    assert raw_native.shape == WAN21.latent_shape(9, 32, 48)
    torch.testing.assert_close(raw_native, raw_ours, atol=1e-4, rtol=0)  # raw: ComfyUI normalises in the sampler
    wan21 = comfy.latent_formats.Wan21()
    assert torch.equal(wan21.latents_mean.flatten(), torch.tensor(WAN21.mean))  # the same 16 + 16 values
    assert torch.equal(wan21.latents_std.flatten(), torch.tensor(WAN21.std))
    z = WAN21.normalize(raw_ours)
    torch.testing.assert_close(wan21.process_in(raw_native), z, atol=1e-4, rtol=0)
    torch.testing.assert_close(adapter.decode_normalized(z), ours.decode_normalized(z), atol=1e-4, rtol=0)


def test_native_wan_text_conditioning_is_our_umt5_padded_with_zero_rows(comfy, tmp_path):
    path = tmp_path / "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    write_tiny_model("umt5", path)
    clip = stand_ins().native_wan_clip(str(path))
    ours = load_umt5(path, dtype=torch.float32)
    for text in ("The character is dancing.", "bad hands, extra limbs, fused fingers, blurry, low quality", ""):
        tokens = clip.tokenize(text)
        cond = clip.encode_from_tokens_scheduled(tokens)[0][0]
        ids = torch.tensor([[t for t, _ in tokens["umt5xxl"][0]]])
        length = int((ids[0] != 0).sum())  # the prompt's tokens and eos; ComfyUI pads with 0 up to 512
        assert cond.shape == (1, 512, 64) and ids.shape == (1, 512) and ids[0, length - 1] == 1
        assert torch.equal(cond[0, length:], torch.zeros(512 - length, 64))  # padded rows zeroed
        (rows,) = ours.encode_text(ids, (ids != 0).long())
        torch.testing.assert_close(cond[0, :length], rows, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(umt5_rows(cond), rows, atol=1e-4, rtol=1e-4)  # upstream's trimmed embeddings


def test_native_clip_vision_output_is_our_penultimate_block(comfy, tmp_path):
    import comfy.clip_model

    from safetensors.torch import load_file

    path = tmp_path / "clip_vision_h.safetensors"
    write_tiny_model("clip_vision", path)
    native = stand_ins().native_clip_vision(str(path))
    assert native.dtype == torch.float16  # ComfyUI keeps most CLIP vision weights in fp16 (computing in fp32)
    # our tower on the same values (what ComfyUI holds in fp16, rounded), computing in fp32 as its manual_cast does
    held = native.model.state_dict()
    rounded = tmp_path / "clip_vision_h_as_held.safetensors"
    save_file({k: v.half().float() if held[k].dtype == torch.float16 else v for k, v in load_file(str(path)).items()},
              str(rounded), metadata={"mtv_clip_vision_config": native_metadata(path)})
    ours, ours_fp32 = load_clip_vision(rounded), load_clip_vision(path)
    image = torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(1))  # an IMAGE
    output = native.encode_image(image, crop=False)  # what CLIP Vision Encode (crop none) returns
    pixels = comfy.clip_model.clip_preprocess(image, size=ours.image_size, crop=False)  # ComfyUI's tower input
    torch.testing.assert_close(output.penultimate_hidden_states, ours.features_from_input(pixels), atol=1e-4, rtol=0)
    # upstream: fp32 weights, and its own preprocessing (bicubic without antialiasing, no rounding to 1/255)
    upstream = ours_fp32.encode(image.permute(0, 3, 1, 2) * 2 - 1)
    assert (output.penultimate_hidden_states - upstream).abs().max() > 1e-4
    torch.testing.assert_close(NativeClipEncoder(native).encode(image.permute(0, 3, 1, 2) * 2 - 1),
                               output.penultimate_hidden_states)


def native_metadata(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["mtv_clip_vision_config"]


def _dit(operations) -> MVDiT17B:
    model = MVDiT17B(CONFIG, operations=operations)
    model.load_state_dict(random_state_dict_17b(CONFIG, seed=4))
    return model.eval().requires_grad_(False)


def _fp8_dit(tmp_path) -> MVDiT17B:
    """A scaled-fp8 file as the loader holds it: block Linear weights in fp8 with their per-tensor scales."""
    from mtv_pack.mtv_core.dit.loading import load_dit

    return load_dit(write_tiny_mvdit17b(tmp_path / "fp8.safetensors", config=CONFIG, seed=4, fp8="scaled"),
                    dtype="fp32")


def _lora(path):
    gen = torch.Generator().manual_seed(2)
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 256, generator=gen) * 0.05,
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, 4, generator=gen) * 0.05,
               "lora_unet_blocks_3_ffn_0.lora_down.weight": torch.randn(2, 256, generator=gen) * 0.05,
               "lora_unet_blocks_3_ffn_0.lora_up.weight": torch.randn(512, 2, generator=gen) * 0.05,
               "lora_unet_blocks_3_ffn_0.alpha": torch.tensor(1.0),
               "diffusion_model.blocks.1.modulation.diff": torch.randn(1, 6, 256, generator=gen) * 0.01,
               "diffusion_model.head.head.diff_b": torch.randn(64, generator=gen) * 0.01}, str(path))
    return path


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-file", "scaled-fp8"])
def test_lora_patches_equal_the_merge_and_are_undone_without_them(comfy, tmp_path, fp8):
    lora = str(_lora(tmp_path / "lora.safetensors"))
    model = _fp8_dit(tmp_path) if fp8 else _dit(_comfy.operations_for(torch.float32, torch.float32, CPU))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    merged = copy.deepcopy(model)
    apply_lora(merged, lora, strength=0.7)  # the core merge (fp8 layers re-quantised)
    managed = _comfy.manage(model, _comfy.Placement(CPU, CPU))
    patched = _comfy.with_lora(managed, lora, 0.7)
    assert patched.model is model and patched.patcher is not managed.patcher
    loaded = comfy.mm.LoadedModel(patched.patcher)
    loaded.model_load()
    targets = ["blocks.0.self_attn.q.weight", "blocks.3.ffn.0.weight", "blocks.1.modulation", "head.head.bias"]
    for key in targets:
        expected, got = merged.get_parameter(key), model.get_parameter(key)
        layer = key.rpartition(".")[0]
        if got.dtype == torch.float8_e4m3fn:  # compare the real weights: stored values times their scale
            expected = merged.get_submodule(layer).dequantized_weight()
            got = model.get_submodule(layer).dequantized_weight()
            changed = (got - original[key].float() * original[f"{layer}.scale_weight"]).abs().max()
            tolerance = 2.0**-3 * expected.abs().max().item()  # two fp8 roundings of the same value
            assert torch.equal(model.get_submodule(layer).scale_weight, original[f"{layer}.scale_weight"])
        else:
            changed, tolerance = (got.float() - original[key].float()).abs().max(), 1e-6
        assert changed > 0, key
        assert (got.float() - expected.float()).abs().max() <= tolerance, key
    loaded.model_unload()
    comfy.mm.LoadedModel(managed.patcher).model_load()  # the model without the LoRA
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key


def _sample(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    frames = 3
    with torch.inference_mode():
        return denoise_17b(model, torch.randn(1, 16, frames, 4, 4, generator=g), y=torch.randn(1, 20, frames, 4, 4, generator=g),
                           clip_fea=torch.randn(1, 257, 128, generator=g), context=torch.randn(6, 64, generator=g),
                           negative_context=torch.randn(4, 64, generator=g),
                           motion_tokens=torch.randn(1, frames * 24, 192, generator=g),
                           motion_rope=motion_rope_17b(frames, np.zeros((24, 3), np.float32) + [0, 0, 2000]),
                           num_steps=2, motion_guidance=None)


@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "scaled-fp8"])
def test_17b_partially_loaded_by_comfyui_samples_what_the_whole_one_does(comfy, tmp_path, fp8):
    """bf16/fp32 models are all comfy.ops layers; an fp8 model's Linear layers are the pack's (loaded whole by
    ComfyUI) and the rest comfy.ops."""
    from mtv_pack.mtv_core.dit.loading import load_dit

    ops = _comfy.operations_for(torch.float32, torch.float32, CPU)
    path = write_tiny_mvdit17b(tmp_path / "fp8.safetensors", config=CONFIG, seed=4, fp8="scaled") if fp8 else None

    def build():
        return load_dit(path, dtype="fp32", operations=ops) if fp8 else _dit(ops)

    whole = _comfy.manage(build(), _comfy.Placement(CPU, CPU))
    comfy.mm.LoadedModel(whole.patcher).model_load()
    expected = _sample(whole.model)
    part = _comfy.manage(build(), _comfy.Placement(CPU, CPU))
    comfy.mm.LoadedModel(part.patcher).model_load(lowvram_model_memory=int(part.patcher.model_size() * 0.5))
    assert part.model.model_lowvram and 0 < part.patcher.loaded_size() < part.patcher.model_size()
    assert [m for m in part.model.modules() if getattr(m, "comfy_cast_weights", False)]
    assert part.model.device == CPU  # set by the patcher
    assert torch.equal(_sample(part.model), expected)
