"""Static checks of the shipped UI workflows (``workflows/*.json``), without ComfyUI (run in CI).

Each workflow must: validate against ComfyUI's workflow JSON schema v0.4 (``MTV_SCHEMA_DIR``, default
``../shared/schemas``); use only our nodes (input names, types and widget counts from our schemas,
built with the stand-in io) or core nodes known to both ComfyUI 0.3.64 and 0.8.0 (snapshot in
``tests/integration/core_nodes.json``); link only equal types; name no absolute path; list in ``models[]``
only files the web frontend can check and download, and name every other model it loads in its note;
show every picture and text our nodes compute; lay out nodes without overlaps, groups around their nodes
below their titles and a view that opens on the note (``integration/frontend_rules.py``); convert to an
API prompt with every required input filled (comfy-cli's converter, as the integration layer does).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from integration.frontend_rules import layout_problems, model_entry_problems, view_problems
from integration.node_specs import (
    UI_ONLY_NODES,
    core_object_info,
    core_versions,
    ordered_inputs,
    pack_object_info,
    pack_project,
    spec_options,
    spec_type,
    widget_slots,
)
from integration.run_checks import convert
from integration.workflow_assets import WORKFLOWS_DIR

WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.json"))
# Workflows the pack promises (README); each is checked as soon as it exists.
MANIFEST = ("mtvcrafter_7b.json", "mtvcrafter_7b_motion_file.json", "mtvcrafter_17b.json",
            "mtvcrafter_motion_check.json", "mtvcrafter_motion_preview.json", "mtvcrafter_17b_native.json")
MODEL_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt", ".torchscript", ".gguf")
# Our loaders and their model widget (a file or a model folder); each value must be in models[] or the note.
LOADER_WIDGETS = {"MTVLoadNLFModel": "model_name", "MTVLoadMotionTokenizer": "tokenizer_file", "MTVLoadDiT7B": "model",
                  "MTVLoadCogVideoXVAE": "vae", "MTVLoadDiT17B": "model"}
# Outputs our nodes compute for the user to look at: a shipped workflow shows them (links them somewhere).
SHOWN_TYPES = {"IMAGE", "STRING"}
INPUT_SUFFIXES = (".npz", ".pkl", ".pickle", ".mp4", ".webm", ".mov", ".png", ".jpg", ".jpeg", ".webp")
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)|(^|[\\/])\.\.([\\/]|$)")


def pack_registry_id() -> str:
    return pack_project()["name"]


def schema_path() -> Path:
    base = Path(os.environ.get("MTV_SCHEMA_DIR", ROOT.parent / "shared" / "schemas"))
    return base / "workflow_v0.4.schema.json"


@pytest.fixture(scope="module")
def validator():
    import jsonschema

    path = schema_path()
    if not path.is_file():
        pytest.fail(f"workflow schema {path} is missing; set MTV_SCHEMA_DIR to the folder holding it")
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def known() -> dict[str, dict[str, dict[str, Any]]]:
    """Node definitions per ComfyUI version: our nodes plus that version's core snapshot."""
    ours = pack_object_info()
    return {v: {**core_object_info(v), **ours} for v in core_versions()}


def _strings(value: Any, where: str = ""):
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def _value_problem(name: str, spec: list[Any], value: Any, model_names: set[str], ours: bool,
                   note: str = "") -> str | None:
    t = spec_type(spec)
    opts = spec_options(spec)
    if t == "INT" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"{name}={value!r} is not an INT"
    if t == "FLOAT" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return f"{name}={value!r} is not a FLOAT"
    if t in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]:
            return f"{name}={value!r} outside [{opts.get('min')}, {opts.get('max')}]"
    if t == "BOOLEAN" and not isinstance(value, bool):
        return f"{name}={value!r} is not a BOOLEAN"
    if t == "STRING" and not isinstance(value, str):
        return f"{name}={value!r} is not a STRING"
    if t == "COMBO":
        choices = spec[0] if isinstance(spec[0], list) else opts.get("options")
        if not isinstance(value, str):
            return f"{name}={value!r} is not a choice string"
        if ours and value.lower().endswith(MODEL_SUFFIXES) and value not in model_names and value not in note:
            return f"{name}={value!r} names a model file that neither models[] nor the note lists"
        if ours and value.lower().endswith(INPUT_SUFFIXES):
            return None  # a file the user puts in ComfyUI's input folder (listed at run time)
        if choices and value not in choices and value not in model_names and not (ours and value and value in note):
            return f"{name}={value!r} not among {choices}"
    return None


