"""Turn a shipped UI workflow into a runnable API prompt against a live server, and check its outputs."""

from __future__ import annotations

import copy
from fractions import Fraction
from pathlib import Path
from typing import Any

from .node_specs import UI_ONLY_NODES, ordered_inputs, spec_default, spec_options
from .workflow_assets import INPUT_VIDEO_FPS, INPUT_VIDEO_FRAMES

# Widget values lowered so a workflow runs in seconds on CPU with tiny models (input name -> value).
FAST_INPUTS: dict[str, Any] = {"steps": 2, "num_steps": 2, "num_inference_steps": 2, "width": 64, "height": 64}
# The same for the core nodes of the native Wan workflow (17 frames = 5 latent frames of the 13 the motion has).
FAST_CORE_INPUTS: dict[str, dict[str, Any]] = {"KSampler": {"steps": 2},
                                               "WanImageToVideo": {"width": 64, "height": 64, "length": 17}}
# Native loaders that know only released sizes -> the test-only stand-in building the same native type
# (tests/integration/stub_nodes), used when the server lists it.
STAND_INS = {"CLIPLoader": "TestTinyWanCLIPLoader", "CLIPVisionLoader": "TestTinyCLIPVisionLoader"}
STEP_INPUTS = ("steps", "num_steps", "num_inference_steps")
# Nodes whose output has a different frame count than their input (or that bring their own frames).
SAMPLERS = ("MTVSampler7B", "MTVSampler17B")
FRAME_CHANGING = ("MTVTrimMotion", "MTVResampleMotion", "MTVLoadMotion", "MTVExtractSMPL", "LoadVideo",
                  "GetVideoComponents", *SAMPLERS, "MTVDecode7B", "MTVDecode17B")
# Core nodes whose output size is not their input's (the side-by-side strip joins panels with ImageStitch).
SIZE_CHANGING = ("ImageStitch", "ImageScale", "ImageScaleBy", "ImageCrop")


