"""fp8 weight storage: per-tensor scaled quantisation and the upcasting Linear."""

import pytest
import torch

from mtv_pack.mtv_core.dit import fp8_ops
from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear, dequantize, quantize_fp8


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