def check_workflow(wf: dict[str, Any], known: dict[str, dict[str, dict[str, Any]]], validator) -> list[str]:
    """Every problem found in one UI workflow (empty list = fine)."""
    problems: list[str] = [f"schema: {e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(wf)]
    if problems:
        return problems
    if wf.get("version") != 0.4:
        problems.append(f"version {wf.get('version')!r}: ship UI format 0.4")
    for where, text in _strings(wf):
        if ABSOLUTE.search(text) and not text.startswith(("http://", "https://")):
            problems.append(f"absolute or parent path {text!r} at {where}")
    models = wf.get("models") or []
    node_models = [(f"node {n['id']} properties.models[{i}]", entry) for n in wf["nodes"]
                   for i, entry in enumerate((n.get("properties") or {}).get("models") or [])]
    model_names = set()
    for where, entry in [(f"models[{i}]", entry) for i, entry in enumerate(models)] + node_models:
        name, url, folder = entry.get("name"), entry.get("url"), entry.get("directory")
        model_names.add(name)
        if not name or not isinstance(url, str) or not url.startswith("https://") or not folder:
            problems.append(f"{where} needs name, https url and directory: {entry}")
        else:
            problems += [f"{where}: {p}" for p in model_entry_problems(entry)]
    note = "\n".join(str(v) for n in wf["nodes"] if n["type"] in ("MarkdownNote", "Note")
                     for v in n.get("widgets_values") or [])
    nodes = {str(n["id"]): n for n in wf["nodes"]}
    linked_types = {}
    for nid, node in nodes.items():
        for out in node.get("outputs") or []:
            linked_types.setdefault(nid, []).append((out.get("name"), out.get("type"), bool(out.get("links"))))
    pack_ids = set(pack_object_info())
    for version, infos in known.items():
        for nid, node in nodes.items():
            ntype = node["type"]
            label = f"[{version}] node {nid} ({ntype})"
            if ntype in UI_ONLY_NODES:
                continue
            info = infos.get(ntype)
            if info is None:
                problems.append(f"{label}: unknown node type (not ours, not a known core node)")
                continue
            ours = ntype in pack_ids
            cnr_id = (node.get("properties") or {}).get("cnr_id")
            if ours and cnr_id not in (None, pack_registry_id()):
                problems.append(f"{label}: properties.cnr_id {cnr_id!r} is not the registry id {pack_registry_id()!r}")
            specs = {n: s for n, s, _ in ordered_inputs(info)}
            for inp in node.get("inputs", []) or []:
                spec = specs.get(inp["name"])
                if spec is None:
                    problems.append(f"{label}: input {inp['name']!r} does not exist")
                elif inp.get("type") not in (spec_type(spec), "*") and not (
                        spec_type(spec) == "COMBO" and inp.get("type") in ("COMBO", None)):
                    problems.append(f"{label}: input {inp['name']!r} typed {inp.get('type')!r}, node says "
                                    f"{spec_type(spec)!r}")
            for i, out in enumerate(node.get("outputs", []) or []):
                if i >= len(info["output"]):
                    problems.append(f"{label}: output slot {i} ({out.get('name')}) does not exist")
                elif out.get("type") != info["output"][i]:
                    problems.append(f"{label}: output {i} typed {out.get('type')!r}, node says {info['output'][i]!r}")
            values = node.get("widgets_values")
            if values is None:
                values = []
            if not isinstance(values, list):
                problems.append(f"{label}: widgets_values is not a list")
                continue
            slots = widget_slots(info)
            if len(values) != len(slots):
                problems.append(f"{label}: {len(values)} widget values, expected {len(slots)} "
                                f"({[f'{n}:{k}' for n, k in slots]})")
                continue
            for (name, kind), value in zip(slots, values):
                if kind == "control" and value not in CONTROL_VALUES:
                    problems.append(f"{label}: {name} control_after_generate value {value!r}")
                elif kind == "value":
                    linked = any(i.get("name") == name and i.get("link") is not None for i in node.get("inputs") or [])
                    issue = None if linked else _value_problem(name, specs[name], value, model_names, ours, note)
                    if issue:
                        problems.append(f"{label}: {issue}")
    for link in wf.get("links", []):
        lid, src, src_slot, dst, dst_slot, ltype = link
        s, d = nodes.get(str(src)), nodes.get(str(dst))
        if s is None or d is None:
            problems.append(f"link {lid}: endpoint node missing")
            continue
        outs, ins = s.get("outputs") or [], d.get("inputs") or []
        if src_slot >= len(outs) or dst_slot >= len(ins):
            problems.append(f"link {lid}: slot out of range")
            continue
        if ins[dst_slot].get("link") != lid or lid not in (outs[src_slot].get("links") or []):
            problems.append(f"link {lid}: not recorded on both nodes")
        types = {ltype, outs[src_slot].get("type"), ins[dst_slot].get("type")} - {"*"}
        if len(types) > 1:
            problems.append(f"link {lid}: {s['type']}.{outs[src_slot].get('name')} -> {d['type']}."
                            f"{ins[dst_slot].get('name')} joins different types {sorted(map(str, types))}")
    for nid, node in nodes.items():
        widget = LOADER_WIDGETS.get(node["type"])
        values = node.get("widgets_values") or []
        if widget and node.get("mode", 0) == 0 and values and values[0] not in model_names and values[0] not in note:
            problems.append(f"node {nid} ({node['type']}): {widget}={values[0]!r} is neither in models[] nor named "
                            "in the note, so users cannot tell where to get it")
        if node["type"] in pack_ids and node.get("mode", 0) == 0:
            for name, otype, is_linked in linked_types.get(nid, []):
                if otype in SHOWN_TYPES and not is_linked:
                    problems.append(f"node {nid} ({node['type']}): its {otype} output {name!r} is computed but "
                                    "never shown")
    problems += layout_problems(wf) + view_problems(wf)
    if not problems:
        problems += convert(wf, known[max(known, key=lambda v: tuple(map(int, v.split("."))))])[1]
    return problems


def test_every_file_in_workflows_is_accounted_for():
    stray = []
    for path in sorted(WORKFLOWS_DIR.iterdir()):
        if path.suffix == ".json":
            continue
        if path.suffix == ".jpg" and path.with_suffix(".json").exists():
            assert path.read_bytes()[:3] == b"\xff\xd8\xff", f"{path.name} is not a JPEG"
            assert path.stat().st_size < 200_000, f"{path.name} thumbnail is larger than 200 kB"
            continue
        stray.append(path.name)
    assert not stray, f"files in workflows/ that are neither workflows nor their thumbnails: {stray}"


def test_manifest_workflows_are_shipped_with_thumbnails():
    # The promised workflows exist and are among the checked ones; every workflow has its template thumbnail
    # (draw it with `python scripts/make_thumbnails.py`).
    present = {p.name for p in WORKFLOWS}
    assert set(MANIFEST) <= present, f"missing workflows: {sorted(set(MANIFEST) - present)}"
    no_thumb = [p.name for p in WORKFLOWS if not p.with_suffix(".jpg").is_file()]
    assert not no_thumb, f"workflows without a same-name .jpg thumbnail: {no_thumb}"


def test_known_nodes_cover_pack_and_both_comfyui_versions(known):
    assert set(known) >= {"0.3.64", "0.8.0"}
    ours = set(pack_object_info())
    for version, infos in known.items():
        assert ours <= set(infos)
        for core in ("LoadImage", "LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "PreviewImage"):
            assert core in infos, f"{core} missing from the {version} snapshot"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_is_valid(path, known, validator):
    wf = json.loads(path.read_text())
    problems = check_workflow(wf, known, validator)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


# -- the checker itself must catch broken workflows ------------------------------------------------------------


def _node(nid, ntype, inputs=(), outputs=(), values=None, pos=(0, 0)):
    node = {"id": nid, "type": ntype, "pos": list(pos), "size": [200, 100], "flags": {}, "order": nid, "mode": 0,
            "inputs": list(inputs), "outputs": list(outputs), "properties": {"Node name for S&R": ntype}}
    if values is not None:
        node["widgets_values"] = values
    return node


def _good_workflow() -> dict[str, Any]:
    return {
        "last_node_id": 4, "last_link_id": 2, "version": 0.4, "config": {},
        "extra": {"ds": {"scale": 0.65, "offset": [123, 192]}},
        "nodes": [
            _node(1, "LoadVideo", outputs=[{"name": "VIDEO", "type": "VIDEO", "links": [1]}],
                  values=["dance.mp4", "image"], pos=(700, 84)),
            _node(2, "GetVideoComponents", inputs=[{"name": "video", "type": "VIDEO", "link": 1}],
                  outputs=[{"name": "images", "type": "IMAGE", "links": [2]}, {"name": "audio", "type": "AUDIO",
                           "links": []}, {"name": "fps", "type": "FLOAT", "links": []}], pos=(950, 84)),
            _node(3, "PreviewImage", inputs=[{"name": "images", "type": "IMAGE", "link": 2}], values=[],
                  pos=(1200, 84)),
            _node(4, "MarkdownNote", values=["models go to models/mtvcrafter"]),
        ],
        "links": [[1, 1, 0, 2, 0, "VIDEO"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [{"id": 1, "title": "Video", "bounding": [680, 0, 740, 204], "color": "#3f789e", "font_size": 24,
                    "flags": {}}],
        "models": [{"name": "tiny.safetensors", "url": "https://huggingface.co/org/repo/resolve/main/tiny.safetensors",
                    "directory": "mtvcrafter"}],
    }


def _unlink_preview(wf):
    wf["links"].pop()
    wf["nodes"][1]["outputs"][0]["links"] = []
    wf["nodes"][2]["inputs"][0]["link"] = None


def test_checker_accepts_a_good_workflow(known, validator):
    assert check_workflow(_good_workflow(), known, validator) == []


@pytest.mark.parametrize("mutation, expected", [
    (lambda wf: wf["nodes"][0].update(widgets_values=["/home/me/dance.mp4", "image"]), "absolute"),
    (lambda wf: wf["nodes"][0].update(widgets_values=["dance.mp4"]), "widget values"),
    (lambda wf: wf["nodes"][1]["inputs"][0].update(name="clip"), "does not exist"),
    (lambda wf: wf["links"][1].__setitem__(5, "MTV_MOTION"), "different types"),
    (lambda wf: wf["nodes"][2].update(type="VHS_VideoCombine"), "unknown node type"),
    (lambda wf: wf["models"][0].pop("url"), "'url' is a required property"),
    (lambda wf: wf["models"][0].update(url="http://example.org/x"), "https url"),
    (lambda wf: wf["models"][0].update(directory="C:\\models"), "absolute"),
    (lambda wf: wf["models"][0].update(name="MV-DiT/CogVideoX"), "names a folder"),
    (lambda wf: wf["models"][0].update(url="https://huggingface.co/org/repo/tree/main/tiny.safetensors"), "web page"),
    (lambda wf: wf["models"][0].update(url="https://github.com/org/repo/releases/download/v1/tiny.safetensors"),
     "allowed host"),
    (lambda wf: wf["models"][0].update(name="nlf.torchscript", url="https://huggingface.co/o/r/resolve/main/nlf.torchscript"),
     "never lists .torchscript"),
    (lambda wf: wf["models"][0].update(directory="unet"), "Invalid directory"),
    (lambda wf: wf["nodes"][0]["properties"].update(models=[{"name": "tiny.pt", "directory": "mtvcrafter",
                                                             "url": "https://huggingface.co/o/r/resolve/main/tiny.pt"}]),
     "node 1 properties.models[0]"),
    (lambda wf: wf["nodes"].append(_node(5, "MTVLoadDiT7B", outputs=[{"name": "model", "type": "MTV_DIT", "links": []}],
                                         values=["MV-DiT/CogVideoX", "auto", "auto", "auto"], pos=(2000, 84))),
     "neither in models[] nor named in the note"),
    (lambda wf: wf["nodes"].append(_node(5, "MTVMotionInfo", outputs=[{"name": "info", "type": "STRING", "links": []}],
                                         values=[], pos=(2000, 84))), "computed but never shown"),
    (lambda wf: wf["nodes"][1].update(pos=[880, 100]), "overlap"),
    (lambda wf: wf["nodes"].append(_node(5, "EmptyImage", values=[64, 64, 1, 0], pos=(1200, 400))),
     "grows it downwards"),
    (lambda wf: wf["groups"][0].update(bounding=[680, 40, 740, 204]), "covers its title"),
    (lambda wf: wf["groups"][0].update(bounding=[680, 0, 300, 204]), "cut by its border"),
    (lambda wf: wf["extra"].update(ds={"scale": 0.65, "offset": [40, 40]}), "note is not fully in view"),
    (lambda wf: wf.pop("extra"), "extra.ds is missing"),
    (lambda wf: wf.pop("links"), "schema"),
    (_unlink_preview, "required input"),
    (lambda wf: wf["nodes"].append(_node(5, "MTVProceduralMotion", outputs=[], values=[])) or
     wf["nodes"][-1]["properties"].update(cnr_id="ComfyUI-MTVCrafter"), "registry id"),
])
def test_checker_rejects_broken_workflows(known, validator, mutation, expected):
    wf = _good_workflow()
    mutation(wf)
    problems = check_workflow(wf, known, validator)
    assert any(expected in p for p in problems), problems