def convert(workflow: dict[str, Any], object_info: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The API prompt of a UI workflow (comfy-cli's converter, the frontend's widget mapping) and what it lost:
    unknown node types, nodes dropped, required inputs neither linked nor set."""
    from comfy_cli.workflow_to_api import convert_ui_to_api

    api = convert_ui_to_api(workflow, object_info)
    problems = []
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node.get("type") in UI_ONLY_NODES:
            continue
        label = f"node {node['id']} ({node['type']})"
        if node["type"] not in object_info:
            problems.append(f"{label}: node type not known to the server")
            continue
        converted = api.get(str(node["id"]))
        if converted is None:
            problems.append(f"{label}: lost in UI->API conversion")
            continue
        for name in object_info[node["type"]]["input"].get("required") or {}:
            if name not in converted["inputs"]:
                problems.append(f"{label}: required input {name!r} neither linked nor set")
    return api, problems


def to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI workflow for ``object_info``'s server; raise naming whatever the conversion lost."""
    api, problems = convert(workflow, object_info)
    if problems:
        raise AssertionError("; ".join(problems))
    return api


def adapt(api: dict[str, Any], object_info: dict[str, Any], overrides: dict[str, Any] | None = None,
          prefix: str | None = None) -> dict[str, Any]:
    """Lower step counts on our nodes (within each input's declared min) and on the native sampler and video size,
    swap native loaders that know only released sizes for their test stand-ins, give SaveVideo a test prefix."""
    api = copy.deepcopy(api)
    overrides = FAST_INPUTS if overrides is None else overrides
    for node in api.values():
        ctype = node["class_type"]
        if ctype in STAND_INS and STAND_INS[ctype] in object_info:
            node["class_type"] = ctype = STAND_INS[ctype]
        if overrides is FAST_INPUTS and ctype in FAST_CORE_INPUTS:
            node["inputs"].update({k: v for k, v in FAST_CORE_INPUTS[ctype].items()
                                   if k in node["inputs"] and not isinstance(node["inputs"][k], list)})
        if ctype.startswith("MTV"):
            specs = {name: spec for name, spec, _ in ordered_inputs(object_info[ctype])}
            for name, value in overrides.items():
                if name in specs and name in node["inputs"] and not isinstance(node["inputs"][name], list):
                    node["inputs"][name] = max(value, spec_options(specs[name]).get("min", value))
        if ctype == "SaveVideo" and prefix:
            node["inputs"]["filename_prefix"] = prefix
    return api


def literal(api: dict[str, Any], node_id: str, name: str) -> Any:
    value = api[node_id]["inputs"].get(name)
    return None if isinstance(value, list) else value


def source(api: dict[str, Any], node_id: str, name: str) -> tuple[str, int] | None:
    value = api[node_id]["inputs"].get(name)
    return (str(value[0]), int(value[1])) if isinstance(value, list) else None


def upstream(api: dict[str, Any], node_id: str) -> list[str]:
    """Node ids feeding ``node_id``, nearest first (breadth first)."""
    seen: list[str] = []
    queue = [node_id]
    while queue:
        current = queue.pop(0)
        for value in api[current]["inputs"].values():
            if isinstance(value, list) and str(value[0]) in api and str(value[0]) not in seen:
                seen.append(str(value[0]))
                queue.append(str(value[0]))
    return seen


def motion_frames(api: dict[str, Any], node_id: str, input_dir: Path) -> int | None:
    """Frames of the joints reaching ``node_id`` when they come straight from a motion file or the input video."""
    from mtv_pack.mtv_core.motion import load_motion

    feeding = upstream(api, node_id)
    sources = [n for n in feeding if api[n]["class_type"] in ("MTVLoadMotion", "LoadVideo")]
    edits = [n for n in feeding if api[n]["class_type"] in (
        "MTVTrimMotion", "MTVResampleMotion", "MTVProceduralMotion")]
    if len(sources) != 1 or edits:
        return None
    node = api[sources[0]]
    if node["class_type"] == "LoadVideo":
        return INPUT_VIDEO_FRAMES
    return load_motion(input_dir / node["inputs"]["motion_file"], index=node["inputs"].get("index", 0)).num_frames


def expected_video(api: dict[str, Any], save_id: str, input_dir: Path) -> dict[str, Any]:
    """Expected fps, frame count and size of a SaveVideo node's file, from the graph and our inputs."""
    from mtv_pack.mtv_core.windows import plan_windows

    expect: dict[str, Any] = {}
    src = source(api, save_id, "video")
    if src is None or api[src[0]]["class_type"] != "CreateVideo":
        return expect
    create = src[0]
    fps = literal(api, create, "fps")
    if fps is None:
        fps_src = source(api, create, "fps")
        if fps_src and (api[fps_src[0]]["class_type"] == "GetVideoComponents"
                        or api[fps_src[0]]["class_type"].startswith("MTV")):
            fps = INPUT_VIDEO_FPS  # our input video and motion files are all at 20 fps
    if fps is not None:
        expect["fps"] = float(fps)
    chain = upstream(api, create)
    for nid in chain:
        inputs = api[nid]["inputs"]
        if api[nid]["class_type"] in SIZE_CHANGING:
            break
        if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
            expect["size"] = (inputs["width"], inputs["height"])
            break
    samplers = [n for n in chain if api[n]["class_type"] in SAMPLERS]
    native = [n for n in chain if api[n]["class_type"] == "WanImageToVideo"]
    if native and isinstance(literal(api, native[0], "length"), int):
        expect["frames"] = literal(api, native[0], "length")
    elif samplers:
        total = motion_frames(api, samplers[0], input_dir)
        encoders = [n for n in upstream(api, samplers[0]) if api[n]["class_type"] == "MTVEncodeMotion"]
        if total is not None and len(encoders) == 1:
            enc = api[encoders[0]]["inputs"]
            plan = plan_windows(total, enc.get("window", 49), enc.get("overlap", 9))
            limit = api[samplers[0]]["inputs"].get("max_windows", 0)
            starts = plan.starts[:limit] if isinstance(limit, int) and limit > 0 else plan.starts
            expect["frames"] = min(plan.used_frames, starts[-1] + plan.window)
    elif not any(api[n]["class_type"] in FRAME_CHANGING for n in chain):
        # Frames drawn straight from one procedural motion (edits that keep the frame count are fine).
        procedural = [n for n in chain if api[n]["class_type"] == "MTVProceduralMotion"]
        if len(procedural) == 1 and isinstance(literal(api, procedural[0], "frames"), int):
            expect["frames"] = literal(api, procedural[0], "frames")
    return expect


def probe_video(path: Path) -> dict[str, Any]:
    """Decode every frame with PyAV: count, frame rate, size, codec."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate
        frames = 0
        size = None
        for frame in container.decode(stream):
            frames += 1
            size = (frame.width, frame.height)
        return {"frames": frames, "fps": float(Fraction(rate)) if rate else None, "size": size,
                "codec": stream.codec_context.name}


def saved_files(outputs: dict[str, Any], node_id: str) -> list[dict[str, Any]]:
    entry = outputs.get(node_id) or {}
    files: list[dict[str, Any]] = []
    for key in ("images", "video", "videos", "gifs", "animated"):
        value = entry.get(key)
        if isinstance(value, list):
            files.extend(v for v in value if isinstance(v, dict) and "filename" in v)
    return files


def node_with_defaults(object_info: dict[str, Any], class_type: str, **inputs: Any) -> dict[str, Any]:
    """An API node whose required widget inputs hold their declared defaults, then ``inputs``."""
    required = object_info[class_type]["input"].get("required") or {}
    values = {name: spec_default(spec) for name, spec in required.items()}
    values = {name: value for name, value in values.items() if value is not None}
    values.update(inputs)
    return {"class_type": class_type, "inputs": values}


