"""fp8 weight storage for the DiT: an ``operations`` namespace whose Linear keeps an fp8 weight.

``FP8Operations`` is passed as ``operations`` to a model constructor (in place of ``torch.nn``): its ``Linear``
stores ``weight`` in float8 (e4m3fn or e5m2) plus a float32 per-tensor ``scale_weight`` buffer, and on every
call upcasts ``weight * scale_weight`` (multiplied in float32) to the input's dtype and runs an ordinary ``F.linear``. Everything
else (convolutions, norms, biases) stays in the compute dtype. Memory per Linear weight is one byte per
element; the arithmetic is the compute dtype's.

The state-dict layout is the "scaled fp8" one of ComfyUI / kijai files (``<layer>.weight`` fp8 and
``<layer>.scale_weight`` float32 scalar, real weight = weight * scale_weight); a plain fp8 file has scale 1.
Do not call ``model.to(dtype)`` on such a model (it would upcast the stored weights); move it with
``model.to(device)``.

Optional fp8 *compute* (``set_fp8_compute(model, True)``; off by default, lossy): e4m3 layers then quantise their
input per tensor to e4m3 and multiply with ``torch.nn.functional.scaled_mm`` (torch's public scaled-matmul API,
fp8 tensor cores on Hopper / Ada), accumulating in fp32 and writing the compute dtype. Layers and inputs it does
not fit (e5m2 weights, fp32 inputs, widths not a multiple of 16, a device or build without the kernel) keep the
upcast path; a kernel error is warned about once and that layer upcasts from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_NAMES = {
    "fp8": torch.float8_e4m3fn, "fp8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2, "float8_e5m2": torch.float8_e5m2,
}


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


QUANTIZE_CHUNK = 1 << 20  # elements converted at a time: bounds the float32 buffer to 4 MiB


def quantize_fp8(weight: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn,
                 scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` -> (fp8 tensor, float32 scalar scale) with weight ~= fp8 * scale; the scale maps the largest
    magnitude onto the format's largest finite value (per tensor, as scaled-fp8 files do).

    Works in chunks of ``QUANTIZE_CHUNK`` elements (see ``quantize_fp8_chunks``).
    """
    flat = weight.detach().reshape(-1)

    def chunks() -> Iterator[torch.Tensor]:
        return (flat[i : i + QUANTIZE_CHUNK] for i in range(0, flat.numel(), QUANTIZE_CHUNK))

    return quantize_fp8_chunks(chunks, weight.shape, fp8_dtype, device=weight.device, scratch=scratch)


