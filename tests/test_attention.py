"""mtv_core.attention: backend selection, CPU fallback, xformers/SDPA agreement where both can run."""

import math

import pytest
import torch

from mtv_core import attention as attn_mod
from mtv_core.attention import attention, attention_backend, get_default_backend, set_default_backend


def _qkv(device="cpu", dtype=torch.float32, lq=37, lk=11):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, lq, 64, generator=g).to(device, dtype)
    k = torch.randn(2, 3, lk, 64, generator=g).to(device, dtype)
    v = torch.randn(2, 3, lk, 64, generator=g).to(device, dtype)
    return q, k, v


def _naive(q, k, v):
    weights = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v.float()


def test_sdpa_matches_naive_attention():
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), _naive(q, k, v), atol=1e-5, rtol=1e-5)


class _ExplodingOps:
    def memory_efficient_attention(self, *args, **kwargs):
        raise AssertionError("xformers must not run on CPU tensors")


def test_auto_uses_sdpa_on_cpu_even_with_xformers_installed(monkeypatch):
    monkeypatch.setattr(attn_mod, "_xformers_ops", _ExplodingOps())
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v, backend="auto"), attention(q, k, v, backend="sdpa"))


def test_auto_without_xformers(monkeypatch):
    monkeypatch.setattr(attn_mod, "_xformers_ops", False)
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v), _naive(q, k, v), atol=1e-5, rtol=1e-5)


def test_xformers_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(attn_mod, "_xformers_ops", _ExplodingOps())
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="xformers.*CUDA"):
        attention(q, k, v, backend="xformers")


def test_xformers_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(attn_mod, "_xformers_ops", False)
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="not installed"):
        attention(q, k, v, backend="xformers")


def test_unknown_backend():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="flash"):
        attention(q, k, v, backend="flash")
    with pytest.raises(ValueError):
        set_default_backend("flash")


def test_default_backend_and_context_manager(monkeypatch):
    monkeypatch.setattr(attn_mod, "_xformers_ops", False)
    assert get_default_backend() == "auto"
    q, k, v = _qkv()
    with attention_backend("xformers"):
        assert get_default_backend() == "xformers"
        with pytest.raises(RuntimeError):
            attention(q, k, v)
    assert get_default_backend() == "auto"
    set_default_backend("sdpa")
    try:
        assert get_default_backend() == "sdpa"
    finally:
        set_default_backend("auto")


class _NaiveXformers:
    """xformers' ``memory_efficient_attention`` contract: (batch, tokens, heads, head_dim) in and out."""

    def memory_efficient_attention(self, q, k, v, attn_bias=None, p=0.0, scale=None):
        assert attn_bias is None and p == 0.0 and scale is None
        return _naive(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def test_xformers_call_layout_matches_sdpa():
    """The (B, heads, L, D) <-> (B, L, heads, D) conversions around xformers, checked without CUDA."""
    q, k, v = _qkv()
    out = attn_mod._xformers_attention(_NaiveXformers(), q, k, v, None)
    assert out.shape == q.shape
    torch.testing.assert_close(out, attention(q, k, v, backend="sdpa"), atol=1e-5, rtol=1e-5)


def _cuda_xformers():
    return torch.cuda.is_available() and attn_mod.xformers_available()


@pytest.mark.skipif(not _cuda_xformers(), reason="needs CUDA and xformers")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_xformers_matches_sdpa_on_cuda(dtype):
    q, k, v = _qkv("cuda", dtype, lq=300, lk=312)
    out_x = attention(q, k, v, backend="xformers")
    out_s = attention(q, k, v, backend="sdpa")
    torch.testing.assert_close(out_x.float(), out_s.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(attention(q, k, v, backend="auto"), out_x)
