"""The DiT framework's seams: variant registry and dispatching loader, shape-derived configs and windows,
nothing left on the meta device, latent formats and the typed MTV_LATENT."""

from __future__ import annotations

import dataclasses
import json
import logging
import types

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.commands import animate
from mtv_pack.mtv_core.dit import sampler_7b, variants
from mtv_pack.mtv_core.dit.latents import CHANNELS_FIRST, FRAMES_FIRST, LatentFormat
from mtv_pack.mtv_core.dit.loading import load_dit, read_dit_config
from mtv_pack.mtv_core.dit.pipeline import decode_video
from mtv_pack.mtv_core.dit.pipeline_7b import sample_7b
from mtv_pack.mtv_core.dit.sampling import SamplingDefaults
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, save_mvdit7b, tiny_mvdit7b_config, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.dit.vae import load_vae, write_tiny_vae
from mtv_pack.mtv_core.dit.video_vae import VideoVAE
from mtv_pack.mtv_core.meta_init import empty_weights, meta_tensors
from mtv_pack.mtv_core.motion import procedural_motion
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer
from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- a second variant, registered the way variant_17b.py will be -------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ToyConfig:
    dim: int
    layers: int


class ToyWan(nn.Module):
    """Wan-style keys (blocks.N..., patch_embedding) and a non-persistent RoPE-like buffer no checkpoint holds."""

    def __init__(self, config: ToyConfig, operations=nn) -> None:
        super().__init__()
        self.config = config
        self.patch_embedding = operations.Linear(4, config.dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"motion_attn": operations.Linear(config.dim, config.dim)}) for _ in range(config.layers)
        )
        self.register_buffer("freqs", torch.arange(config.dim, dtype=torch.float32) / config.dim, persistent=False)
        self.backend = None

    def set_attention_backend(self, name):
        self.backend = name


def _toy_config(config_json, shapes):
    layers = 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("blocks."))
    return ToyConfig(dim=shapes["patch_embedding.weight"][0], layers=layers)


TOY = variants.DiTVariant(
    name="toy17b", title="Toy-17B", signature_keys=("patch_embedding.weight", "blocks.0.motion_attn.weight"),
    key_prefixes=("model.diffusion_model.",), config_from_checkpoint=_toy_config, model_class=ToyWan,
    latent_format_name="wan2.1", defaults=SamplingDefaults(steps=10, guidance=6.0, seed=42),
    window_frames=lambda config: 49, conditioning=lambda model, **kw: None, load_vae=lambda *a, **k: None,
    expected="a toy Wan-layout file",
)


@pytest.fixture
def toy_variant():
    variants.register(TOY)
    yield TOY
    variants._REGISTRY.pop(TOY.name)


def _write_toy(path, dim=8, layers=2, prefix=""):
    model = ToyWan(ToyConfig(dim, layers))
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_seven_b_is_registered_and_names_resolve():
    seven = variants.get_variant("7b")
    assert "7b" in variants.variant_names() and seven.title == "MV-DiT-7B"
    assert seven.defaults == SamplingDefaults(steps=50, guidance=3.0, seed=6666)
    with pytest.raises(ValueError, match="unknown MV-DiT variant 'flux'; choose one of 7b, 17b"):
        variants.get_variant("flux")
    assert variants.variant_title("17b") == "MV-DiT-17B" and variants.variant_title("9b") == "MV-DiT variant '9b'"


def test_loader_dispatches_on_the_keys_and_names_the_variant_it_found(tmp_path, toy_variant):
    seven_path = write_tiny_mvdit7b(tmp_path / "7b.safetensors")
    toy_path = _write_toy(tmp_path / "toy.safetensors", prefix="model.diffusion_model.")
    seven = load_dit(seven_path, dtype="fp32")
    assert isinstance(seven, MVDiT7B) and variants.variant_of(seven).name == "7b"
    toy = load_dit(toy_path, dtype="fp32", attention="sdpa")
    assert isinstance(toy, ToyWan) and toy.config == ToyConfig(8, 2) and toy.backend == "sdpa"
    assert variants.variant_of(toy) is TOY and read_dit_config(toy_path) == (TOY, ToyConfig(8, 2))
    with pytest.raises(CheckpointError, match=r"this is an Toy-17B checkpoint, not MV-DiT-7B; load it as the toy17b"):
        load_dit(toy_path, variant="7b")
    with pytest.raises(CheckpointError, match="this is an MV-DiT-7B checkpoint, not Toy-17B") as info:
        load_dit(seven_path, variant="toy17b")
    assert str(seven_path) in str(info.value)


def test_wan_file_without_a_registered_variant_is_named(tmp_path):
    path = _write_toy(tmp_path / "wan.safetensors")
    with pytest.raises(CheckpointError, match="not an MV-DiT-7B checkpoint; it has Wan-like key names.*MV-DiT-17B"):
        load_dit(path, variant="7b")
    with pytest.raises(CheckpointError, match="not an MV-DiT checkpoint"):
        load_dit(path)


