"""Fused q/k/v projections: same outputs and state-dict keys, one storage, fallback whenever the fusion is undone."""

import copy

import numpy as np
import pytest
import torch
from conftest import reference_dir
from torch import nn

from mtv_pack.mtv_core.dit.fused_linear import fuse_linears, fused_projection
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _linears(bias=True, dtype=torch.float32):
    torch.manual_seed(0)
    return [nn.Linear(16, n, bias=bias).to(dtype) for n in (8, 8, 12)]


@pytest.mark.parametrize("bias", [True, False])
def test_fused_projection_equals_separate_layers_and_keeps_the_state(bias):
    layers = _linears(bias)
    x = torch.randn(3, 5, 16)
    expected = [layer(x) for layer in layers]
    before = [copy.deepcopy(layer.state_dict()) for layer in layers]
    assert fuse_linears(layers) and fuse_linears(layers)  # idempotent
    base = layers[0].weight.untyped_storage().data_ptr()
    assert all(layer.weight.untyped_storage().data_ptr() == base for layer in layers)
    for layer, state in zip(layers, before):
        after = layer.state_dict()
        assert after.keys() == state.keys()
        for key in state:
            assert torch.equal(after[key], state[key])
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            out = fused_projection(layers, x)
    finally:
        handle.remove()
    assert calls == []  # one F.linear, no layer called
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_load_state_dict_after_fusion_reaches_the_fused_weight():
    layers = _linears()
    fuse_linears(layers)
    new = _linears()
    for layer in new:
        layer.weight.data.normal_()
    for layer, source in zip(layers, new):
        layer.load_state_dict(source.state_dict())
    x = torch.randn(4, 16)
    with torch.no_grad():
        for got, source in zip(fused_projection(layers, x), new):
            torch.testing.assert_close(got, source(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("undo", ["to_dtype", "assign", "replace_parameter"])
def test_undone_fusion_falls_back_to_the_layers(undo):
    layers = _linears()
    fuse_linears(layers)
    if undo == "to_dtype":
        for layer in layers:
            layer.double()
    elif undo == "assign":
        layers[1].load_state_dict({k: v.clone() + 1 for k, v in layers[1].state_dict().items()}, assign=True)
    else:
        layers[2].weight = nn.Parameter(layers[2].weight.detach().clone() * 2)
    x = torch.randn(2, 16, dtype=layers[0].weight.dtype)
    with torch.no_grad():
        for got, layer in zip(fused_projection(layers, x), layers):
            assert torch.equal(got, layer(x))


def test_layers_with_their_own_forward_are_not_fused():
    class CastingLinear(nn.Linear):  # as comfy.ops: moves/casts its weight per call
        def forward(self, x):
            return super().forward(x)

    layers = [CastingLinear(16, 8) for _ in range(3)]
    assert not fuse_linears(layers)
    assert not fuse_linears(_linears()[:1])
    assert not fuse_linears([nn.Linear(16, 8), nn.Linear(16, 8, bias=False)])


def _tiny_7b():
    config = tiny_mvdit7b_config()
    model = MVDiT7B(config)
    model.load_state_dict(random_state_dict_7b(config, seed=5))
    return model.eval()


def test_mvdit7b_fused_qkv_same_denoising_and_keys():
    model = _tiny_7b()
    keys = list(model.state_dict())
    g = torch.Generator().manual_seed(0)
    latents, ref = torch.randn(1, 13, 16, 4, 4, generator=g), torch.randn(1, 13, 16, 4, 4, generator=g)
    motion = torch.randn(1, 13 * 24, 128, generator=g)
    mean = np.random.default_rng(0).normal(0, 200, (24, 3)).astype(np.float32)

    def run():
        with torch.no_grad():
            return denoise_7b(model, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=mean,
                              generator=torch.Generator().manual_seed(0))

    before = run()
    assert model.fuse_qkv() == len(model.transformer_blocks)
    assert list(model.state_dict()) == keys
    after = run()
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    # the motion attention (its own keys/values) is never fused
    attn0 = model.transformer_blocks[0].attn0
    assert attn0.to_q.weight.untyped_storage().data_ptr() != attn0.to_k.weight.untyped_storage().data_ptr()


def test_mvdit17b_fused_qkv_same_output_and_keys():
    config = tiny_mvdit17b_config()
    model = MVDiT17B(config)
    model.load_state_dict(random_state_dict_17b(config, seed=3))
    model.eval()
    g = torch.Generator().manual_seed(0)
    inputs = dict(
        latents=torch.randn(1, 16, 2, 4, 6, generator=g), y=torch.randn(1, 20, 2, 4, 6, generator=g),
        context=torch.randn(1, 5, 64, generator=g), clip_fea=torch.randn(1, 257, 1280, generator=g),
        motion_tokens=torch.randn(1, 48, 192, generator=g),
        motion_rope=motion_rope_17b(2, np.load(reference_dir() / "motion" / "mean.npy")),
    )
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(timestep=300.0, **inputs)
        assert model.fuse_qkv() == config.num_layers
        after = model(timestep=300.0, **inputs)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_hooked_layers_are_called():
    layers = _linears()
    fuse_linears(layers)
    seen = []
    layers[1].register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        fused_projection(layers, torch.randn(2, 16))
    assert seen == [(2, 8)]


def _fused_in_one_storage(layers) -> bool:
    from mtv_pack.mtv_core.dit.fused_linear import _joint

    return _joint([layer.weight for layer in layers]) is not None and (
        layers[0].bias is None or _joint([layer.bias for layer in layers]) is not None)


@pytest.mark.parametrize("file_dtype", [torch.float32, torch.bfloat16])
def test_loaders_read_qkv_straight_into_fused_weights(tmp_path, monkeypatch, file_dtype):
    """The loaders allocate each block's fused q/k/v once and read the file into it: fusing after loading (a
    second copy of those weights) never runs, the values are the file's, and the blocks run as one GEMM."""
    from mtv_pack.mtv_core.dit import fused_linear
    from mtv_pack.mtv_core.dit.loading import load_dit
    from mtv_pack.mtv_core.dit.tiny import save_mvdit7b
    from mtv_pack.mtv_core.dit.tiny_17b import save_mvdit17b

    monkeypatch.setattr(fused_linear.torch, "cat", lambda *a, **k: pytest.fail("fused by copying"))
    state7 = random_state_dict_7b(tiny_mvdit7b_config(), seed=1)
    path7 = save_mvdit7b(state7, tmp_path / "m7.safetensors", tiny_mvdit7b_config(), dtype=file_dtype)
    model7 = load_dit(path7, dtype=torch.bfloat16)
    state17 = random_state_dict_17b(tiny_mvdit17b_config(), seed=1)
    path17 = save_mvdit17b(state17, tmp_path / "m17.safetensors", dtype=file_dtype)
    model17 = load_dit(path17, dtype=torch.bfloat16, variant="17b")
    for model, state in ((model7, state7), (model17, state17)):
        assert model.qkv_groups() and all(_fused_in_one_storage(group) for group in model.qkv_groups())
        for key, tensor in model.state_dict().items():
            torch.testing.assert_close(tensor, state[key].to(file_dtype).to(torch.bfloat16), atol=0, rtol=0,
                                       msg=key)
    assert model7.fuse_qkv() == len(model7.transformer_blocks)  # already fused: nothing to do


def test_fp8_storage_and_meta_loading_get_no_fused_targets(tmp_path):
    from mtv_pack.mtv_core.dit.fused_linear import fused_targets
    from mtv_pack.mtv_core.dit.loading_17b import load_mvdit17b
    from mtv_pack.mtv_core.dit.tiny_17b import save_mvdit17b
    from mtv_pack.mtv_core.meta_init import empty_weights

    with empty_weights():
        model = MVDiT17B(tiny_mvdit17b_config())
    assert fused_targets(model, model.qkv_groups(), torch.bfloat16, "meta") == {}
    assert len(fused_targets(model, model.qkv_groups(), torch.bfloat16, "cpu")) == 6 * len(model.blocks)
    path = save_mvdit17b(random_state_dict_17b(tiny_mvdit17b_config(), seed=2), tmp_path / "m.safetensors",
                         dtype=torch.bfloat16)
    fp8 = load_mvdit17b(path, dtype=torch.bfloat16, weight_dtype="fp8_e4m3fn")
    assert fp8.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    assert not _fused_in_one_storage((fp8.blocks[0].self_attn.q, fp8.blocks[0].self_attn.k, fp8.blocks[0].self_attn.v))
