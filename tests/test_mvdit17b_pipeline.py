"""MV-DiT-17B through the DiT framework: the registered variant, its sampler against upstream, the windowed pipeline
(first-window and next-window transformer inputs vs upstream's, two seeded windows end to end), motion guidance,
distilled mode, fp8 through the pipeline, conditioning conversions and refusals.

Reference cases are discovered by name (``mvdit17b/case_mvdit17b_*``, ``wan/cond17b/case_cond17b_*``); every shape
comes from the case, its manifest or the weights.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from _wan_reference import WAN_DIR, cases, find_manifest, load_case, max_abs, write_release_file
from conftest import manifest_for, reference_cases, reference_dir
from safetensors import safe_open
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.dit import variants
from mtv_pack.mtv_core.dit.guidance_17b import guided_velocity_17b, text_cfg_17b
from mtv_pack.mtv_core.dit.latents import CHANNELS_FIRST
from mtv_pack.mtv_core.dit.loading import load_dit, read_dit_config
from mtv_pack.mtv_core.dit.pipeline import Carried
from mtv_pack.mtv_core.dit.pipeline_17b import (
    DEFAULT_NEGATIVE_PROMPT,
    MVDiT17BConditioning,
    decode_17b,
    output_size_17b,
    sample_17b,
    umt5_rows,
)
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.sampler_17b import Guidance17B, denoise_17b
from mtv_pack.mtv_core.dit.sampling import GuidanceTerm
from mtv_pack.mtv_core.dit.schedulers import make_flow_match_scheduler
from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config, write_tiny_mvdit17b
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B
from mtv_pack.mtv_core.dit.vae_wan import WAN21, FramesVideoVAE, WanVideoVAE, load_wan_video_vae
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.testing import regenerate_from_manifest
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow
from mtv_pack.mtv_core.wan.image_encoder import load_clip_vision, write_tiny_clip_vision
from mtv_pack.mtv_core.wan.vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD, load_wan_vae, write_tiny_wan_vae
from mtv_pack.mtv_core.windows import plan_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIT_CASES = reference_cases("mvdit17b", "mvdit17b")
COND_CASES = cases("cond17b")
JOINT_MEAN = np.load(reference_dir() / "motion" / "mean.npy", allow_pickle=False)


def test_reference_cases_present():
    assert DIT_CASES and COND_CASES


# --- the registered variant against upstream ----------------------------------------------------------------------

@pytest.mark.parametrize("case_path", DIT_CASES, ids=[c.stem for c in DIT_CASES])
def test_registered_variant_and_sampler_reproduce_upstream_sampling(case_path, tmp_path):
    """load_dit(variant="17b") of the case's weights + denoise_17b (the pipeline's guidance and loop) reproduce the
    reference's 3-step text-CFG sampling."""
    manifest = manifest_for(case_path)
    path = tmp_path / "mvdit17b.safetensors"
    save_file({k: v.contiguous() for k, v in regenerate_from_manifest(manifest).items()}, str(path))
    found, config = read_dit_config(path)
    assert found.name == "17b" and config.dim == manifest["config"]["dim"]
    model = load_dit(path, dtype="fp32", variant="17b")
    assert isinstance(model, MVDiT17B) and variants.variant_of(model) is found
    case, meta = load_case(case_path)
    key = next(k for k in case if k.startswith("sampled_"))
    steps = int(meta.get("steps", len(case["timesteps"])))
    scheduler = make_flow_match_scheduler(float(meta.get("shift", 5.0)))
    motion_rope = motion_rope_17b(case["x"].shape[1], JOINT_MEAN, config.head_dim)
    out = denoise_17b(model, case["x"][None], y=case["y"][None], clip_fea=case["clip_fea"], context=case["context"],
                      negative_context=case["context_negative"], motion_tokens=case["motion_tokens"],
                      motion_rope=motion_rope, num_steps=steps, text_guidance=float(meta.get("guidance", 6.0)),
                      scheduler=scheduler)
    torch.testing.assert_close(scheduler.timesteps, case["timesteps"], atol=0, rtol=1e-6)
    assert max_abs(out[0], case[key]) <= 1e-3


