"""The standalone ``io`` stand-in (nodes/_standalone_io.py) against the real ``comfy_api.latest.io``.

Unit tests build our node schemas with the stand-in; ComfyUI builds them with its own V3 API. This
test imports the pack inside a subprocess that has the ComfyUI checkout in ``COMFYUI_DIR`` on its path,
so every schema is built — and validated, as ComfyUI does at start-up — by the real API, and compares
the resulting ``/object_info`` entries with what the stand-in produces. It also checks that every
``io.``/``ui.`` name our nodes use exists in both. Marker ``integration``: skipped without COMFYUI_DIR.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from integration.node_specs import node_info

pytestmark = pytest.mark.integration

_PROBE = r"""
import importlib.util, json, sys
comfy_dir, root = sys.argv[1], sys.argv[2]
sys.path.insert(0, comfy_dir)
from comfy_api.latest import io as real_io, ui as real_ui
spec = importlib.util.spec_from_file_location("mtvcrafter_probe", root + "/__init__.py",
                                              submodule_search_locations=[root])
pack = importlib.util.module_from_spec(spec)
sys.modules["mtvcrafter_probe"] = pack
spec.loader.exec_module(pack)
from mtvcrafter_probe.nodes import _comfy, all_nodes
out = {"have_comfy": _comfy.HAVE_COMFY, "io_is_real": _comfy.io is real_io, "nodes": {}, "errors": {},
       "io_names": sorted(n for n in dir(real_io) if not n.startswith("_")),
       "ui_names": sorted(n for n in dir(real_ui) if not n.startswith("_"))}
for cls in all_nodes():
    try:
        info = cls.GET_NODE_INFO_V1()  # runs ComfyUI's schema validation
        out["nodes"][info["name"]] = info
        if not issubclass(cls, real_io.ComfyNode):
            out["errors"][cls.__name__] = "not a subclass of comfy_api.latest.io.ComfyNode"
    except Exception as exc:
        out["errors"][cls.__name__] = f"{type(exc).__name__}: {exc}"
sys.stdout.write("\n@@PROBE@@" + json.dumps(out))
"""

COMPARED = ("input", "input_order", "output", "output_is_list", "output_name", "output_tooltips", "name",
            "display_name", "description", "category", "output_node", "deprecated", "experimental")


def _comfyui() -> tuple[Path, str]:
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("COMFYUI_DIR is not set (needs a ComfyUI checkout)")
    return Path(value).resolve(), os.environ.get("COMFYUI_PYTHON") or sys.executable


@pytest.fixture(scope="module")
def probe() -> dict:
    comfy_dir, python = _comfyui()
    proc = subprocess.run([python, "-c", _PROBE, str(comfy_dir), str(ROOT)], cwd=comfy_dir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "@@PROBE@@" in proc.stdout, proc.stderr[-4000:]
    return json.loads(proc.stdout.split("@@PROBE@@", 1)[1])


def _used_names(module_attr: str) -> set[str]:
    """Attribute names used as ``io.X`` / ``ui.X`` in the node modules."""
    names: set[str] = set()
    for path in sorted((ROOT / "nodes").glob("*.py")):
        if path.name.startswith("_standalone"):
            continue
        tree = ast.parse(path.read_text())
        # annotations are never evaluated (``from __future__ import annotations``): skip them
        in_annotations = {id(sub) for node in ast.walk(tree)
                          for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)) if ann
                          for sub in ast.walk(ann)}
        for node in ast.walk(tree):
            if id(node) in in_annotations:
                continue
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == module_attr:
                names.add(node.attr)
    return names


def test_pack_uses_the_real_api_inside_comfyui(probe):
    assert probe["have_comfy"] and probe["io_is_real"]


def test_every_schema_builds_and_validates_with_real_io(probe):
    from mtv_pack.nodes import all_nodes

    assert not probe["errors"], json.dumps(probe["errors"], indent=1)
    assert sorted(probe["nodes"]) == sorted(node_info(c)["name"] for c in all_nodes())


def test_standalone_io_renders_the_same_node_info(probe):
    from mtv_pack.nodes import all_nodes

    diffs = []
    for cls in all_nodes():
        ours = node_info(cls)
        real = probe["nodes"].get(ours["name"])
        if real is None:
            continue
        for key in COMPARED:
            if json.loads(json.dumps(ours.get(key))) != real.get(key):
                diffs.append(f"{ours['name']}.{key}: stand-in {ours.get(key)!r} != real {real.get(key)!r}")
    assert not diffs, "\n".join(diffs)


def test_every_io_and_ui_name_used_by_nodes_exists_in_real_api(probe):
    from mtv_pack.nodes import _standalone_io

    missing = sorted(n for n in _used_names("io") if n not in probe["io_names"])
    assert not missing, f"io names used by nodes but absent from comfy_api.latest.io: {missing}"
    missing_ui = sorted(n for n in _used_names("ui") if n not in probe["ui_names"])
    assert not missing_ui, f"ui names used by nodes but absent from comfy_api.latest.ui: {missing_ui}"
    # and the stand-in offers every io name the nodes use (else unit tests could not build them)
    absent = sorted(n for n in _used_names("io") if not hasattr(_standalone_io, n))
    assert not absent, f"io names used by nodes but missing from the stand-in: {absent}"
