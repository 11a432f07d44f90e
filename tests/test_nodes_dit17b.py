"""The MV-DiT-17B nodes outside ComfyUI (stand-in io): loader lists and loading, LoRA, the sampler on native-style
CONDITIONING / CLIP_VISION_OUTPUT / VAE inputs, decoding, and one clear error per wrong input."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear
from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config, write_tiny_mvdit17b
from mtv_pack.mtv_core.dit.vae_wan import load_wan_video_vae
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow
from mtv_pack.mtv_core.wan.image_encoder import load_clip_vision, write_tiny_clip_vision
from mtv_pack.mtv_core.wan.vae import write_tiny_wan_vae
from mtv_pack.mtv_core.windows import plan_windows
from mtv_pack.nodes import dit17b

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIG = tiny_mvdit17b_config(clip_dim=128)  # the tiny CLIP tower's width; text 64 wide


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models17b")
    mtv, dm, loras = root / "mtvcrafter", root / "diffusion_models", root / "loras"
    write_tiny_mvdit17b(mtv / "MV-DiT" / "Wan-2-1", config=CONFIG, as_folder=True, seed=2)
    write_tiny_mvdit17b(dm / "mvdit17b_fp8_scaled.safetensors", config=CONFIG, fp8="scaled", seed=2,
                        prefix="model.diffusion_model.")
    write_tiny_mvdit17b(dm / "wan2.1_i2v_14b_base.safetensors", config=CONFIG, part="base", seed=2)
    write_tiny_mvdit17b(mtv / "mvdit17b_motion_adapter.safetensors", config=CONFIG, part="adapter", seed=2)
    write_tiny_mvdit7b(dm / "mvdit7b.safetensors")
    write_tiny_checkpoint(mtv / "tokenizer.safetensors")
    gen = torch.Generator().manual_seed(0)
    loras.mkdir()
    save_file({"diffusion_model.blocks.1.ffn.0.lora_down.weight": torch.randn(4, 256, generator=gen),
               "diffusion_model.blocks.1.ffn.0.lora_up.weight": torch.randn(512, 4, generator=gen),
               "diffusion_model.blocks.1.ffn.0.alpha": torch.tensor(4.0),
               "lora_unet_blocks_2_self_attn_o.lora_down.weight": torch.randn(2, 256, generator=gen),
               "lora_unet_blocks_2_self_attn_o.lora_up.weight": torch.randn(256, 2, generator=gen),
               "diffusion_model.vace_blocks.0.proj.lora_up.weight": torch.zeros(1, 1)}, str(loras / "tiny_lora.safetensors"))
    vae = load_wan_video_vae(write_tiny_wan_vae(root / "vae" / "wan_2.1_vae.safetensors", naming="comfy"),
                             dtype=torch.float32)
    clip = load_clip_vision(write_tiny_clip_vision(root / "clip_vision" / "clip_vision_h.safetensors", naming="comfy"))
    return root, vae, clip


@pytest.fixture
def models_dir(models, monkeypatch):
    monkeypatch.setenv("MTV_MODELS_DIR", str(models[0]))
    return models


def test_loader_lists_offer_17b_models_bases_and_adapters_only(models_dir):
    assert dit17b.dit_choices() == ["MV-DiT/Wan-2-1", "mvdit17b_fp8_scaled.safetensors",
                                    "wan2.1_i2v_14b_base.safetensors"]
    assert dit17b.adapter_choices() == ["(none)", "mvdit17b_motion_adapter.safetensors"]
    assert dit17b.lora_choices() == ["tiny_lora.safetensors"]


def _load(**kwargs):
    kwargs.setdefault("dtype", "fp32")
    return dit17b.MTVLoadDiT17B.execute(device="cpu", **kwargs).result[0]


def test_loader_reads_folders_fp8_files_and_base_plus_adapter(models_dir):
    folder = _load(model="MV-DiT/Wan-2-1")
    fp8 = _load(model="mvdit17b_fp8_scaled.safetensors")
    split = _load(model="wan2.1_i2v_14b_base.safetensors", adapter="mvdit17b_motion_adapter.safetensors")
    assert isinstance(fp8.model.blocks[0].self_attn.q, FP8Linear)
    assert fp8.model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    for key, value in folder.model.state_dict().items():
        assert torch.equal(split.model.state_dict()[key], value), key
    stored = _load(model="MV-DiT/Wan-2-1", dtype="fp8_e4m3fn")
    assert stored.model.blocks[0].ffn[0].weight.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(model="mvdit7b.safetensors"), CheckpointError, "mvdit7b.safetensors: not an MV-DiT-17B.*is MV-DiT-7B"),
    (dict(model="wan2.1_i2v_14b_base.safetensors"), CheckpointError, "without motion attention.*adapter"),
    (dict(model="MV-DiT/Wan-2-1", adapter="mvdit17b_motion_adapter.safetensors"), CheckpointError,
     "already holds motion attention"),
    (dict(model=dit17b.NO_DIT), FileNotFoundError, "no MV-DiT-17B selected"),
])
def test_loader_names_the_wrong_file(models_dir, kwargs, error, message):
    with pytest.raises(error, match=message):
        _load(**kwargs)


def test_loader_refuses_an_adapter_of_another_width(models_dir, tmp_path):
    wide = tiny_mvdit17b_config(dim=384, num_heads=3, clip_dim=128)
    write_tiny_mvdit17b(models_dir[0] / "mtvcrafter" / "wide_adapter.safetensors", config=wide, part="adapter")
    try:
        with pytest.raises(CheckpointError, match="wide_adapter.safetensors: motion adapter of width 384.*width 256"):
            _load(model="wan2.1_i2v_14b_base.safetensors", adapter="wide_adapter.safetensors")
    finally:
        (models_dir[0] / "mtvcrafter" / "wide_adapter.safetensors").unlink()


def test_loader_refuses_a_text_to_video_base(models_dir):
    from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, save_mvdit17b, split_adapter

    t2v = tiny_mvdit17b_config(in_dim=16, clip_dim=128)  # Wan2.1 T2V: 16 input channels, no image embedding
    base, _ = split_adapter(random_state_dict_17b(t2v, seed=1))
    path = models_dir[0] / "diffusion_models" / "wan2.1_t2v_14b.safetensors"
    save_mvdit17b({k: v for k, v in base.items() if not k.startswith("img_emb.")}, path)
    try:
        assert "wan2.1_t2v_14b.safetensors" not in dit17b.dit_choices()  # not offered ...
        with pytest.raises(CheckpointError, match="wan2.1_t2v_14b.safetensors: no image embedding.*text-to-video"):
            _load(model="wan2.1_t2v_14b.safetensors", adapter="mvdit17b_motion_adapter.safetensors")  # ... nor loaded
    finally:
        path.unlink()


def test_lora_node_returns_a_patched_copy_and_leaves_the_model(models_dir, caplog):
    base = _load(model="MV-DiT/Wan-2-1")
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    patched = dit17b.MTVLoraLoader17B.execute(base, "tiny_lora.safetensors", 0.5).result[0]
    assert all(torch.equal(v, before[k]) for k, v in base.model.state_dict().items())
    changed = {k for k, v in patched.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"blocks.1.ffn.0.weight", "blocks.2.self_attn.o.weight"}
    assert "1 keys match no layer" in caplog.text and "vace_blocks" in caplog.text
    assert dit17b.MTVLoraLoader17B.execute(base, "tiny_lora.safetensors", 0.0).result[0] is base


# --- the sampler on native-style inputs --------------------------------------------------------------------------------

class WanVAE:  # what comfy.sd.VAE holds for the Wan2.1 VAE (its class is checked by module and name)
    pass


WanVAE.__module__ = "comfy.ldm.wan.vae"


class NativeVAE:
    """comfy.sd.VAE's surface for the Wan VAE: IMAGE frames (T, H, W, 3) in 0..1 <-> raw latents (1, 16, F, h, w)."""

    latent_channels, latent_dim, vae_dtype, device = 16, 3, torch.float32, torch.device("cpu")

    def __init__(self, vae):
        self.vae, self.first_stage_model, self.decodes = vae, WanVAE(), 0

    def encode(self, frames):
        return self.vae.encode(frames.permute(3, 0, 1, 2)[None] * 2 - 1, sample=False)

    def decode(self, latents):
        self.decodes += 1
        return (self.vae.decode(latents).permute(0, 2, 3, 4, 1) * 0.5 + 0.5).clamp(0, 1)

    def memory_used_encode(self, shape, dtype):
        return 6000 * shape[3] * shape[4] * 4

    def memory_used_decode(self, shape, dtype):
        return 7000 * shape[3] * shape[4] * 64 * 4


