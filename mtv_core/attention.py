"""The one attention dispatch used by every attention layer in the pack.

``attention(q, k, v)`` takes tensors in the SDPA layout (batch, heads, tokens, head_dim) and runs one of:

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (any device, any dtype);
- ``"xformers"``: ``xformers.ops.memory_efficient_attention`` on CUDA tensors;
- ``"auto"`` (default): xformers when it is installed and the tensors are on CUDA, else SDPA.

xformers is only ever a speed-up: wherever it cannot run, the call uses SDPA. Each reason is logged once as a
warning (xformers installed but broken, ``"xformers"`` asked for without xformers or off CUDA, any error
raised by the xformers call itself, e.g. no kernel for this GPU, dtype or head size), except the ordinary
case of ``"auto"`` without xformers installed. An input xformers failed on is not given to it again.
CUDA out-of-memory errors are not caught.

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
_xformers_problem = ""  # why xformers is unavailable
_warned: set[str] = set()
_xformers_failed: set[tuple] = set()  # (device type, dtype, head_dim) xformers raised on


def _warn_once(key: str, message: str, *args: object) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


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
    """``xformers.ops``, or None when xformers is not installed or cannot be imported (tried once)."""
    global _xformers_ops, _xformers_problem
    if _xformers_ops is None:
        try:
            import xformers.ops as ops  # optional dependency
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "xformers":  # xformers is there, one of its dependencies is not
                _xformers_problem = f"is installed but cannot be imported ({exc})"
                _warn_once("import", "xformers %s; attention uses PyTorch SDPA", _xformers_problem)
            else:
                _xformers_problem = "is not installed"
                logger.debug("xformers is not installed; attention uses PyTorch SDPA")
            _xformers_ops = False
        except Exception as exc:  # a broken build raising at import time (missing CUDA library, ABI mismatch, ...)
            _xformers_problem = f"is installed but cannot be imported ({type(exc).__name__}: {exc})"
            _warn_once("import", "xformers %s; attention uses PyTorch SDPA", _xformers_problem)
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


def _on_cuda(q: torch.Tensor) -> bool:
    return q.device.type == "cuda"


def check_available(name: str) -> None:
    """Warn now (e.g. while loading a model), not at the first step, when backend ``name`` asks for xformers
    and xformers cannot be imported. (Whether the tensors will be on CUDA is only known when attention runs.)"""
    if check_backend(name) == "xformers" and _xformers() is None:
        _warn_once("requested", "attention backend 'xformers' was requested but xformers %s; using PyTorch SDPA",
                   _xformers_problem)


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
        check_available(name)
        if not _on_cuda(q):
            _warn_once(f"device {q.device.type}", "attention backend 'xformers' needs CUDA tensors, got tensors on "
                       "%s; using PyTorch SDPA", q.device.type)
    if _on_cuda(q):
        ops = _xformers()
        key = (q.device.type, q.dtype, q.shape[-1])
        if ops is not None and key not in _xformers_failed:
            try:
                return _xformers_attention(ops, q, k, v, scale)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # no kernel for this GPU / dtype / head size, a broken build, ...
                _xformers_failed.add(key)
                _warn_once(f"call {key}", "xformers failed on %s head_dim %d (%s: %s); using PyTorch SDPA for it",
                           q.dtype, q.shape[-1], type(exc).__name__, exc)
    return _sdpa(q, k, v, scale)