def quantize_fp8_chunks(chunks: Callable[[], Iterable[torch.Tensor]], shape: Sequence[int],
                        fp8_dtype: torch.dtype = torch.float8_e4m3fn, device: torch.device | str = "cpu",
                        scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_fp8`` of a weight of ``shape`` given as consecutive flat chunks: ``chunks()`` starts a new pass
    over them (two are made: the largest magnitude, then the codes), e.g. reading them from a file, so the weight
    is never whole in memory. Each chunk goes through one float32 buffer: ``scratch`` when it is large enough (a
    loader quantising layer after layer passes the same one), else a new one.
    """
    if not is_fp8(fp8_dtype):
        raise ValueError(f"{fp8_dtype} is not an fp8 dtype")
    finfo = torch.finfo(fp8_dtype)
    amax = torch.zeros((), dtype=torch.float32, device=device)
    for chunk in chunks():  # min and max rather than abs: no chunk-sized temporary
        if chunk.numel():
            low, high = torch.aminmax(chunk)
            amax = torch.maximum(amax, torch.maximum(-low, high).to(torch.float32))
    scale = torch.where(amax > 0, amax / finfo.max, torch.ones_like(amax)).to(torch.float32).reshape(())
    quantized = torch.empty(tuple(shape), dtype=fp8_dtype, device=device)
    out = quantized.view(-1)
    done = 0
    for chunk in chunks():
        count = chunk.numel()
        if scratch is None or scratch.numel() < count:
            scratch = torch.empty(count, dtype=torch.float32, device=device)
        buffer = scratch[:count]
        buffer.copy_(chunk).div_(scale).clamp_(finfo.min, finfo.max)
        out[done : done + count].copy_(buffer)
        done += count
    if done != out.numel():
        raise ValueError(f"quantize_fp8_chunks: the chunks hold {done} elements, the shape {tuple(shape)} "
                         f"{out.numel()}")
    return quantized, scale


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``weight * scale`` in ``dtype`` (computed in float32 when there is a scale)."""
    if scale is None:
        return weight.to(dtype)
    return (weight.to(torch.float32) * scale.to(weight.device, torch.float32)).to(dtype)


class FP8Linear(nn.Linear):
    """``nn.Linear`` whose weight may be stored in fp8 with a per-tensor ``scale_weight``.

    Any stored weight dtype works (a layer a scaled file kept in bf16 has scale 1); the forward pass computes
    in the input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight.requires_grad_(False)
        self.register_buffer("scale_weight", torch.ones((), dtype=torch.float32, device=device))
        self.fp8_compute = False  # multiply in fp8 (see the module docstring); set by ``set_fp8_compute``

    def reset_parameters(self) -> None:  # weights always come from a checkpoint
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp8_compute and self._fits_fp8_compute(x):
            try:
                return self._fp8_forward(x)
            except (RuntimeError, NotImplementedError, TypeError) as exc:  # no kernel for this device / build
                self.fp8_compute = False
                logger.warning("fp8 matmul unavailable (%s: %s); this layer upcasts its weight instead",
                               type(exc).__name__, exc)
        # the scale is applied in float32: rounded to bf16 it would bias the whole tensor by up to 0.4 %; the weight
        # goes to the input's device (a no-op unless a host such as ComfyUI parked this layer elsewhere)
        weight = dequantize(self.weight.to(x.device, non_blocking=True), self.scale_weight, x.dtype)
        bias = self.bias.to(x.device, x.dtype) if self.bias is not None else None
        return F.linear(x, weight, bias)

    def _fits_fp8_compute(self, x: torch.Tensor) -> bool:
        return (self.weight.dtype == torch.float8_e4m3fn and x.dtype in (torch.bfloat16, torch.float16)
                and self.in_features % 16 == 0 and self.out_features % 16 == 0)

    def _fp8_forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ (weight * scale).T + bias with both operands in e4m3 (x scaled per tensor), fp32 accumulation."""
        rows = x.reshape(-1, self.in_features)
        pad = -rows.shape[0] % 16  # the kernels want every dimension a multiple of 16
        if pad:
            rows = F.pad(rows, (0, 0, 0, pad))
        fp8_max = torch.finfo(torch.float8_e4m3fn).max
        amax = rows.abs().amax().float()
        scale_x = torch.where(amax > 0, amax / fp8_max, torch.ones_like(amax))
        x8 = (rows.float() / scale_x).clamp_(-fp8_max, fp8_max).to(torch.float8_e4m3fn)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        out = F.scaled_mm(x8, self.weight.t(), scale_x.reshape(1), F.ScalingType.TensorWise,
                          self.scale_weight.float().reshape(1), F.ScalingType.TensorWise, bias=bias,
                          output_dtype=x.dtype)
        if pad:
            out = out[: out.shape[0] - pad]
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight, self.scale_weight, dtype)

    def requantize(self, weight: torch.Tensor) -> None:
        """Store ``weight`` (any float dtype, the real values) in this layer's storage format, re-scaled."""
        if is_fp8(self.weight.dtype):
            quantized, scale = quantize_fp8(weight, self.weight.dtype)
            self.weight.data = quantized.to(self.weight.device)
            self.scale_weight = scale.to(self.scale_weight.device)
        else:
            self.weight.data = weight.to(self.weight.device, self.weight.dtype)
            self.scale_weight = torch.ones((), dtype=torch.float32, device=self.scale_weight.device)

    # ComfyUI's hooks for quantised weights (``comfy.model_patcher.get_key_weight``): a weight patch (LoRA) is
    # computed on ``convert_weight``'s real values and stored back with ``set_weight``. The scale stays, so
    # ComfyUI's backup of the stored values restores the weight exactly when the patch is removed.

    def convert_weight(self, weight: torch.Tensor, inplace: bool = False, **kwargs) -> torch.Tensor:
        """Stored values (as ComfyUI read them, e.g. cast to float32) -> the real weight values."""
        scale = self.scale_weight.to(weight.device, torch.float32)
        return weight.mul_(scale) if inplace and weight.is_floating_point() else weight.float() * scale

    def set_weight(self, weight: torch.Tensor, inplace_update: bool = False, seed: int | None = None,
                   return_weight: bool = False, **kwargs) -> torch.Tensor | None:
        """Real values -> this layer's storage with its current scale (saturating at the format's range)."""
        stored = weight.float() / self.scale_weight.to(weight.device, torch.float32)
        if is_fp8(self.weight.dtype):
            finfo = torch.finfo(self.weight.dtype)
            stored = stored.clamp_(finfo.min, finfo.max)
        stored = stored.to(self.weight.dtype)
        if return_weight:
            return stored
        if inplace_update:
            self.weight.data.copy_(stored.to(self.weight.device))
        else:
            self.weight = nn.Parameter(stored.to(self.weight.device), requires_grad=False)
        return None


def fp8_compute_available() -> bool:
    """Whether this torch has the public ``torch.nn.functional.scaled_mm`` (torch >= 2.10)."""
    return hasattr(F, "scaled_mm") and hasattr(F, "ScalingType")


def set_fp8_compute(model: nn.Module, enabled: bool = True) -> int:
    """Switch fp8 matmuls on (or off) for every ``FP8Linear`` of ``model``; returns how many layers hold e4m3
    weights (the ones that can use it). Without ``scaled_mm`` in this torch it stays off (0)."""
    if enabled and not fp8_compute_available():
        logger.warning("this torch has no torch.nn.functional.scaled_mm; fp8 weights stay storage-only")
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, FP8Linear):
            module.fp8_compute = enabled
            count += module.weight.dtype == torch.float8_e4m3fn
    return count


class FP8Operations:
    """The ``operations`` namespace for fp8 weight storage (Linear layers only; the rest is ``torch.nn``)."""

    Linear = FP8Linear
    Conv3d = nn.Conv3d
    LayerNorm = nn.LayerNorm
    RMSNorm = nn.RMSNorm


def fp8_operations(operations=None):
    """``FP8Operations`` with every layer but Linear taken from ``operations`` (e.g. ComfyUI's ``comfy.ops``, whose
    casting layers ComfyUI can load partially); ``FP8Operations`` itself for None or ``torch.nn``."""
    if operations is None or operations is nn:
        return FP8Operations
    return type("FP8Operations", (), {"Linear": FP8Linear, "Conv3d": operations.Conv3d,
                                       "LayerNorm": operations.LayerNorm, "RMSNorm": operations.RMSNorm})