class NativeClipVision:
    """ClipVisionModel's surface: encode_image(IMAGE, crop) -> an output with penultimate_hidden_states."""

    def __init__(self, clip):
        self.clip, self.calls = clip, 0

    def encode_image(self, image, crop=True):
        self.calls += 1
        return types.SimpleNamespace(penultimate_hidden_states=self.clip.encode(image.permute(0, 3, 1, 2) * 2 - 1))


def _conditioning(rows: torch.Tensor) -> list:
    """ComfyUI's Wan CLIPTextEncode output: (1, 512, D) with the padded rows zeroed."""
    cond = torch.zeros(1, 512, rows.shape[-1])
    cond[0, : rows.shape[0]] = rows
    return [[cond, {"pooled_output": None}]]


def _motion(frames, width=192):
    plan = plan_windows(frames)
    gen = torch.Generator().manual_seed(0)
    windows = [TokenWindow(s, 49, torch.randn(1, 312, width, generator=gen), torch.zeros(1, 312, dtype=torch.long))
               for s in plan.starts]
    return MotionTokens(windows, JointSequence(np.zeros((frames, 24, 3), np.float32), fps=20.0), plan)


def _sampler_inputs(models, **changes):
    root, vae, clip = models
    gen = torch.Generator().manual_seed(1)
    reference = torch.rand(1, 96, 80, 3, generator=gen)  # an IMAGE batch
    inputs = dict(model=_load(model="MV-DiT/Wan-2-1"), vae=NativeVAE(vae),
                  positive=_conditioning(torch.randn(9, 64, generator=gen)),
                  negative=_conditioning(torch.randn(14, 64, generator=gen)),
                  clip_vision_output=NativeClipVision(clip).encode_image(reference, crop=False),
                  reference=reference, motion=_motion(89), width=64, height=64, steps=2, seed=7,
                  clip_vision=NativeClipVision(clip))
    inputs.update(changes)
    return inputs


