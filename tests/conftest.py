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


def reference_dir() -> Path:
    """The upstream reference data folder (``MTV_REFERENCE_DIR``, default ``../shared/reference``)."""
    return Path(os.environ.get("MTV_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    path = reference_dir()
    if not path.is_dir():
        pytest.fail(f"reference folder {path} is missing; set MTV_REFERENCE_DIR")
    return path


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny models gain nothing from more, and on a busy CPU OpenMP barriers make them crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real ComfyUI checkout in COMFYUI_DIR")
    config.addinivalue_line("markers", "browser: the real web frontend in a headless Chromium; needs COMFYUI_DIR, "
                                       "selenium, chromium and chromedriver")
