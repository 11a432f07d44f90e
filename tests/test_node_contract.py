"""Saved workflows keep loading: node ids and input names stay, new inputs are optional, outputs are only appended.

The frontend links outputs by slot index, so inserting or reordering an output would rewire every saved
workflow; ``released_nodes.json`` records the 0.1.0 surface.
"""

from __future__ import annotations

import json
from pathlib import Path

from integration.node_specs import pack_object_info

RELEASED = json.loads((Path(__file__).with_name("released_nodes.json")).read_text())["nodes"]


def test_released_nodes_keep_ids_inputs_and_output_slots():
    current = pack_object_info()
    problems = []
    for node_id, released in RELEASED.items():
        info = current.get(node_id)
        if info is None:
            problems.append(f"{node_id}: removed or renamed")
            continue
        required = list(info["input"].get("required") or {})
        optional = list(info["input"].get("optional") or {})
        gone = [name for name in released["inputs"] if name not in required + optional]
        if gone:
            problems.append(f"{node_id}: inputs {gone} removed or renamed")
        added_required = [name for name in required if name not in released["inputs"]]
        if added_required:
            problems.append(f"{node_id}: new inputs {added_required} must be optional")
        outputs = [[t, n] for t, n in zip(info["output"], info["output_name"])]
        if outputs[:len(released["outputs"])] != released["outputs"]:
            problems.append(f"{node_id}: outputs {outputs} do not start with the released {released['outputs']}")
    assert not problems, "\n".join(problems)
