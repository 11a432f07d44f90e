"""mtv_core.attention: backend selection, CPU fallback, xformers/SDPA agreement where both can run."""

import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from mtv_pack.mtv_core import attention as attn_mod
from mtv_pack.mtv_core.attention import attention, attention_backend, get_default_backend, set_default_backend


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


@pytest.fixture
def fresh(monkeypatch):
    """The dispatch's module state as after a fresh import (nothing imported, warned or failed yet)."""
    monkeypatch.setattr(attn_mod, "_xformers_ops", None)
    monkeypatch.setattr(attn_mod, "_xformers_problem", "")
    monkeypatch.setattr(attn_mod, "_warned", set())
    monkeypatch.setattr(attn_mod, "_xformers_failed", set())
    return monkeypatch


def test_xformers_on_cpu_warns_once_and_uses_sdpa(fresh, caplog):
    fresh.setattr(attn_mod, "_xformers_ops", _ExplodingOps())
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        out = [attention(q, k, v, backend="xformers") for _ in range(2)]
    torch.testing.assert_close(out[0], attention(q, k, v, backend="sdpa"))
    assert caplog.text.count("needs CUDA") == 1


def test_xformers_missing_when_requested_is_a_warning(fresh, caplog):
    fresh.setattr(attn_mod, "_xformers_ops", False)
    fresh.setattr(attn_mod, "_xformers_problem", "is not installed")
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        out = attention(q, k, v, backend="xformers")
        attention(q, k, v, backend="xformers")
    torch.testing.assert_close(out, _naive(q, k, v), atol=1e-5, rtol=1e-5)
    assert caplog.text.count("'xformers' was requested but xformers is not installed") == 1


def _fake_xformers(root, ops_source: str):
    """A package ``xformers`` with an ``ops`` module of ``ops_source`` under ``root``."""
    package = root / "xformers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "ops.py").write_text(ops_source)
    return root


@pytest.mark.parametrize("ops_source, expected", [
    ("raise OSError('libcudart.so.13: cannot open shared object file')", "OSError: libcudart.so.13"),
    ("import triton_missing_dependency_xyz", "triton_missing_dependency_xyz"),
], ids=["broken_build", "missing_dependency"])
def test_installed_but_unimportable_xformers_is_a_warning(fresh, tmp_path, caplog, ops_source, expected):
    fresh.syspath_prepend(str(_fake_xformers(tmp_path, ops_source)))
    for name in ("xformers", "xformers.ops"):
        fresh.delitem(sys.modules, name, raising=False)
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        out = attention(q, k, v)
        available = attn_mod.xformers_available()
    torch.testing.assert_close(out, _naive(q, k, v), atol=1e-5, rtol=1e-5)
    assert not available
    assert caplog.text.count("xformers is installed but cannot be imported") == 1 and expected in caplog.text


def test_auto_without_xformers_installed_is_quiet(fresh, caplog):
    fresh.setitem(sys.modules, "xformers", None)  # import xformers -> ModuleNotFoundError for 'xformers'
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        attention(q, k, v)
    assert caplog.text == "" and attn_mod._xformers_problem == "is not installed"