@pytest.mark.parametrize("steps", [10, 50])
def test_flow_match_adapter_schedule_is_upstreams(steps):
    with safe_open(str(WAN_DIR / "cond17b" / "flowmatch_shift5.safetensors"), framework="pt") as f:
        timesteps, sigmas = f.get_tensor(f"timesteps_{steps}"), f.get_tensor(f"sigmas_{steps}")
    adapter = make_flow_match_scheduler()
    torch.testing.assert_close(adapter.set_timesteps(steps), timesteps, atol=0, rtol=1e-6)
    torch.testing.assert_close(adapter.sigmas, sigmas, atol=1e-7, rtol=1e-6)


def test_registered_defaults_and_layout():
    seventeen = variants.get_variant("17b")
    assert (seventeen.title, seventeen.latent_format_name) == ("MV-DiT-17B", "wan2.1")
    assert (seventeen.defaults.steps, seventeen.defaults.guidance, seventeen.defaults.seed) == (50, 6.0, 42)
    assert seventeen.window_frames(None) == 49
    assert WAN21.layout == CHANNELS_FIRST and (WAN21.mean, WAN21.std) == (WAN21_LATENT_MEAN, WAN21_LATENT_STD)
    assert DEFAULT_NEGATIVE_PROMPT == "bad hands, extra limbs, fused fingers, blurry, low quality"


def test_released_key_list_builds_and_loads_on_meta_through_the_registry():
    from _wan_reference import ShapesOnly

    from mtv_pack.mtv_core.checkpoint import load_into
    from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig

    shapes = json.loads((reference_dir() / "mvdit17b" / "mvdit17b_full_keys.json").read_text())["params"]
    seventeen = variants.get_variant("17b")
    assert seventeen.matches(["model.diffusion_model." + k for k in shapes])
    config = seventeen.config_from_checkpoint(None, {k: tuple(v) for k, v in shapes.items()})
    assert config == MVDiT17BConfig()
    with torch.device("meta"):
        model = seventeen.build(config)
    load_into(model, ShapesOnly("released", shapes), dtype=torch.bfloat16, device="meta", what="MV-DiT-17B")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == shapes


# --- the pipeline's transformer inputs vs upstream's conditioning ----------------------------------------------------

_COND_MODELS: dict = {}


def _cond_models(weights: str, tmp_path_factory):
    names = tuple(sorted(n.strip() for n in weights.split(",")))
    if names not in _COND_MODELS:
        folder = tmp_path_factory.mktemp("cond_weights")
        vae_manifest = find_manifest(next(n for n in names if "wanvae" in n))
        clip_manifest = find_manifest(next(n for n in names if "clipvis" in n))
        vae = load_wan_video_vae(write_release_file(vae_manifest, folder / "Wan2.1_VAE.pth"), dtype=torch.float32)
        clip = load_clip_vision(write_release_file(clip_manifest, folder / "clip.pth"),
                                num_heads=clip_manifest["config"]["num_heads"])
        _COND_MODELS[names] = (vae, clip)
    return _COND_MODELS[names]


