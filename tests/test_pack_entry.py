"""The pack imports without ComfyUI and exposes a V3 entry point with well-formed node schemas."""

import asyncio
import subprocess
import sys

from conftest import ROOT

import mtv_pack
from mtv_pack.nodes import all_nodes


def test_entrypoint_returns_extension_listing_all_nodes():
    ext = asyncio.run(mtv_pack.comfy_entrypoint())
    nodes = asyncio.run(ext.get_node_list())
    assert nodes == all_nodes()


def test_no_v1_mappings_in_entry_module():
    # A NODE_CLASS_MAPPINGS beside comfy_entrypoint makes ComfyUI ignore the entry point.
    assert not hasattr(mtv_pack, "NODE_CLASS_MAPPINGS")


def test_node_schemas_are_prefixed_categorised_and_documented():
    seen = set()
    for node in all_nodes():
        schema = node.define_schema()
        assert schema.node_id.startswith("MTV"), schema.node_id
        assert schema.node_id not in seen
        seen.add(schema.node_id)
        assert schema.category.startswith("MTVCrafter"), schema.node_id
        assert schema.display_name and schema.description, schema.node_id
        for inp in schema.inputs:
            assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"


def test_start_up_does_not_import_heavy_modules():
    # ComfyUI imports every pack at start-up: model libraries must load only when a node runs.
    code = (
        "import importlib.util, sys, pathlib;"
        f"root = pathlib.Path({str(ROOT)!r});"
        "spec = importlib.util.spec_from_file_location('pack', root / '__init__.py',"
        " submodule_search_locations=[str(root)]);"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m);"
        "import pack.nodes; pack.nodes.all_nodes();"
        "print(','.join(sorted(h for h in ('diffusers', 'smplx', 'cv2', 'av', 'accelerate') if h in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
