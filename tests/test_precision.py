"""mtv_core.precision: dtype names, and the TF32 context of the code search with torch's old and new TF32 APIs.

The TF32 switches are process-wide flags that torch lets a CPU build set and read, so the states a user (or
ComfyUI) may leave them in are set for real here; ``_reset_tf32`` puts them back to torch's defaults.
"""

from __future__ import annotations

import types

import pytest
import torch

from mtv_pack.mtv_core import precision
from mtv_pack.mtv_core.precision import exact_fp32_matmul, resolve_dtype
from mtv_pack.mtv_core.tokenizer import model as tokenizer_model
from mtv_pack.mtv_core.tokenizer.testing import tiny_model

MATMUL = torch.backends.cuda.matmul
NEW_API = hasattr(MATMUL, "fp32_precision")


def _reset_tf32() -> None:
    if NEW_API:
        torch.backends.fp32_precision = "none"
        MATMUL.fp32_precision = "none"
    torch.set_float32_matmul_precision("highest")
    if NEW_API:
        MATMUL.fp32_precision = "none"


@pytest.fixture
def tf32_flags():
    _reset_tf32()
    yield
    _reset_tf32()


def _read() -> tuple:
    """Every TF32 reading torch offers; "raises" where torch refuses it (as a CUDA fp32 matmul would)."""
    values = []
    for read in (lambda: MATMUL.allow_tf32, lambda: torch.get_float32_matmul_precision(),
                 lambda: MATMUL.fp32_precision, lambda: torch.backends.fp32_precision):
        try:
            values.append(read())
        except (RuntimeError, AttributeError):
            values.append("raises")
    return tuple(values)


STATES = {
    "defaults": lambda: None,
    "legacy flag on (as ComfyUI sets it)": lambda: setattr(MATMUL, "allow_tf32", True),
    "matmul precision high": lambda: torch.set_float32_matmul_precision("high"),
    "new API tf32 on matmul": lambda: setattr(MATMUL, "fp32_precision", "tf32"),
    "new API tf32 globally": lambda: setattr(torch.backends, "fp32_precision", "tf32"),
    "new API ieee on matmul": lambda: setattr(MATMUL, "fp32_precision", "ieee"),
}


@pytest.mark.skipif(not NEW_API, reason="this torch has no fp32_precision API")
@pytest.mark.parametrize("state", list(STATES), ids=list(STATES))
def test_tf32_is_off_inside_and_restored_after_with_both_apis(tf32_flags, state):
    STATES[state]()
    before = _read()
    with exact_fp32_matmul("cuda"):
        inside = _read()
        # readable (so a CUDA matmul does not raise on mixed settings) and exact
        assert inside[0] is False and inside[2] == "ieee", inside
    assert _read() == before
    with pytest.raises(KeyError):
        with exact_fp32_matmul("cuda:0"):
            raise KeyError("the block failed")
    assert _read() == before


def test_tf32_context_without_the_new_api(monkeypatch):
    """A torch without ``fp32_precision``: only the legacy precision is switched and restored."""
    legacy = types.SimpleNamespace(allow_tf32=True)  # no fp32_precision attribute
    state = {"precision": "high"}
    monkeypatch.setattr(torch.backends.cuda, "matmul", legacy)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: state["precision"])
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda value: state.update(precision=value))
    with exact_fp32_matmul(torch.device("cuda")):
        assert state["precision"] == "highest"
    assert state["precision"] == "high" and legacy.allow_tf32 is True


def test_tf32_context_leaves_other_devices_alone(tf32_flags, monkeypatch):
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda value: pytest.fail("flags touched"))
    with exact_fp32_matmul("cpu"), exact_fp32_matmul(torch.device("meta")):
        pass


def test_code_search_runs_in_the_exact_context_of_its_device(monkeypatch):
    seen = []
    real = tokenizer_model.exact_fp32_matmul

    def spy(device):
        seen.append(torch.device(device))
        return real(device)

    monkeypatch.setattr(tokenizer_model, "exact_fp32_matmul", spy)
    model = tiny_model()
    indices, _ = model.vq.nearest(torch.randn(5, model.config.code_dim))
    assert seen == [torch.device("cpu")] and indices.shape == (5,)


def test_dtype_names():
    assert precision.DTYPE_CHOICES == ("auto", "bf16", "fp16", "fp32")
    assert all(resolve_dtype(name) in (torch.float32, torch.bfloat16, torch.float16)
               for name in precision.DTYPE_CHOICES)
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="unsupported dtype"):
        resolve_dtype(torch.int8)
