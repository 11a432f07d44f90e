"""fp8 weight storage: per-tensor scaled quantisation and the upcasting Linear."""

import pytest
import torch

from mtv_pack.mtv_core.dit import fp8_ops
from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear, dequantize, quantize_fp8, quantize_fp8_chunks


@pytest.mark.parametrize("fp8_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_quantize_maps_the_largest_magnitude_to_the_format_maximum(monkeypatch, fp8_dtype):
    monkeypatch.setattr(fp8_ops, "QUANTIZE_CHUNK", 7)  # several chunks, the largest value in the last one
    weight = torch.linspace(-1, 1, 60).reshape(6, 10).to(torch.bfloat16)
    weight[5, 9] = 3.0
    quantized, scale = quantize_fp8(weight, fp8_dtype)
    assert quantized.dtype == fp8_dtype and quantized.shape == weight.shape and scale.shape == ()
    assert scale.item() == pytest.approx(3.0 / torch.finfo(fp8_dtype).max)
    assert quantized[5, 9].float().item() == torch.finfo(fp8_dtype).max
    reference = (weight.float() / scale).to(fp8_dtype)  # the same rounding, done in one piece
    assert torch.equal(quantized.view(torch.uint8), reference.view(torch.uint8))
    mantissa_bits = 3 if fp8_dtype == torch.float8_e4m3fn else 2
    error = (dequantize(quantized, scale, torch.float32) - weight.float()).abs()
    assert (error <= weight.float().abs() * 2.0 ** -(mantissa_bits + 1) + scale * 2.0**-16 + 1e-12).all()


def test_zero_weight_gets_scale_one():
    quantized, scale = quantize_fp8(torch.zeros(3, 4))
    assert scale.item() == 1.0 and not quantized.float().any()


def test_linear_computes_with_the_dequantised_weight_in_the_input_dtype():
    torch.manual_seed(0)
    reference = torch.nn.Linear(16, 8)
    layer = FP8Linear(16, 8)
    layer.weight.data, layer.scale_weight = quantize_fp8(reference.weight.detach())
    layer.bias.data = reference.bias.detach().clone()
    x = torch.randn(2, 5, 16)
    expected = torch.nn.functional.linear(x, dequantize(layer.weight, layer.scale_weight, torch.float32), reference.bias)
    torch.testing.assert_close(layer(x), expected, atol=1e-6, rtol=0)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16
    # requantize keeps the storage format and re-scales
    layer.requantize(reference.weight.detach() * 10)
    assert layer.weight.dtype == torch.float8_e4m3fn
    assert layer.scale_weight.item() == pytest.approx(10 * reference.weight.abs().max().item() / 448, rel=1e-6)


# -- optional fp8 compute (torch.nn.functional.scaled_mm; runs on CPU too in torch >= 2.10) ----------------------

def _fp8_layer(in_features=64, out_features=48, fp8_dtype=torch.float8_e4m3fn, seed=0):
    torch.manual_seed(seed)
    dense = torch.nn.Linear(in_features, out_features)
    layer = FP8Linear(in_features, out_features, dtype=fp8_dtype)
    weight, scale = quantize_fp8(dense.weight, fp8_dtype)
    layer.weight.data, layer.scale_weight = weight, scale
    layer.bias.data = dense.bias.detach().to(torch.bfloat16)
    return layer


@pytest.mark.skipif(not hasattr(torch.nn.functional, "scaled_mm"), reason="torch without F.scaled_mm")
def test_fp8_compute_is_close_to_the_upcast_path_and_off_by_default():
    layer = _fp8_layer()
    model = torch.nn.Sequential(layer)
    x = torch.randn(3, 7, 64).to(torch.bfloat16)  # 21 rows: padded to 32 inside
    assert not layer.fp8_compute
    upcast = layer(x)
    assert fp8_ops.set_fp8_compute(model, True) == 1
    fp8 = layer(x)
    assert fp8.shape == upcast.shape and fp8.dtype == torch.bfloat16
    rel = ((fp8.float() - upcast.float()).norm() / upcast.float().norm()).item()
    assert 0 < rel < 0.08  # e4m3 activations: a few percent at most
    fp8_ops.set_fp8_compute(model, False)
    assert torch.equal(layer(x), upcast)


def test_fp8_compute_keeps_the_upcast_path_where_it_does_not_fit():
    e5m2 = _fp8_layer(fp8_dtype=torch.float8_e5m2)
    odd = _fp8_layer(in_features=40)
    for layer in (e5m2, odd):
        x = torch.randn(4, layer.in_features).to(torch.bfloat16)
        expected = layer(x)
        layer.fp8_compute = True
        assert torch.equal(layer(x), expected)
    fp32_in = _fp8_layer()
    fp32_in.fp8_compute = True
    x = torch.randn(4, 64)
    assert fp32_in(x).dtype == torch.float32


def test_fp8_kernel_error_warns_once_and_upcasts(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("scaled_mm needs a GPU with compute capability >= 8.9")

    monkeypatch.setattr(fp8_ops.F, "scaled_mm", broken, raising=False)
    monkeypatch.setattr(fp8_ops.F, "ScalingType", type("S", (), {"TensorWise": 0}), raising=False)
    layer = _fp8_layer()
    x = torch.randn(4, 64).to(torch.bfloat16)
    expected = layer(x)
    layer.fp8_compute = True
    with caplog.at_level("WARNING", logger=fp8_ops.__name__):
        outs = [layer(x) for _ in range(2)]
    assert all(torch.equal(o, expected) for o in outs)
    assert caplog.text.count("fp8 matmul unavailable") == 1 and not layer.fp8_compute


def test_comfyui_weight_hooks_patch_the_real_values_and_keep_the_scale():
    """ComfyUI patches a weight on ``convert_weight``'s values and stores it with ``set_weight``; with the scale kept,
    its backup of the stored fp8 values restores the layer exactly."""
    torch.manual_seed(1)
    layer = FP8Linear(16, 8)
    layer.weight.data, layer.scale_weight = quantize_fp8(torch.randn(8, 16) * 0.1)
    stored, scale = layer.weight.detach().clone(), layer.scale_weight.clone()
    real = layer.convert_weight(layer.weight.to(torch.float32), inplace=True)
    torch.testing.assert_close(real, layer.dequantized_weight())
    delta = torch.randn(8, 16) * 0.01
    layer.set_weight(real + delta, inplace_update=False, seed=3)
    assert layer.weight.dtype == torch.float8_e4m3fn and torch.equal(layer.scale_weight, scale)
    assert (layer.dequantized_weight() - (real + delta)).abs().max() <= 2.0**-4 * (real + delta).abs().max()
    assert layer.set_weight(real, return_weight=True).dtype == torch.float8_e4m3fn
    layer.weight = torch.nn.Parameter(stored, requires_grad=False)  # ComfyUI's unpatch: the stored values back
    torch.testing.assert_close(layer.dequantized_weight(), real)


def test_negative_largest_magnitude_and_a_reused_scratch_give_the_same_codes(monkeypatch):
    monkeypatch.setattr(fp8_ops, "QUANTIZE_CHUNK", 16)
    weight = torch.linspace(-1, 1, 50).reshape(5, 10).to(torch.bfloat16)
    weight[2, 3] = -5.0  # the largest magnitude is a minimum
    scratch = torch.full((16,), float("nan"))
    quantized, scale = quantize_fp8(weight, scratch=scratch)
    fresh, fresh_scale = quantize_fp8(weight)
    assert scale.item() == pytest.approx(5.0 / torch.finfo(torch.float8_e4m3fn).max)
    assert fresh_scale.item() == scale.item()
    assert torch.equal(quantized.view(torch.uint8), fresh.view(torch.uint8))
    reference = (weight.float() / scale).to(torch.float8_e4m3fn)
    assert torch.equal(quantized.view(torch.uint8), reference.view(torch.uint8))


def test_quantising_from_uneven_chunks_gives_the_same_codes_and_checks_their_count():
    weight = torch.randn(9, 13, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    flat = weight.reshape(-1)
    cuts = [0, 5, 50, 51, 117]

    def pieces():
        return (flat[a:b] for a, b in zip(cuts, cuts[1:]))

    codes, scale = quantize_fp8_chunks(pieces, weight.shape)
    whole, whole_scale = quantize_fp8(weight)
    assert scale.item() == whole_scale.item()
    assert torch.equal(codes.view(torch.uint8), whole.view(torch.uint8))
    with pytest.raises(ValueError, match="116 elements"):
        quantize_fp8_chunks(lambda: iter([flat[:116]]), weight.shape)
