"""Node definitions in ComfyUI's ``/object_info`` (V1 info) shape, and the widget-slot rules of UI workflows.

``pack_object_info()`` renders our node schemas, built with whatever ``io`` the pack runs under (the
standalone stand-in in plain pytest), the way ``comfy_api``'s ``GET_NODE_INFO_V1`` does. The static
workflow checks use it without ComfyUI; the integration layer compares it against the real server.
``core_object_info(version)`` is a stored snapshot of the core nodes our workflows may use
(``core_nodes.json``, refreshed from a live server with ``scripts/snapshot_core_nodes.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORE_SNAPSHOT = HERE / "core_nodes.json"
PYPROJECT = HERE.parents[1] / "pyproject.toml"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}  # INT widgets the frontend gives a control_after_generate slot by default
UPLOAD_KEYS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
# Nodes that exist only in the frontend: never sent to the server, no /object_info entry.
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}

# Keys the stand-in stores under the Python argument name and comfy_api renames on the wire.
_OPTION_NAMES = {
    "display_mode": "display",
    "force_input": "forceInput",
    "dynamic_prompts": "dynamicPrompts",
    "image_folder": "image_folder",
    "widget_type": "widgetType",
}


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def input_spec(inp: Any) -> list[Any]:
    """``[TYPE, options]`` of one schema input, as ``/object_info`` lists it."""
    options: dict[str, Any] = {}
    if getattr(inp, "display_name", None):
        options["display_name"] = inp.display_name
    if getattr(inp, "tooltip", None):
        options["tooltip"] = inp.tooltip
    raw = dict(getattr(inp, "options", {}) or {})
    choices = raw.pop("options", None)
    for key, value in raw.items():
        options[_OPTION_NAMES.get(key, key)] = value
    io_type = inp.io_type
    if io_type == "STRING":
        options.setdefault("multiline", False)  # comfy_api always sends it
    if io_type == "COMBO":
        options["multiselect"] = False
        options["options"] = list(choices or [])
    return [io_type, _prune(options)]


def _hidden_value(hidden: Any) -> str:
    return str(getattr(hidden, "value", hidden))


def _hidden_name(hidden: Any) -> str:
    # comfy_api's Hidden is an Enum (name "prompt", value "PROMPT"); the stand-in uses the value strings.
    return str(getattr(hidden, "name", None) or _hidden_value(hidden).lower())


def node_info(node_cls: type) -> dict[str, Any]:
    """The ``/object_info`` entry of one pack node (fields we compare with the real server)."""
    schema = node_cls.define_schema()
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for inp in schema.inputs:
        (optional if inp.optional else required)[inp.id] = input_spec(inp)
    hidden = {_hidden_name(h): [_hidden_value(h)] for h in (getattr(schema, "hidden", None) or [])}
    if schema.is_output_node:  # comfy_api's Schema.finalize adds these to output nodes
        hidden.setdefault("prompt", ["PROMPT"])
        hidden.setdefault("extra_pnginfo", ["EXTRA_PNGINFO"])
    info: dict[str, Any] = {
        "input": {"required": required, **({"optional": optional} if optional else {}),
                  **({"hidden": hidden} if hidden else {})},
        "input_order": {"required": list(required), **({"optional": list(optional)} if optional else {}),
                        **({"hidden": list(hidden)} if hidden else {})},
        "output": [o.io_type for o in schema.outputs],
        "output_is_list": [bool(o.is_output_list) for o in schema.outputs],
        "output_name": [o.display_name or o.id or o.io_type for o in schema.outputs],
        "output_tooltips": [o.tooltip for o in schema.outputs],
        "name": schema.node_id,
        "display_name": schema.display_name,
        "description": schema.description,
        "category": schema.category,
        "output_node": bool(schema.is_output_node),
        "deprecated": bool(schema.is_deprecated),
        "experimental": bool(schema.is_experimental),
    }
    return info


def pack_project() -> dict[str, str]:
    """``name`` (the registry id, ``cnr_id`` in workflows) and ``version`` of the pack's ``[project]``."""
    text = PYPROJECT.read_text()
    found = {key: re.search(rf'^{key}\s*=\s*"([^"]+)"', text, re.M) for key in ("name", "version")}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise ValueError(f"{PYPROJECT}: [project] has no {', '.join(missing)}")
    return {key: match.group(1) for key, match in found.items()}


def pack_object_info() -> dict[str, dict[str, Any]]:
    from mtv_pack.nodes import all_nodes

    return {info["name"]: info for info in (node_info(cls) for cls in all_nodes())}


def core_versions() -> list[str]:
    return sorted(json.loads(CORE_SNAPSHOT.read_text())["versions"])


def core_object_info(version: str) -> dict[str, dict[str, Any]]:
    return json.loads(CORE_SNAPSHOT.read_text())["versions"][version]


def ordered_inputs(info: dict[str, Any]) -> list[tuple[str, list[Any], bool]]:
    """(name, spec, optional) for every input in the order the frontend lays them out."""
    out: list[tuple[str, list[Any], bool]] = []
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = (info.get("input") or {}).get(section) or {}
        names = [n for n in order.get(section, []) if n in specs]
        names += [n for n in specs if n not in names]
        out.extend((n, specs[n], section == "optional") for n in names)
    return out


def spec_type(spec: list[Any]) -> str:
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def spec_options(spec: list[Any]) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def spec_default(spec: list[Any]) -> Any:
    """The value a widget starts with: its declared default, else a combo's first choice (None when neither)."""
    opts = spec_options(spec)
    if "default" in opts:
        return opts["default"]
    if spec_type(spec) == "COMBO":
        choices = spec[0] if isinstance(spec[0], list) else opts.get("options") or []
        return choices[0] if choices else None
    return None


def is_widget(spec: list[Any]) -> bool:
    opts = spec_options(spec)
    if opts.get("forceInput") or opts.get("defaultInput"):
        return False
    return spec_type(spec) in WIDGET_TYPES or bool(opts.get("socketless")) or bool(opts.get("widgetType"))


def widget_slots(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``widgets_values`` layout of a node saved by the current frontend.

    One ``(input name, "value")`` per widget input, followed by ``(name, "control")`` for a
    control_after_generate companion (explicit flag, or an INT named seed/noise_seed) or
    ``(name, "upload")`` for an upload button (LoadImage/LoadVideo).
    """
    slots: list[tuple[str, str]] = []
    for name, spec, _optional in ordered_inputs(info):
        if not is_widget(spec):
            continue
        slots.append((name, "value"))
        opts = spec_options(spec)
        if opts.get("control_after_generate") or (spec_type(spec) == "INT" and name in SEED_NAMES):
            slots.append((name, "control"))
        elif any(opts.get(k) for k in UPLOAD_KEYS):
            slots.append((name, "upload"))
    return slots