class _FailingOps:
    """xformers whose kernel call raises, as on a GPU it has no kernel for."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def memory_efficient_attention(self, *args, **kwargs):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("error", [
    RuntimeError("CUDA error: no kernel image is available for execution on the device"),
    TypeError("unexpected keyword argument 'scale'"),
    NotImplementedError("No operator found for `memory_efficient_attention_forward`"),
], ids=["no_kernel", "api_change", "unsupported_input"])
@pytest.mark.parametrize("backend", ["auto", "xformers"])
def test_xformers_error_at_run_time_falls_back_with_one_warning(fresh, caplog, error, backend):
    ops = _FailingOps(error)
    fresh.setattr(attn_mod, "_xformers_ops", ops)
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        outs = [attention(q, k, v, backend=backend) for _ in range(3)]
    for out in outs:
        torch.testing.assert_close(out, _naive(q, k, v), atol=1e-5, rtol=1e-5)
    assert ops.calls == 1  # an input xformers failed on is not given to it again
    assert caplog.text.count("xformers failed") == 1 and str(error) in caplog.text


def test_cuda_out_of_memory_is_not_swallowed(fresh):
    fresh.setattr(attn_mod, "_xformers_ops", _FailingOps(torch.cuda.OutOfMemoryError("CUDA out of memory")))
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    q, k, v = _qkv()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        attention(q, k, v)


def test_loader_check_warns_before_sampling(fresh, caplog):
    fresh.setattr(attn_mod, "_xformers_ops", False)
    fresh.setattr(attn_mod, "_xformers_problem", "is not installed")
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        attn_mod.check_available("auto")
        assert caplog.text == ""
        attn_mod.check_available("xformers")
    assert "was requested but xformers is not installed" in caplog.text


def test_unknown_backend():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="flash"):
        attention(q, k, v, backend="flash")
    with pytest.raises(ValueError):
        set_default_backend("flash")


def test_default_backend_and_context_manager(fresh):
    ops = _FailingOps(RuntimeError("no kernel"))
    fresh.setattr(attn_mod, "_xformers_ops", ops)
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    assert get_default_backend() == "auto"
    q, k, v = _qkv()
    with attention_backend("sdpa"):
        assert get_default_backend() == "sdpa"
        attention(q, k, v)
        assert ops.calls == 0
    assert get_default_backend() == "auto"
    attention(q, k, v)
    assert ops.calls == 1
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


# -- SageAttention ("sage"): a fake ``sageattention`` package stands in for the CUDA kernel -----------------------

_FAKE_SAGE = '''
import torch
import torch.nn.functional as F
calls = []

def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None):
    calls.append((tensor_layout, is_causal, sm_scale, q.dtype))
    if tensor_layout != "HND":
        raise ValueError(tensor_layout)
    out = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=sm_scale)
    return (out + 1e-3).to(q.dtype)  # recognisably not SDPA
'''


@pytest.fixture
def fake_sage(fresh, tmp_path):
    package = tmp_path / "sageattention"
    package.mkdir()
    (package / "__init__.py").write_text(_FAKE_SAGE)
    fresh.syspath_prepend(str(tmp_path))
    fresh.delitem(sys.modules, "sageattention", raising=False)
    fresh.setattr(attn_mod, "_sage_fn", None)
    fresh.setattr(attn_mod, "_sage_problem", "")
    fresh.setattr(attn_mod, "_sage_failed", set())
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    yield fresh
    sys.modules.pop("sageattention", None)


def test_sage_runs_when_asked_for_on_cuda_half_tensors(fake_sage):
    q, k, v = _qkv(dtype=torch.bfloat16)
    out = attention(q, k, v, backend="sage", scale=0.125)
    sage = sys.modules["sageattention"]
    assert sage.calls == [("HND", False, 0.125, torch.bfloat16)]
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.125) + 1e-3
    torch.testing.assert_close(out, expected.to(torch.bfloat16))
    assert attn_mod.sage_available()


def test_auto_never_picks_sage(fake_sage):
    fake_sage.setattr(attn_mod, "_xformers_ops", False)
    q, k, v = _qkv(dtype=torch.bfloat16)
    with attention_backend("auto"):
        attention(q, k, v)
    assert "sageattention" not in sys.modules or sys.modules["sageattention"].calls == []


def test_sage_on_fp32_warns_once_and_uses_sdpa(fake_sage, caplog):
    q, k, v = _qkv()
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        outs = [attention(q, k, v, backend="sage") for _ in range(2)]
    for out in outs:
        torch.testing.assert_close(out, _naive(q, k, v), atol=1e-5, rtol=1e-5)
    assert sys.modules["sageattention"].calls == []
    assert caplog.text.count("'sage' needs fp16/bf16") == 1


def test_sage_off_cuda_warns_once_and_uses_sdpa(fake_sage, caplog):
    fake_sage.setattr(attn_mod, "_on_cuda", lambda q: False)
    q, k, v = _qkv(dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        out = [attention(q, k, v, backend="sage") for _ in range(2)][0]
    torch.testing.assert_close(out, attention(q, k, v, backend="sdpa"))
    assert caplog.text.count("'sage' needs CUDA tensors") == 1


def test_sage_missing_when_requested_is_a_warning(fresh, caplog):
    fresh.setattr(attn_mod, "_sage_fn", None)
    fresh.setitem(sys.modules, "sageattention", None)  # import -> ModuleNotFoundError for 'sageattention'
    fresh.setattr(attn_mod, "_on_cuda", lambda q: True)
    q, k, v = _qkv(dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        out = [attention(q, k, v, backend="sage") for _ in range(2)][0]
    torch.testing.assert_close(out, attention(q, k, v, backend="sdpa"))
    assert caplog.text.count("'sage' was requested but sageattention is not installed") == 1
    assert not attn_mod.sage_available()


def test_sage_error_at_run_time_falls_back_once(fake_sage, caplog):
    sage = pytest.importorskip("sageattention")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no kernel image is available")

    fake_sage.setattr(attn_mod, "_sage_fn", broken)
    q, k, v = _qkv(dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger=attn_mod.__name__):
        outs = [attention(q, k, v, backend="sage") for _ in range(3)]
    for out in outs:
        torch.testing.assert_close(out, attention(q, k, v, backend="sdpa"))
    assert len(calls) == 1 and caplog.text.count("SageAttention failed") == 1
    assert sage.calls == []