def test_operations_reach_the_constructor_only_when_given(tmp_path, toy_variant):
    built = []

    class Linear(nn.Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    toy = load_dit(_write_toy(tmp_path / "toy.safetensors"), dtype="fp32", operations=types.SimpleNamespace(Linear=Linear))
    assert len(built) == 3 and isinstance(toy.patch_embedding, Linear)
    # the 7B constructor is called without the keyword (it works with or without an operations parameter)
    calls = []
    spy = dataclasses.replace(variants.get_variant("7b"), model_class=lambda *a, **k: calls.append(k) or MVDiT7B(*a))
    with empty_weights():
        spy.build(tiny_mvdit7b_config())
    assert calls == [{}]


def test_non_persistent_buffers_are_real_after_loading(tmp_path, toy_variant):
    """Built under ``torch.device("meta")``, ``freqs`` would stay an empty meta tensor (no checkpoint has it)."""
    path = _write_toy(tmp_path / "toy.safetensors", dim=6)
    toy = load_dit(path, dtype="fp32")
    assert meta_tensors(toy) == [] and toy.freqs.device.type == "cpu"
    torch.testing.assert_close(toy.freqs, torch.arange(6.0) / 6)
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(toy.patch_embedding.weight, f.get_tensor("patch_embedding.weight"))


@pytest.mark.parametrize("what", ["dit", "tokenizer", "vae"])
def test_no_parameter_or_buffer_is_left_on_meta(tmp_path, what):
    if what == "dit":
        model = load_dit(write_tiny_mvdit7b(tmp_path / "dit", as_folder=True), dtype="bf16")
    elif what == "tokenizer":
        model = load_tokenizer(write_tiny_checkpoint(tmp_path / "tok.safetensors"))
    else:
        model = load_vae(write_tiny_vae(tmp_path / "vae.safetensors"), dtype=torch.float32).vae
    assert meta_tensors(model) == [] and all(t.device.type == "cpu" for t in model.state_dict().values())


# --- every shape-dependent setting comes from the weights ---------------------------------------------------------

FIVE_FRAMES = dataclasses.replace(tiny_mvdit7b_config(), num_unconditional_tokens=5 * 24)


def test_unconditional_token_count_comes_from_the_weights(tmp_path):
    folder = save_mvdit7b(random_state_dict_7b(FIVE_FRAMES, seed=2), tmp_path / "CogVideoX", FIVE_FRAMES, as_folder=True)
    config_json = json.loads((folder / "config.json").read_text())
    assert "num_unconditional_tokens" not in config_json  # like upstream's config.json
    found, config = read_dit_config(folder)
    assert found.name == "7b" and config == FIVE_FRAMES
    assert config.unconditional_latent_frames == 5 and config.window_frames == 17 and found.window_frames(config) == 17
    model = load_dit(folder, dtype="fp32")
    assert model.unconditional_motion_token.shape == (120, 128)


def test_a_five_frame_model_samples_with_guidance_on_its_own_windows(tmp_path, monkeypatch, caplog):
    """The CLI reads the window (4 (F - 1) + 1 = 17) from the DiT, encodes 17-frame windows and guides every one."""
    paths = animate.write_tiny_models(tmp_path / "models")
    write_tiny_mvdit7b(paths.dit, as_folder=True, config=FIVE_FRAMES, seed=4)
    guided = []
    real_call = sampler_7b.MotionGuidance7B.__call__

    def spy(self, sample, timestep, step, num_steps):
        guided.append((self.do_cfg, tuple(self.motion.shape), tuple(sample.shape)))
        return real_call(self, sample, timestep, step, num_steps)

    monkeypatch.setattr(sampler_7b.MotionGuidance7B, "__call__", spy)
    joints = procedural_motion("walk", frames=43, fps=20.0)  # 4k+1 grid -> 41 frames: windows at 0, 8, 16, 24
    reference = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    with caplog.at_level(logging.WARNING):
        frames, fps = animate.animate_frames(joints, reference, paths, steps=2, guidance=3.0, width=64, height=64,
                                             device="cpu", dtype="fp32")
    assert frames.shape == (41, 64, 64, 3) and fps == 20.0
    assert guided == [(True, (2, 120, 128), (1, 5, 16, 8, 8))] * (4 * 2)
    assert "guidance is disabled" not in caplog.text


def test_a_released_window_on_a_five_frame_model_turns_guidance_off_and_says_which_windows(tmp_path, caplog):
    model = load_dit(write_tiny_mvdit7b(tmp_path / "dit", as_folder=True, config=FIVE_FRAMES), dtype="fp32")
    vae = load_vae(write_tiny_vae(tmp_path / "vae.safetensors"), dtype=torch.float32)
    tokens = torch.randn(1, 13 * 24, 128, generator=torch.Generator().manual_seed(0))
    motion = MotionTokens([TokenWindow(0, 49, tokens, torch.zeros(1, 312, dtype=torch.long))],
                          JointSequence(np.zeros((49, 24, 3), np.float32), fps=20.0))
    with caplog.at_level(logging.WARNING):
        sample_7b(model, vae, np.zeros((64, 64, 3), np.uint8), motion, width=64, height=64, num_steps=1)
    assert "motion guidance is disabled" in caplog.text and "use 17-frame windows" in caplog.text


# --- latent formats and the typed latent --------------------------------------------------------------------------

WAN_LIKE = LatentFormat(name="wan2.1", channels=4, layout=CHANNELS_FIRST, mean=(0.5, -1.0, 0.0, 2.0),
                        std=(2.0, 0.5, 1.0, 4.0))


def test_latent_formats_normalise_in_their_layout():
    cog = LatentFormat(name="cogvideox", scaling_factor=0.7)
    raw = torch.randn(1, 3, 16, 2, 2)
    assert torch.equal(cog.normalize(raw), raw * 0.7) and torch.equal(cog.denormalize(raw), raw / 0.7)
    assert cog.latent_shape(49, 64, 96) == (1, 13, 16, 8, 12) and WAN_LIKE.latent_shape(9, 32, 32) == (1, 4, 3, 4, 4)
    wan_raw = torch.randn(1, 4, 3, 2, 2)
    z = WAN_LIKE.normalize(wan_raw)
    torch.testing.assert_close(z[:, 1], (wan_raw[:, 1] + 1.0) * 2.0)  # (raw - mean) / std on the channel axis
    torch.testing.assert_close(WAN_LIKE.denormalize(z), wan_raw)
    assert WAN_LIKE.frames(z, 1, 2).shape == (1, 4, 2, 2, 2) and WAN_LIKE.frames_first(z).shape == (1, 3, 4, 2, 2)
    with pytest.raises(ValueError, match="mean and std"):
        LatentFormat(name="x", mean=(0.0,) * 16)


class WanLikeVAE(VideoVAE):
    latent_format = WAN_LIKE
    source = "wan_vae.safetensors"
    dtype = torch.float32
    device = torch.device("cpu")

    def to(self, device):
        return self

    def encode(self, pixels, generator=None, sample=True):
        raise AssertionError("not used")

    def decode(self, latents):
        raise AssertionError("a 7B latent must not reach the Wan decoder")


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampled")
    model = load_dit(write_tiny_mvdit7b(root / "dit.safetensors"), dtype="fp32")
    vae = load_vae(write_tiny_vae(root / "vae.safetensors"), dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    from mtv_pack.mtv_core.windows import plan_windows

    plan = plan_windows(89)
    windows = [TokenWindow(s, 49, torch.randn(1, 312, 128, generator=gen), torch.zeros(1, 312, dtype=torch.long))
               for s in plan.starts]
    motion = MotionTokens(windows, JointSequence(np.zeros((89, 24, 3), np.float32), fps=24.0), plan)
    latent = sample_7b(model, vae, np.zeros((64, 64, 3), np.uint8), motion, width=64, height=64, num_steps=1,
                       keep_frames=True)
    return root, vae, latent


def test_mtv_latent_carries_the_layout_and_checks_the_decoder(sampled):
    _, vae, latent = sampled
    assert (latent.variant, latent.starts, latent.window, latent.num_frames) == ("7b", (0, 40), 49, 89)
    assert latent.latent_format == vae.latent_format and latent.latent_format.layout == FRAMES_FIRST
    assert latent.frames.shape == (89, 64, 64, 3) and latent.decoded_by == vae.identity()
    with pytest.raises(ValueError, match=r"MV-DiT-7B's cogvideox latents.*wan_vae\.safetensors.*wan2\.1 latents"):
        decode_video(WanLikeVAE(), latent)
    with pytest.raises(ValueError, match=r"the last window \(40 \+ 49 frames\) does not end at frame 90"):
        dataclasses.replace(latent, num_frames=90)


def test_frames_decoded_while_sampling_are_reused_only_by_the_same_vae(sampled, monkeypatch):
    root, vae, latent = sampled
    calls = []
    monkeypatch.setattr(type(vae), "decode", lambda self, z, _real=type(vae).decode: calls.append(1) or _real(self, z))
    assert decode_video(vae, latent) is latent.frames and calls == []
    other = load_vae(root / "vae.safetensors", dtype=torch.float32)  # the same weights, another loaded VAE
    frames = decode_video(other, latent)
    assert len(calls) == 2 and torch.equal(frames, latent.frames)


def test_the_sampler_refuses_a_vae_of_another_latent_format(tmp_path):
    model = load_dit(write_tiny_mvdit7b(tmp_path / "dit.safetensors"), dtype="fp32")
    motion = MotionTokens([TokenWindow(0, 49, torch.zeros(1, 312, 128), torch.zeros(1, 312, dtype=torch.long))],
                          JointSequence(np.zeros((49, 24, 3), np.float32), fps=20.0))
    with pytest.raises(ValueError, match=r"MV-DiT-7B works with cogvideox latents, but the VAE given "
                                         r"\(wan_vae\.safetensors\) makes wan2\.1 latents"):
        sample_7b(model, WanLikeVAE(), np.zeros((64, 64, 3), np.uint8), motion, width=64, height=64, num_steps=1)
