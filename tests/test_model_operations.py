"""The ``operations`` namespace of the core models (how ComfyUI's ``comfy.ops`` layers get in), without ComfyUI:
every layer with weights comes from it, every one of them runs through its own forward (also on the tokenizer's
fast paths), the default namespace (torch.nn) is unchanged, and weights stored in another dtype than the model
computes in work through casting layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtv_pack.mtv_core.dit.loading import load_mvdit7b
from mtv_pack.mtv_core.dit.rope import motion_rope_7b, vision_rope_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config, write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.tokenizer.encode import decode_to_mm, encode_joints
from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer
from mtv_pack.mtv_core.tokenizer.model import MotionVQVAE
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, random_state_dict, write_tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYERS = ("Linear", "Conv1d", "Conv2d", "LayerNorm", "GroupNorm")


def recording_namespace():
    """torch.nn's layers as subclasses that bring their own forward and record every call (as comfy.ops does)."""
    calls: list[torch.nn.Module] = []

    def recording(base):
        class Recording(base):
            def forward(self, *args, **kwargs):
                calls.append(self)
                return super().forward(*args, **kwargs)

        Recording.__name__ = f"Recording{base.__name__}"
        return Recording

    namespace = type("RecordingOps", (), {name: recording(getattr(torch.nn, name)) for name in LAYERS})
    return namespace, calls


def casting_namespace(storage: torch.dtype):
    """Layers that keep their weights in ``storage`` and cast them to the input's dtype per call (comfy.ops'
    manual casting, on the CPU)."""

    class Linear(torch.nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    class Conv2d(torch.nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    class LayerNorm(torch.nn.LayerNorm):
        def forward(self, x):
            return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)

    return type("CastingOps", (), {"Linear": Linear, "Conv2d": Conv2d, "LayerNorm": LayerNorm, "storage": storage})


def _weighted_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, tuple(getattr(torch.nn, n) for n in LAYERS))]


def _dit_inputs(model: MVDiT7B, frames: int = 2, size: int = 4):
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, frames, model.config.in_channels, size, size, generator=g)
    motion = torch.randn(2, frames * 24, model.config.motion_token_dim, generator=g)
    head_dim = model.config.attention_head_dim
    joint_mean = np.random.default_rng(1).normal(0, 200, (24, 3)).astype(np.float32)
    vision = vision_rope_7b(frames, size // 2, size // 2, head_dim)
    return latents, torch.tensor([999, 500]), motion, vision, motion_rope_7b(frames, joint_mean, head_dim)


def test_dit_builds_every_weighted_layer_from_the_namespace_and_calls_it():
    config = tiny_mvdit7b_config()
    state = random_state_dict_7b(config, seed=2)
    plain = MVDiT7B(config)
    plain.load_state_dict(state)
    assert {type(m) for m in _weighted_layers(plain)} <= {torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm}
    ops, calls = recording_namespace()
    recorded = MVDiT7B(config, operations=ops)
    recorded.load_state_dict(state)
    layers = _weighted_layers(recorded)
    assert layers and all(type(m).__name__.startswith("Recording") for m in layers)
    inputs = _dit_inputs(plain)
    with torch.no_grad():
        expected, got = plain(*inputs), recorded(*inputs)
    assert torch.equal(got, expected)
    unused = {recorded.patch_embed.text_proj}  # kept for the checkpoint's keys only, as upstream
    assert {id(m) for m in calls} == {id(m) for m in layers if m not in unused}


def test_dit_computes_in_compute_dtype_with_weights_stored_in_another():
    config = tiny_mvdit7b_config()
    state = random_state_dict_7b(config, seed=4)
    plain = MVDiT7B(config)
    plain.load_state_dict(state)
    stored = MVDiT7B(config, operations=casting_namespace(torch.float64))
    stored.load_state_dict(state)
    stored.to(torch.float64)
    stored.compute_dtype = torch.float32
    assert stored.dtype == torch.float32 and stored.proj_out.weight.dtype == torch.float64
    inputs = _dit_inputs(plain)
    with torch.no_grad():
        assert torch.equal(stored(*inputs), plain(*inputs))  # fp32 -> fp64 -> fp32 is exact


def test_dit_device_is_where_it_computes_once_set():
    model = MVDiT7B(tiny_mvdit7b_config())
    assert model.device == model.proj_out.weight.device == torch.device("cpu")
    model.device = "meta"  # what ModelPatcher does when it loads the model (weights may stay elsewhere)
    assert model.device == torch.device("meta") and model.proj_out.weight.device.type == "cpu"
    model.device = None
    assert model.device.type == "cpu"


def test_loader_passes_the_namespace_through(tmp_path):
    path = write_tiny_mvdit7b(tmp_path / "dit.safetensors", seed=1)
    ops, _ = recording_namespace()
    model = load_mvdit7b(path, dtype=torch.float32, operations=ops)
    assert type(model.proj_out).__name__ == "RecordingLinear"
    tokenizer = load_tokenizer(write_tiny_checkpoint(tmp_path / "tok.safetensors"), operations=ops)
    assert type(tokenizer.encoder.conv_in).__name__ == "RecordingConv2d"


def test_tokenizer_fast_paths_go_through_layers_that_bring_their_own_forward():
    state = random_state_dict(TINY_CONFIG, seed=3)
    plain = MotionVQVAE(TINY_CONFIG).eval()
    plain.load_state_dict(state)
    assert {type(m) for m in _weighted_layers(plain)} <= {torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.GroupNorm}
    ops, calls = recording_namespace()
    recorded = MotionVQVAE(TINY_CONFIG, operations=ops).eval()
    recorded.load_state_dict(state)
    layers = _weighted_layers(recorded)
    assert layers and all(type(m).__name__.startswith("Recording") for m in layers)
    joints = np.random.default_rng(0).normal(0, 300, (2, 33, 24, 3)).astype(np.float32) + [0, 200, 3000]
    expected = encode_joints(plain, joints, return_features=True)
    got = encode_joints(recorded, joints, return_features=True)
    assert torch.equal(got.indices, expected.indices)
    torch.testing.assert_close(got.features, expected.features, rtol=1e-4, atol=1e-4)
    recon_plain = decode_to_mm(plain, indices=expected.indices)
    recon = decode_to_mm(recorded, indices=got.indices)
    np.testing.assert_allclose(recon, recon_plain, rtol=1e-4, atol=1e-2)
    # every layer ran as a layer, the joint Conv1d and the merged 3x3 convs included
    assert {id(m) for m in calls} == {id(m) for m in layers}


def test_tokenizer_default_namespace_is_unchanged_torch():
    model = MotionVQVAE(TINY_CONFIG)
    assert type(model.encoder.conv_in) is torch.nn.Conv2d
    assert type(model.encoder.downsample1.joint_downsample) is torch.nn.Conv1d
    assert type(model.decoder.resnet1[0].block[0]) is torch.nn.GroupNorm
    model.device = "meta"
    assert model.device == torch.device("meta") and model.encoder.conv_in.weight.device.type == "cpu"
