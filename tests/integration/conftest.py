"""Fixtures of the real-ComfyUI layer: one headless CPU server per test session, tiny models, inputs.

Set ``COMFYUI_DIR`` to a ComfyUI checkout (0.3.64 or newer) and run pytest with a Python that has
ComfyUI's requirements (``scripts/setup_comfyui.sh`` builds one); ``COMFYUI_PYTHON`` may name another
Python for the server. Without ``COMFYUI_DIR`` every test here is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .comfy_harness import ComfyServer, install_custom_nodes
from .workflow_assets import prepare_workflow_assets, workflow_files

logger = logging.getLogger(__name__)


def comfyui_dir_or_skip() -> Path:
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("COMFYUI_DIR is not set (integration tests need a ComfyUI checkout)")
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file() or not (path / "comfy_api").is_dir():
        pytest.fail(f"COMFYUI_DIR={value} is not a ComfyUI checkout with comfy_api (0.3.48+): main.py/comfy_api missing")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("COMFYUI_DIR"):
        return
    skip = pytest.mark.skip(reason="COMFYUI_DIR is not set (integration tests need a ComfyUI checkout)")
    for item in items:
        if "integration" in item.keywords or "browser" in item.keywords:
            item.add_marker(skip)


@dataclass
class ComfyEnv:
    """A running server and the folders it was given."""

    server: ComfyServer
    base: Path
    models_root: Path
    input_dir: Path
    output_dir: Path
    assets: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    _object_info: dict[str, Any] | None = None

    @property
    def object_info(self) -> dict[str, Any]:
        if self._object_info is None:
            self._object_info = self.server.object_info()
        return self._object_info

    def loaded_models(self, server: ComfyServer | None = None) -> dict[str, Any]:
        """``comfy.model_management`` as the probe folder sees it: vram_state and current_loaded_models."""
        return (server or self.server).get_json("/mtv_test/loaded_models")



def _write_extra_paths(path: Path, models_root: Path, keys: set[str]) -> None:
    lines = ["mtvcrafter_integration:", f"    base_path: {models_root.as_posix()}"]
    lines += [f"    {key}: {key}" for key in sorted(keys)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> ComfyEnv:
    comfyui_dir = comfyui_dir_or_skip()
    base = tmp_path_factory.mktemp("comfyui_base")
    whitelist = install_custom_nodes(base)
    models_root = base / "extra_models"
    input_dir = base / "input"
    output_dir = base / "output"
    for d in (models_root, input_dir, output_dir):
        d.mkdir()
    started = time.monotonic()
    assets = prepare_workflow_assets(workflow_files(), models_root, input_dir)
    model_keys = {"mtvcrafter", "nlf", "diffusion_models", "vae", "loras"} | set(assets["model_dirs"])
    yaml_path = base / "extra_model_paths.yaml"
    _write_extra_paths(yaml_path, models_root, model_keys)
    assets_seconds = time.monotonic() - started
    server = ComfyServer(comfyui_dir, base, extra_paths_yaml=yaml_path, whitelist=whitelist)
    server.start()
    env = ComfyEnv(server, base, models_root, input_dir, output_dir, assets,
                   timings={"assets_s": assets_seconds, "startup_s": server.startup_seconds})
    logger.info("ComfyUI %s up in %.1f s on port %d", server.version, server.startup_seconds, server.port)
    try:
        yield env
    finally:
        server.stop()
        report = json.dumps({"comfyui": server.version, **env.timings}, indent=1)
        (base / "timings.json").write_text(report)
        timings_out = os.environ.get("MTV_INTEGRATION_TIMINGS")
        if timings_out:
            Path(timings_out).write_text(report)
