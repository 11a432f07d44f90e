"""The one attention dispatch used by every attention layer in the pack.

``attention(q, k, v)`` takes tensors in the SDPA layout (batch, heads, tokens, head_dim) and runs one of:

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (any device, any dtype);
- ``"xformers"``: ``xformers.ops.memory_efficient_attention`` on CUDA tensors;
- ``"sage"``: ``sageattention.sageattn`` (SageAttention: INT8 Q.K^T, FP16/FP8 P.V; *lossy*, a few 1e-3 off
  SDPA) on CUDA fp16/bf16 tensors; only when asked for, never by ``"auto"``;
- ``"auto"`` (default): xformers when it is installed and the tensors are on CUDA, else SDPA.

xformers and SageAttention are only ever speed-ups: wherever they cannot run, the call uses SDPA. Each reason is logged once as a
warning (xformers installed but broken, ``"xformers"`` asked for without xformers or off CUDA, any error
raised by the xformers call itself, e.g. no kernel for this GPU, dtype or head size; the same for
``"sage"``, which also needs fp16/bf16), except the ordinary case of ``"auto"`` without xformers installed. An
input a kernel failed on is not given to it again.
CUDA out-of-memory errors are not caught.

Loaders pick a backend for a whole model with ``set_default_backend`` or the ``attention_backend`` context
manager; layers may also pass ``backend=`` explicitly. xformers and sageattention are imported lazily, once.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers", "sage")

_default_backend = "auto"
_xformers_ops = None  # module once imported, False if unavailable
_xformers_problem = ""  # why xformers is unavailable
_warned: set[str] = set()
_xformers_failed: set[tuple] = set()  # (device type, dtype, head_dim) xformers raised on
_sage_fn = None  # sageattention.sageattn once imported, False if unavailable
_sage_problem = ""  # why SageAttention is unavailable
_sage_failed: set[tuple] = set()  # (device type, dtype, head_dim) sageattn raised on


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


def _sage():
    """``sageattention.sageattn``, or None when SageAttention is not installed or cannot be imported (tried once)."""
    global _sage_fn, _sage_problem
    if _sage_fn is None:
        try:
            from sageattention import sageattn  # optional dependency
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "sageattention":
                _sage_problem = f"is installed but cannot be imported ({exc})"
            else:
                _sage_problem = "is not installed"
            _sage_fn = False
        except Exception as exc:  # a broken build (missing CUDA library, ABI mismatch, no kernel for this GPU, ...)
            _sage_problem = f"is installed but cannot be imported ({type(exc).__name__}: {exc})"
            _sage_fn = False
        else:
            _sage_fn = sageattn
    return _sage_fn or None


def sage_available() -> bool:
    return _sage() is not None


def _sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> torch.Tensor | None:
    """SageAttention on CUDA fp16/bf16 (B, H, L, D) tensors, or None (warned once) where it cannot run."""
    check_available("sage")
    fn = _sage()
    if fn is None:
        return None
    if not _on_cuda(q):
        _warn_once(f"sage device {q.device.type}", "attention backend 'sage' needs CUDA tensors, got tensors on %s; "
                   "using PyTorch SDPA", q.device.type)
        return None
    if q.dtype not in (torch.float16, torch.bfloat16):
        _warn_once(f"sage dtype {q.dtype}", "attention backend 'sage' needs fp16/bf16 tensors, got %s; using PyTorch "
                   "SDPA", q.dtype)
        return None
    key = (q.device.type, q.dtype, q.shape[-1])
    if key in _sage_failed:
        return None
    try:
        return fn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=scale)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:  # no kernel for this GPU / head size, a broken build, ...
        _sage_failed.add(key)
        _warn_once(f"sage call {key}", "SageAttention failed on %s head_dim %d (%s: %s); using PyTorch SDPA for it",
                   q.dtype, q.shape[-1], type(exc).__name__, exc)
        return None


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
    """Warn now (e.g. while loading a model), not at the first step, when backend ``name`` asks for xformers or
    SageAttention and it cannot be imported. (Whether the tensors will be on CUDA is only known when attention runs.)"""
    name = check_backend(name)
    if name == "xformers" and _xformers() is None:
        _warn_once("requested", "attention backend 'xformers' was requested but xformers %s; using PyTorch SDPA",
                   _xformers_problem)
    if name == "sage" and _sage() is None:
        _warn_once("sage requested", "attention backend 'sage' was requested but sageattention %s; using PyTorch "
                   "SDPA", _sage_problem)


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
    if name == "sage":
        out = _sage_attention(q, k, v, scale)
        return _sdpa(q, k, v, scale) if out is None else out
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
