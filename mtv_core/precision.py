"""Numeric precision choices: weight dtypes by name, and exact fp32 matrix products on CUDA.

``DTYPE_CHOICES`` are the dtype options every loader and command offers; ``resolve_dtype`` turns one (or a
torch dtype) into a torch dtype for a device. ``exact_fp32_matmul`` turns TF32 off for a block on CUDA and
restores the previous setting, whichever of torch's two TF32 APIs the process uses.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
    "fp32": torch.float32, "float32": torch.float32,
}


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str | None = None) -> torch.dtype:
    """A torch dtype or its name (``bf16``, ``float16``, ...); ``auto``: bf16 on CUDA (fp16 where the GPU has
    no bf16), else fp32."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use bfloat16, float16 or float32")
        return dtype
    if dtype == "auto":
        if device is not None and torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


@contextlib.contextmanager
def exact_fp32_matmul(device: torch.device | str) -> Iterator[None]:
    """Full fp32 (IEEE) matrix products on a CUDA ``device`` inside the block; no-op on other devices.

    torch has a legacy TF32 switch (``torch.backends.cuda.matmul.allow_tf32`` /
    ``torch.set_float32_matmul_precision``) and, since 2.9, ``torch.backends.cuda.matmul.fp32_precision``.
    Once a process has set the new one, reading the legacy one raises, and so does a CUDA matmul while the
    two disagree. Both are set consistently here and both are put back as they were afterwards, also when
    the block raises.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision")
    saved_new = matmul.fp32_precision if new_api else None
    try:
        saved_legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # the new API was used and disagrees with the legacy state: leave the legacy state alone
        saved_legacy = None
    if saved_legacy is not None:
        torch.set_float32_matmul_precision("highest")
    if new_api:
        matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        if saved_legacy is not None:
            torch.set_float32_matmul_precision(saved_legacy)
        if new_api:
            matmul.fp32_precision = saved_new