class _Inputs:
    """Records the y and clip_fea every transformer call of a run receives."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append({"y": kwargs["y"].detach().clone(), "clip_fea": kwargs["clip_fea"].detach().clone(),
                           "motion": kwargs["motion_tokens"] is not None})


@pytest.mark.parametrize("case_path", COND_CASES, ids=[c.stem for c in COND_CASES])
def test_pipeline_transformer_inputs_equal_upstreams(case_path, tmp_path_factory):
    case, meta = load_case(case_path)
    vae, clip = _cond_models(meta["weights"], tmp_path_factory)
    num_frames, height, width = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])
    latent_frames = WAN21.latent_frames(num_frames)
    model = MVDiT17B(tiny_mvdit17b_config(num_layers=1, clip_dim=case["clip_fea"].shape[-1])).eval()
    gen = torch.Generator().manual_seed(3)
    cond = MVDiT17BConditioning(model, context=torch.randn(4, model.config.text_dim, generator=gen),
                                negative_context=torch.randn(3, model.config.text_dim, generator=gen), clip=clip)
    # the case's reference is already at the output size, where reference_frames only maps uint8 to 0..1 (it
    # refuses references under 64 px, and the case is 32 px)
    reference = case["ref_image_uint8"].float() / 255
    assert reference.shape == (height, width, 3)
    cond.prepare(vae, reference, num_frames, torch.Generator().manual_seed(0))
    carried = None
    if "previous_sample" in case:  # window k > 0: the previous window's last frames, as the pipeline carries them
        previous = case["previous_sample"][0].permute(1, 2, 3, 0)
        carried = Carried(previous, WAN21.latent_frames(previous.shape[0]), vae)
    recorder = _Inputs(model)
    noise = torch.randn(WAN21.latent_shape(num_frames, height, width), generator=gen)
    tokens = torch.randn(1, latent_frames * 24, 192, generator=gen)
    with torch.no_grad():
        out = cond.denoise_window(1 if carried else 0, noise, tokens, carried, num_steps=1,
                                  generator=torch.Generator().manual_seed(1), callback=None, preview=None)
    recorder.handle.remove()
    (call,) = recorder.calls  # one batched text-CFG call: [negative, positive]
    assert call["y"].shape[0] == 2 and torch.equal(call["y"][0], call["y"][1])
    assert max_abs(call["y"][1:], case["y"]) < 1e-4
    assert torch.equal(call["y"][1:, :4], case["y"][:, :4])
    assert max_abs(call["clip_fea"][1:], case["clip_fea"]) < 1e-4
    if carried is not None:  # after the last step the overlap's latent frames are exactly upstream's pinned latents
        n = carried.latent_frames
        assert max_abs(out[:, :, :n], case["y"][:, 4:, :n]) < 1e-4


# --- two windows end to end ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_17b(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny17b")
    config = tiny_mvdit17b_config(clip_dim=128)  # the tiny CLIP tower's width
    model = load_dit(write_tiny_mvdit17b(root / "mvdit17b.safetensors", config=config, seed=3), dtype="fp32")
    vae = load_wan_video_vae(write_tiny_wan_vae(root / "wan_2.1_vae.safetensors", naming="comfy"), dtype=torch.float32)
    clip = load_clip_vision(write_tiny_clip_vision(root / "clip_vision_h.safetensors", naming="comfy"))
    return root, model, vae, clip


def _motion(frames: int, width: int = 192, seed: int = 0) -> MotionTokens:
    plan = plan_windows(frames)
    gen = torch.Generator().manual_seed(seed)
    windows = [TokenWindow(s, plan.window, torch.randn(1, 13 * 24, width, generator=gen),
                           torch.zeros(1, 13 * 24, dtype=torch.long)) for s in plan.starts]
    return MotionTokens(windows, JointSequence(np.zeros((frames, 24, 3), np.float32), fps=20.0), plan)


def _text(dim: int = 64, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return dict(context=torch.randn(7, dim, generator=gen), negative_context=torch.randn(5, dim, generator=gen))


REFERENCE = (np.random.default_rng(0).random((80, 64, 3)) * 255).astype(np.uint8)


def test_two_windows_end_to_end_are_seeded_and_carry_the_overlap(tiny_17b):
    _, model, vae, clip = tiny_17b
    motion = _motion(89)
    run = dict(width=64, height=64, num_steps=2, keep_frames=True, clip=clip, **_text())
    first = sample_17b(model, vae, REFERENCE, motion, seed=5, **run)
    assert (first.variant, first.starts, first.window, first.num_frames) == ("17b", (0, 40), 49, 89)
    assert first.samples.shape == (2, 16, 13, 8, 8) and first.frames.shape == (89, 64, 64, 3)
    assert first.latent_format == vae.latent_format
    again = sample_17b(model, vae, REFERENCE, motion, seed=5, **run)
    assert torch.equal(first.samples, again.samples) and torch.equal(first.frames, again.frames)
    other = sample_17b(model, vae, REFERENCE, motion, seed=6, **run)
    assert not torch.equal(first.samples, other.samples)
    # window 1 starts from window 0's last 9 frames: its first 3 latent frames are their (normalised) latents
    carried = vae.encode_normalized(vae.decode_frames(first.samples[:1])[-9:].permute(3, 0, 1, 2)[None] * 2 - 1,
                                    sample=False)
    assert max_abs(first.samples[1:, :, :3], carried) < 1e-4
    frames = decode_17b(vae, first)
    assert frames is first.frames


def test_motion_guidance_is_one_more_pass_without_motion_on_its_steps(tiny_17b):
    _, model, _, _ = tiny_17b
    gen = torch.Generator().manual_seed(2)
    inputs = dict(y=torch.randn(1, 20, 2, 4, 4, generator=gen), clip_fea=torch.randn(1, 257, 128, generator=gen),
                  motion_tokens=torch.randn(1, 48, 192, generator=gen), motion_rope=motion_rope_17b(2, JOINT_MEAN))
    text = _text()
    predict = Guidance17B(model, **inputs, **text, text_guidance=6.0, motion_guidance=GuidanceTerm(2.5, 0.5, 1.0))
    assert [predict.forwards_per_step(i, 4) for i in range(4)] == [2, 2, 3, 3]
    assert Guidance17B(model, **inputs, **text, text_guidance=6.0).forwards_per_step(0, 4) == 2  # off by default
    distilled = Guidance17B(model, **inputs, **text, text_guidance=6.0, cfg_mode="distilled")
    assert distilled.negative is None and distilled.forwards_per_step(0, 4) == 1
    latents = torch.randn(1, 16, 2, 4, 4, generator=gen)
    with torch.no_grad():
        plain = text_cfg_17b(model, latents, 700.0, [text["context"]], [text["negative_context"]], 6.0, **inputs)
        same = guided_velocity_17b(model, latents, 700.0, [text["context"]], [text["negative_context"]], 6.0, 1.0,
                                   **inputs)
        guided = guided_velocity_17b(model, latents, 700.0, [text["context"]], [text["negative_context"]], 6.0, 2.5,
                                     **inputs)
        v_pos = model(latents, 700.0, [text["context"]], inputs["clip_fea"], inputs["motion_tokens"],
                      inputs["motion_rope"], y=inputs["y"]).float()
        v_skip = model(latents, 700.0, [text["context"]], inputs["clip_fea"], None, None, y=inputs["y"]).float()
    torch.testing.assert_close(same, plain)
    torch.testing.assert_close(guided, plain + 1.5 * (v_pos - v_skip), atol=1e-5, rtol=0)
    assert (v_pos - v_skip).abs().max() > 1e-3


def test_the_pass_without_motion_is_the_model_without_motion_attention(tiny_17b):
    _, model, _, _ = tiny_17b
    gen = torch.Generator().manual_seed(4)
    args = (torch.randn(1, 16, 2, 4, 4, generator=gen), 300.0, [torch.randn(3, 64, generator=gen)],
            torch.randn(1, 257, 128, generator=gen))
    y = torch.randn(1, 20, 2, 4, 4, generator=gen)
    silent = MVDiT17B(model.config).eval()
    silent.load_state_dict(model.state_dict())
    for block in silent.blocks:
        if block.has_motion:  # motion attention that adds nothing
            torch.nn.init.zeros_(block.motion_attn.o.weight)
            torch.nn.init.zeros_(block.motion_attn.o.bias)
    with torch.no_grad():
        skipped = model(*args, None, None, y=y)
        zero_attention = silent(*args, torch.randn(1, 48, 192, generator=gen), motion_rope_17b(2, JOINT_MEAN), y=y)
        zero_tokens = model(*args, torch.zeros(1, 48, 192), motion_rope_17b(2, JOINT_MEAN), y=y)
    torch.testing.assert_close(skipped, zero_attention, atol=1e-6, rtol=0)
    assert (zero_tokens - skipped).abs().max() > 1e-3  # zero tokens are not "no motion" (ungated residual + biases)


def test_distilled_mode_runs_the_positive_prompt_only(tiny_17b, monkeypatch):
    _, model, vae, clip = tiny_17b
    batches = []
    handle = model.register_forward_pre_hook(lambda m, a: batches.append(a[0].shape[0]))
    try:
        sample_17b(model, vae, REFERENCE, _motion(49), width=64, height=64, num_steps=3, cfg_mode="distilled",
                   clip=clip, **_text())
        distilled = list(batches)
        batches.clear()
        sample_17b(model, vae, REFERENCE, _motion(49), width=64, height=64, num_steps=3, clip=clip,
                   motion_guidance=2.0, motion_guidance_start=0.5, **_text())
    finally:
        handle.remove()
    assert distilled == [1, 1, 1]
    assert batches == [2, 2, 2, 1]  # text CFG every step; the pass without motion on the steps from half on (step 2)


def test_scaled_fp8_runs_through_the_pipeline_within_fp8_rounding_of_its_bf16_twin(tmp_path):
    config = tiny_mvdit17b_config(clip_dim=128)
    bf16 = load_dit(write_tiny_mvdit17b(tmp_path / "bf16.safetensors", config=config, seed=8, dtype=torch.bfloat16),
                    dtype="fp32")
    fp8 = load_dit(write_tiny_mvdit17b(tmp_path / "fp8.safetensors", config=config, seed=8, dtype=torch.bfloat16,
                                       fp8="scaled"), dtype="fp32")
    assert fp8.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    vae = load_wan_video_vae(write_tiny_wan_vae(tmp_path / "vae.safetensors", naming="comfy"), dtype=torch.float32)
    clip = load_clip_vision(write_tiny_clip_vision(tmp_path / "clip.safetensors", naming="comfy"))
    run = dict(width=64, height=64, num_steps=2, seed=3, clip=clip, **_text())
    out_bf16 = sample_17b(bf16, vae, REFERENCE, _motion(49), **run).samples
    out_fp8 = sample_17b(fp8, vae, REFERENCE, _motion(49), **run).samples
    rel = ((out_fp8 - out_bf16).norm() / out_bf16.norm()).item()
    # e4m3fn rounds each weight by at most 2**-4 of its magnitude; two steps of a 5-layer model stay within that
    assert 0 < rel < 2.0**-4, rel


# --- conversions, sizes, refusals ------------------------------------------------------------------------------------

def test_padded_comfyui_conditioning_becomes_upstreams_trimmed_rows(caplog):
    rows = torch.randn(9, 64)
    padded = torch.cat([rows, torch.zeros(512 - 9, 64)])[None]  # ComfyUI: 512 tokens, padded rows zeroed
    assert torch.equal(umt5_rows(padded), rows)
    from mtv_pack.mtv_core.dit.transformer_17b import pad_text_context

    assert torch.equal(pad_text_context([umt5_rows(padded)], 512), padded)
    long = torch.randn(1, 600, 64)
    with caplog.at_level(logging.WARNING):
        assert umt5_rows(long).shape == (512, 64)
    assert "600 tokens" in caplog.text


def test_aspect_buckets_or_explicit_sizes():
    assert output_size_17b(np.zeros((477, 304, 3), np.uint8)) == (384, 640)  # upstream's woman.png -> 640x384
    assert output_size_17b(np.zeros((300, 300, 3), np.uint8), 0, 0) == (512, 512)
    assert output_size_17b(np.zeros((300, 300, 3), np.uint8), 320, 192) == (320, 192)


def test_wrong_inputs_are_named(tiny_17b, tmp_path):
    _, model, vae, clip = tiny_17b
    with pytest.raises(ValueError, match="768 wide.*takes 64.*umT5"):
        MVDiT17BConditioning(model, context=torch.zeros(5, 768), clip=clip)
    with pytest.raises(ValueError, match="CLIP vision output is 1024 wide.*takes 128"):
        MVDiT17BConditioning(model, context=torch.zeros(5, 64), reference_clip=torch.zeros(1, 257, 1024))
    with pytest.raises(ValueError, match="needs CLIP image features"):
        MVDiT17BConditioning(model, context=torch.zeros(5, 64))
    with pytest.raises(ValueError, match="motion tokens are 128-dimensional.*expects 192|expects at most"):
        sample_17b(model, vae, REFERENCE, _motion(49, width=300), width=64, height=64, num_steps=1, clip=clip,
                   **_text())
    with pytest.raises(ValueError, match="needs a CLIP vision model"):
        sample_17b(model, vae, REFERENCE, _motion(89), width=64, height=64, num_steps=1,
                   reference_clip=torch.zeros(1, 257, 128), **_text())
    from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b

    seven = load_dit(write_tiny_mvdit7b(tmp_path / "7b.safetensors"), dtype="fp32")
    with pytest.raises(ValueError, match="the model is MV-DiT-7B, not MV-DiT-17B"):
        MVDiT17BConditioning(seven, context=torch.zeros(5, 64), clip=clip)
    with pytest.raises(CheckpointError, match="7b.safetensors.*is MV-DiT-7B"):
        load_dit(tmp_path / "7b.safetensors", variant="17b")


def test_a_7b_latent_is_refused_by_the_wan_decoder(tiny_17b, tmp_path):
    _, _, vae, _ = tiny_17b
    from mtv_pack.mtv_core.dit.pipeline_7b import sample_7b
    from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b
    from mtv_pack.mtv_core.dit.vae import load_vae, write_tiny_vae

    seven = load_dit(write_tiny_mvdit7b(tmp_path / "7b.safetensors"), dtype="fp32")
    cog = load_vae(write_tiny_vae(tmp_path / "cog.safetensors"), dtype=torch.float32)
    latent = sample_7b(seven, cog, REFERENCE, _motion(49, width=128), width=64, height=64, num_steps=1)
    with pytest.raises(ValueError, match="these latents come from MV-DiT-7B, not MV-DiT-17B"):
        decode_17b(vae, latent)


def test_wan_video_vae_is_the_wan_vae_in_the_interface(tiny_17b):
    root, _, vae, _ = tiny_17b
    wan = load_wan_vae(root / "wan_2.1_vae.safetensors", dtype=torch.float32)
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    raw = vae.encode(pixels, sample=False)
    torch.testing.assert_close(WAN21.normalize(raw), wan.encode(pixels))
    torch.testing.assert_close(vae.decode_normalized(WAN21.normalize(raw)), wan.decode(wan.encode(pixels)))


class _FramesVAE:
    """ComfyUI's comfy.sd.VAE surface over our tiny Wan VAE: frames (T, H, W, 3) in 0..1 <-> raw latents."""

    def __init__(self, vae: WanVideoVAE):
        self.vae, self.vae_dtype, self.device = vae, torch.float32, torch.device("cpu")

    def encode(self, frames):
        return self.vae.encode(frames.permute(3, 0, 1, 2)[None] * 2 - 1, sample=False)

    def decode(self, latents):
        return (self.vae.decode(latents).permute(0, 2, 3, 4, 1) * 0.5 + 0.5).clamp(0, 1)


def test_frames_vae_adapter_matches_the_vae_it_wraps(tiny_17b):
    _, _, vae, _ = tiny_17b
    native = FramesVideoVAE(_FramesVAE(vae), source="wan_2.1_vae.safetensors")
    pixels = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(native.encode(pixels, sample=False), vae.encode(pixels, sample=False), atol=1e-5,
                               rtol=0)
    z = vae.encode_normalized(pixels)
    torch.testing.assert_close(native.decode_normalized(z), vae.decode_normalized(z), atol=1e-5, rtol=0)
    assert FramesVideoVAE(native.native).identity() == native.identity()  # another wrapper of the same VAE
    with pytest.raises(ValueError, match="only posterior modes"):
        native.encode(pixels)
