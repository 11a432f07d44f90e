"""Shared test fixtures.

The pack root is imported as the package ``mtv_pack`` (as ComfyUI imports a custom-node folder
as a package), so node modules use their relative imports exactly as in ComfyUI. Tests import the
core as ``mtv_pack.mtv_core`` only: importing it also as top-level ``mtv_core`` (the pack folder is
on ``sys.path`` for the command-line tests' subprocesses) would load a second copy of every module,
whose classes the first copy's ``isinstance`` checks do not recognise. ``_OneName`` refuses that.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _load_pack():
    if "mtv_pack" in sys.modules:
        return sys.modules["mtv_pack"]
    spec = importlib.util.spec_from_file_location(
        "mtv_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["mtv_pack"] = module
    spec.loader.exec_module(module)
    return module


class _OneName(importlib.abc.MetaPathFinder):
    """Refuses ``import mtv_core...`` in the test process (see the module docstring)."""

    def find_spec(self, name, path=None, target=None):
        if name == "mtv_core" or name.startswith("mtv_core."):
            raise ImportError(f"import the core as mtv_pack.{name} in tests, not {name}: two names for one package "
                              "load every module twice")
        return None


_load_pack()
if not any(isinstance(finder, _OneName) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OneName())

try:
    import hypothesis  # noqa: F401
except ImportError:  # e.g. the ComfyUI integration venv: the fuzz suite needs the dev requirements
    collect_ignore_glob = ["test_fuzz_*.py"]


def reference_dir() -> Path:
    """The upstream reference data folder (``MTV_REFERENCE_DIR``, default ``../shared/reference``)."""
    return Path(os.environ.get("MTV_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


def reference_cases(folder: str, model: str) -> list[Path]:
    """Every ``case_<model>_*.safetensors`` under ``reference_dir() / folder`` (more cases may be dropped in)."""
    return sorted((reference_dir() / folder).glob(f"case_{model}_*.safetensors"))


def manifest_for(case: Path) -> dict:
    """The manifest beside a case: ``case_X.safetensors`` -> ``manifest_X.json``."""
    import json

    path = case.with_name(case.name.replace("case_", "manifest_", 1)).with_suffix(".json")
    assert path.is_file(), f"{case.name} needs {path.name}"
    return json.loads(path.read_text())


def load_case(case: Path) -> tuple[dict, dict[str, str]]:
    """A case file's tensors and metadata."""
    from safetensors import safe_open

    with safe_open(str(case), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


@pytest.fixture(scope="session")
def reference() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.fail(f"reference folder {path} is missing; set MTV_REFERENCE_DIR")
    return path


@pytest.fixture(autouse=True)
def _default_float_state():
    """Undo ``torch.set_flush_denormal(True)`` (the CPU commands set it for speed): it is processor state shared
    by the whole test process, and hypothesis refuses to draw floats without subnormals."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny models gain nothing from more, and on a busy CPU OpenMP barriers make them crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz-long", nargs="?", type=int, const=30, default=0, metavar="N",
                     help="run N times the CI fuzz examples (default 30), freshly random instead of the fixed CI set")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real ComfyUI checkout in COMFYUI_DIR")
    config.addinivalue_line("markers", "browser: the real web frontend in a headless Chromium; needs COMFYUI_DIR, "
                                       "selenium, chromium and chromedriver")
    import _fuzz

    _fuzz.LONG_SCALE = config.getoption("--fuzz-long") or 0


@pytest.fixture(scope="session")
def fuzz_worker(tmp_path_factory):
    """The fuzz suite's worker process (see tests/_fuzz.py): loaders run there under a time and memory ceiling."""
    import _fuzz

    worker = _fuzz.FuzzWorker(tmp_path_factory.mktemp("fuzz_worker"))
    yield worker
    worker.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    import _fuzz

    if not _fuzz.STATS:
        return
    targets = sorted({t for t, _ in _fuzz.STATS})
    outcomes = ("ok", "input_error", "unnamed", "bad", "crash", "hang")
    terminalreporter.section("fuzz examples (worker verdicts, shrinking included)")
    terminalreporter.write_line(f"{'target':<12}" + "".join(f"{o:>12}" for o in outcomes))
    for target in targets:
        terminalreporter.write_line(f"{target:<12}" + "".join(f"{_fuzz.STATS[(target, o)]:>12}" for o in outcomes))
    total = {o: sum(_fuzz.STATS[(t, o)] for t in targets) for o in outcomes}
    terminalreporter.write_line(f"{'total':<12}" + "".join(f"{total[o]:>12}" for o in outcomes))