def test_sampler_and_decoder_on_native_inputs(models_dir):
    inputs = _sampler_inputs(models_dir, motion_guidance=2.0)
    latents = dit17b.MTVSampler17B.execute(**inputs).result[0]
    assert (latents.variant, latents.starts, latents.frames.shape) == ("17b", (0, 40), (89, 64, 64, 3))
    assert inputs["clip_vision"].calls == 1  # the second window's last overlap frame
    again = dit17b.MTVSampler17B.execute(**inputs).result[0]
    assert torch.equal(latents.samples, again.samples)
    vae = inputs["vae"]
    decodes = vae.decodes
    frames, fps = dit17b.MTVDecode17B.execute(vae, latents).result
    assert frames is latents.frames and fps == 20.0 and vae.decodes == decodes  # decoded while sampling
    other = NativeVAE(models_dir[1])
    frames_again, _ = dit17b.MTVDecode17B.execute(other, latents).result
    assert other.decodes == 2 and torch.allclose(frames_again, frames, atol=1e-5)


def test_sampler_sizes_by_the_reference_bucket_and_distilled_mode(models_dir, monkeypatch):
    seen = {}

    def fake_sample(model, vae, reference, motion, **kwargs):
        seen.update(kwargs)
        return "latents"

    monkeypatch.setattr(dit17b, "sample_17b", fake_sample)
    inputs = _sampler_inputs(models_dir, width=0, height=0, cfg_mode="distilled", window_clip="reference",
                             clip_vision=None, batched_cfg=False)
    assert dit17b.MTVSampler17B.execute(**inputs).result[0] == "latents"
    assert (seen["width"], seen["height"]) == (448, 544)  # 96 x 80 (h/w 1.2) -> upstream's 1.21 bucket 544 x 448
    assert seen["cfg_mode"] == "distilled" and seen["window_clip"] == "reference" and seen["clip"] is None
    assert seen["batched_cfg"] is False
    assert seen["context"].shape == (9, 64) and seen["negative_context"].shape == (14, 64)  # trimmed as upstream


def test_wrong_native_inputs_are_named(models_dir, tmp_path):
    root, vae, clip = models_dir
    wide = _conditioning(torch.randn(5, 4096))
    with pytest.raises(ValueError, match="4096 wide, but MV-DiT-17B takes 64: use the umT5-XXL text encoder"):
        dit17b.MTVSampler17B.execute(**_sampler_inputs(models_dir, positive=wide))
    not_wan = NativeVAE(vae)
    not_wan.latent_channels = 4
    with pytest.raises(ValueError, match="the VAE input is .*4 latent channels.*not the Wan2.1 VAE"):
        dit17b.MTVSampler17B.execute(**_sampler_inputs(models_dir, vae=not_wan))
    with pytest.raises(ValueError, match="CLIP vision output is 64 wide, but MV-DiT-17B takes 128"):
        dit17b.MTVSampler17B.execute(**_sampler_inputs(
            models_dir, clip_vision_output=types.SimpleNamespace(penultimate_hidden_states=torch.zeros(1, 257, 64))))
    with pytest.raises(ValueError, match="needs a CLIP vision model"):
        dit17b.MTVSampler17B.execute(**_sampler_inputs(models_dir, clip_vision=None))
    from mtv_pack.nodes import dit7b  # a 7B model on the 17B sampler

    model7 = dit7b.MTVLoadDiT7B.execute("mvdit7b.safetensors", dtype="fp32", device="cpu").result[0]
    with pytest.raises(ValueError, match="MTV Sampler \\(17B\\) takes MV-DiT-17B; the model given is MV-DiT-7B"):
        dit17b.MTVSampler17B.execute(**_sampler_inputs(models_dir, model=model7))


def test_a_7b_latent_is_refused_by_the_17b_decoder(models_dir):
    from mtv_pack.mtv_core.dit.latents import LatentFormat, MTVLatent

    latent = MTVLatent(variant="7b", latent_format=LatentFormat(name="cogvideox", scaling_factor=0.7),
                       samples=torch.zeros(1, 13, 16, 8, 8), starts=(0,), window=49, num_frames=49, fps=20.0,
                       width=64, height=64, seed=0)
    with pytest.raises(ValueError, match="these latents come from MV-DiT-7B, not MV-DiT-17B"):
        dit17b.MTVDecode17B.execute(NativeVAE(models_dir[1]), latent)
