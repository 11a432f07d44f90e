"""Rules of the code base that a test can hold: one import name for the pack in tests, no private torch APIs,
and types checked with isinstance rather than duck typing."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from mtv_pack.mtv_core.dit.latents import LatentFormat
from mtv_pack.mtv_core.dit.pipeline import check_motion
from mtv_pack.mtv_core.dit.pipeline_7b import MVDiT7BConditioning

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_TORCH = re.compile(r"torch\.ops\.mkldnn|torch\._C\b|torch\.ops\.aten\._")
# known exceptions, each with its reason: NLF's TorchScript needs the profiling executor, which only
# torch._C can switch (there is no public API for it)
ALLOWED = {"mtv_core/nlf/model.py": "torch._C._jit_set_profiling_executor"}


def test_tests_import_the_pack_under_one_name():
    with pytest.raises(ImportError, match="import the core as mtv_pack.mtv_core in tests"):
        importlib.import_module("mtv_core.windows")
    assert "mtv_core" not in sys.modules and "mtv_pack.mtv_core" in sys.modules


@pytest.mark.parametrize("folder", ["mtv_core", "nodes"])
def test_no_private_torch_api_in_production_code(folder):
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if PRIVATE_TORCH.search(line) and ALLOWED.get(path.relative_to(ROOT).as_posix(), "\0") not in line]
    assert not offenders, "\n".join(offenders)


def test_the_pipeline_checks_types_instead_of_duck_typing():
    look_alike = types.SimpleNamespace(windows=[object()], plan=None, fps=20.0)  # quacks like MotionTokens
    with pytest.raises(ValueError, match="motion must be MotionTokens"):
        check_motion(look_alike, LatentFormat(name="cogvideox", scaling_factor=0.7))
    with pytest.raises(ValueError, match="the model is Module, not MV-DiT-7B"):
        MVDiT7BConditioning(torch.nn.Module())
