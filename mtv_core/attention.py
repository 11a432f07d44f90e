"""The one attention dispatch used by every attention layer in the pack.

``attention(q, k, v)`` takes tensors in the SDPA layout (batch, heads, tokens, head_dim) and runs one of:

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (any device, any dtype);
- ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (CUDA tensors only; raises otherwise);
- ``"auto"`` (default): xformers when it is installed and the tensors are on CUDA, else SDPA; if xformers
  rejects an input (dtype, head size, ...) the call falls back to SDPA once per reason, with a log line.

Loaders pick a backend for a whole model with ``set_default_backend`` or the ``attention_backend`` context
manager; layers may also pass ``backend=`` explicitly. xformers is imported lazily, once.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers")

_default_backend = "auto"
_xformers_ops = None  # module once imported, False if unavailable
_fallback_logged: set[str] = set()


def check_backend(name: str) -> str:
    """``name`` if it is one of ``BACKENDS``, else a ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def get_default_backend() -> str:
    return _default_backend


def set_default_backend(name: str) -> None:
    """Set the backend used when ``attention`` is called without ``backend=``."""
    global _default_backend
    _default_backend = check_backend(name)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Temporarily use backend ``name`` as the default."""
    global _default_backend
    previous = _default_backend
    _default_backend = check_backend(name)
    try:
        yield
    finally:
        _default_backend = previous


def _xformers():
    """``xformers.ops`` or None when xformers is not installed (imported once)."""
    global _xformers_ops
    if _xformers_ops is None:
        try:
            import xformers.ops as ops  # optional dependency
        except Exception as exc:  # ImportError, or a broken build raising at import time
            logger.debug("xformers unavailable: %s", exc)
            _xformers_ops = False
        else:
            _xformers_ops = ops
    return _xformers_ops or None


def xformers_available() -> bool:
    return _xformers() is not None


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False, scale=scale)


def _xformers_attention(ops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor:
    # xformers wants (batch, tokens, heads, head_dim)
    out = ops.memory_efficient_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=None, p=0.0, scale=scale
    )
    return out.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    backend: str | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Unmasked attention. q (B, H, Lq, D), k/v (B, H, Lk, D) -> (B, H, Lq, D); scale defaults to D**-0.5."""
    name = check_backend(backend or _default_backend)
    if name == "sdpa":
        return _sdpa(q, k, v, scale)
    if name == "xformers":
        ops = _xformers()
        if ops is None:
            raise RuntimeError("attention backend 'xformers' was requested but xformers is not installed")
        if q.device.type != "cuda":
            raise RuntimeError(
                f"attention backend 'xformers' needs CUDA tensors, got tensors on {q.device}; "
                "use 'sdpa' or 'auto' on this device"
            )
        return _xformers_attention(ops, q, k, v, scale)
    # auto
    if q.device.type == "cuda":
        ops = _xformers()
        if ops is not None:
            try:
                return _xformers_attention(ops, q, k, v, scale)
            except (NotImplementedError, ValueError) as exc:
                reason = f"{q.dtype} head_dim {q.shape[-1]}"
                if reason not in _fallback_logged:
                    _fallback_logged.add(reason)
                    logger.info("xformers cannot run this attention (%s): %s; using SDPA", reason, exc)
    return _sdpa(q, k, v, scale)
