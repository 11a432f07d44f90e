"""ComfyUI nodes of the pack: thin wrappers (schema, type conversion, a call into ``mtv_core``).

Each module in ``NODE_MODULES`` exposes ``NODES``, a list of ``io.ComfyNode`` classes.
"""

from __future__ import annotations

import importlib

NODE_MODULES = ("motion", "tokenizer", "nlf", "dit7b", "dit17b", "wan_native")


def all_nodes() -> list[type]:
    """Every node class of the pack, in menu order."""
    nodes: list[type] = []
    for name in NODE_MODULES:
        module = importlib.import_module(f".{name}", __name__)
        nodes.extend(module.NODES)
    return nodes
