"""The pack inside a real, headless ComfyUI on CPU (0.3.64+): node surface, templates, workflows, Cancel.

Run: ``COMFYUI_DIR=/path/to/ComfyUI <python with ComfyUI's requirements> -m pytest -m integration tests``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtv_pack.mtv_core.motion import load_motion
from mtv_pack.nodes import all_nodes

from .comfy_harness import PACK_FOLDER
from .frontend_rules import MODEL_FOLDERS
from .node_specs import node_info, ordered_inputs, spec_options, spec_type
from .run_checks import (
    FAST_INPUTS,
    SAMPLERS,
    STAND_INS,
    STEP_INPUTS,
    adapt,
    expected_video,
    node_with_defaults,
    probe_video,
    saved_files,
    source,
    to_api,
    upstream,
)
from .workflow_assets import WORKFLOWS_DIR, load_workflow, workflow_files, write_tiny_model

pytestmark = pytest.mark.integration

WORKFLOWS = workflow_files()
CORE_TYPES = {"IMAGE", "MASK", "VIDEO", "LATENT", "VAE", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "AUDIO",
              "MODEL", "CONDITIONING", "CLIP_VISION", "CLIP_VISION_OUTPUT"}


def test_server_loads_pack_without_import_errors(comfy):
    log = comfy.server.log_text()
    failed = [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line]
    assert not failed, comfy.server.log_tail()
    assert f"custom_nodes/{PACK_FOLDER}" in log or f"custom_nodes\\{PACK_FOLDER}" in log, (
        "the pack does not appear in ComfyUI's custom node import report:\n" + comfy.server.log_tail())
    assert f"Cannot import {comfy.base}" not in log, comfy.server.log_tail()


def test_harness_runs_a_core_video_graph(comfy):
    # EmptyImage -> CreateVideo -> SaveVideo: proves the runner, /ws following and mp4 checks themselves.
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 9, "color": 0x3366CC}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 16.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "harness/core",
                                                      "format": "mp4", "codec": "h264"}},
    }
    result = comfy.server.run(prompt, timeout=120)
    assert result.status == "success", result.error_text()
    files = saved_files(result.outputs, "3")
    assert len(files) == 1 and files[0]["type"] == "output"
    info = probe_video(comfy.output_dir / files[0]["subfolder"] / files[0]["filename"])
    assert info == {"frames": 9, "fps": 16.0, "size": (64, 48), "codec": "h264"}


def test_every_pack_node_is_listed_with_its_schema(comfy):
    info = comfy.object_info
    nodes = all_nodes()
    problems = []
    for cls in nodes:
        ours = node_info(cls)
        node_id = ours["name"]
        live = info.get(node_id)
        if live is None:
            problems.append(f"{node_id}: missing from /object_info")
            continue
        if not live["category"].startswith("MTVCrafter/"):
            problems.append(f"{node_id}: category {live['category']!r} not under MTVCrafter/")
        if not live.get("display_name") or live["display_name"] == node_id:
            problems.append(f"{node_id}: no display name")
        if not live.get("description"):
            problems.append(f"{node_id}: no description")
        if PACK_FOLDER not in (live.get("python_module") or ""):
            problems.append(f"{node_id}: python_module {live.get('python_module')!r}")
        for name, spec, _ in ordered_inputs(live):
            if not spec_options(spec).get("tooltip"):
                problems.append(f"{node_id}.{name}: no tooltip")
        live_inputs = {s: list((live["input"].get(s) or {})) for s in ("required", "optional")}
        our_inputs = {s: list((ours["input"].get(s) or {})) for s in ("required", "optional")}
        if live_inputs != our_inputs:
            problems.append(f"{node_id}: inputs {live_inputs} != schema {our_inputs}")
        if live["output"] != ours["output"] or live["output_name"] != ours["output_name"]:
            problems.append(f"{node_id}: outputs {live['output']}/{live['output_name']} != "
                            f"{ours['output']}/{ours['output_name']}")
    assert not problems, "\n".join(problems)
    listed = {k for k, v in info.items() if PACK_FOLDER in (v.get("python_module") or "")}
    assert listed == {node_info(c)["name"] for c in nodes}, "server lists nodes the pack did not declare"


def test_custom_types_connect_only_where_they_should(comfy):
    info = comfy.object_info
    ours = [info[node_info(c)["name"]] for c in all_nodes() if node_info(c)["name"] in info]
    produced: dict[str, list[str]] = {}
    consumed: dict[str, list[str]] = {}
    problems = []
    for node in ours:
        for t in node["output"]:
            produced.setdefault(t, []).append(node["name"])
        for name, spec, _ in ordered_inputs(node):
            t = spec_type(spec)
            consumed.setdefault(t, []).append(f"{node['name']}.{name}")
            if t == "*" or "," in t:
                problems.append(f"{node['name']}.{name}: accepts {t!r} (any type) instead of one type")
    for t in set(produced) | set(consumed):
        if t in CORE_TYPES:
            continue
        if not t.startswith("MTV_"):
            problems.append(f"custom type {t!r} is not prefixed MTV_")
    for t, where in consumed.items():
        if t.startswith("MTV_") and t not in produced:
            problems.append(f"{t} is consumed by {where} but no node produces it")
    # No core node speaks our types: they can only be linked between our own nodes.
    for name, node in info.items():
        if PACK_FOLDER in (node.get("python_module") or ""):
            continue
        if any(str(t).startswith("MTV_") for t in node.get("output", [])):
            problems.append(f"core node {name} outputs an MTV_ type")
    assert not problems, "\n".join(problems)


def test_template_browser_lists_our_workflows(comfy):
    templates = comfy.server.get_json("/workflow_templates")
    shipped = sorted(WORKFLOWS_DIR.glob("*.json"))
    names = sorted(p.stem for p in shipped)
    assert names, f"no workflow in {WORKFLOWS_DIR}"
    assert sorted(templates.get(PACK_FOLDER, [])) == names
    for path in shipped:
        status, body = comfy.server.request(f"/api/workflow_templates/{PACK_FOLDER}/{path.name}")
        assert status == 200 and json.loads(body) == load_workflow(path)
        thumb = path.with_suffix(".jpg")
        status, body = comfy.server.request(f"/api/workflow_templates/{PACK_FOLDER}/{thumb.name}")
        assert status == 200, f"thumbnail {thumb.name} not served (HTTP {status})"
        assert body[:3] == b"\xff\xd8\xff", f"{thumb.name} is not a JPEG"


def test_models_are_listed_where_the_frontend_looks(comfy):
    # The "Missing Models" check of the web frontend: every models[] entry (and each loader's properties.models)
    # must be a file in the server's listing of its folder once installed, under exactly its name.
    folders = {f["name"] for f in comfy.server.get_json("/experiment/models")}
    assert MODEL_FOLDERS <= folders, f"frontend_rules.MODEL_FOLDERS names folders this server lacks: {MODEL_FOLDERS - folders}"
    checked = 0
    for path in WORKFLOWS:
        wf = load_workflow(path)
        entries = list(wf.get("models") or [])
        entries += [e for n in wf["nodes"] for e in (n.get("properties") or {}).get("models") or []]
        for entry in entries:
            assert entry["directory"] in folders, f"{path.name}: {entry} names a folder the server does not list"
            listed = {m["name"] for m in comfy.server.get_json(f"/experiment/models/{entry['directory']}")}
            assert entry["name"] in listed, f"{path.name}: {entry['name']} not in the listing {sorted(listed)}"
            checked += 1
    assert checked, "no models[] entry checked"


def test_loader_lists_offer_only_their_own_kind(comfy):
    # All tiny models of the templates sit side by side in models/mtvcrafter and models/vae.
    info = comfy.object_info

    def options(node, name):
        return spec_options(dict((n, s) for n, s, _ in ordered_inputs(info[node]))[name])["options"]

    dit, vae, tok = (options("MTVLoadDiT7B", "model"), options("MTVLoadCogVideoXVAE", "vae"),
                     options("MTVLoadMotionTokenizer", "tokenizer_file"))
    assert dit == ["MV-DiT/CogVideoX"], dit
    assert vae == ["cogvideox_vae_bf16.safetensors"], vae
    # the MV-DiT-17B folder and the native template's Wan2.1 I2V base (base + adapter); not the 7B folder, not the VAE
    assert options("MTVLoadDiT17B", "model") == ["MV-DiT/Wan-2-1", "wan2.1_i2v_480p_14B_fp16.safetensors"]
    assert options("MTVApplyMotionWan", "adapter") == ["MV-DiT/Wan-2-1"]  # only files holding motion layers
    assert options("MTVLoadDiT17B", "adapter") == ["(none)"]
    # (the edit/token graph below adds a tokenizer of its own)
    assert "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors" in tok, tok
    assert set(tok) <= {"WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors", "it_tiny_4dmot.safetensors"}, tok


def _problems(comfy, path: Path) -> list[str]:
    return comfy.assets["problems"].get(path.name, [])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_runs_end_to_end(comfy, path):
    assert not _problems(comfy, path), "assets for the workflow could not be made:\n" + "\n".join(_problems(comfy, path))
    workflow = load_workflow(path)
    info = comfy.object_info
    api = adapt(to_api(workflow, info), info, prefix=f"it/{path.stem}")
    stand_ins = sorted({v["class_type"] for v in api.values() if v["class_type"] in STAND_INS.values()})
    if stand_ins:  # native loaders that know only released sizes, replaced for the tiny files (stub_nodes)
        comfy.timings[f"stand_ins_{path.stem}"] = stand_ins
    result = comfy.server.run(api, timeout=600, workflow=workflow)
    comfy.timings[f"run_{path.stem}_s"] = round(result.seconds, 1)
    comfy.timings[f"nodes_{path.stem}_s"] = {f"{k}:{api[k]['class_type']}": v for k, v in result.node_seconds().items()
                                             if k in api}
    assert result.status == "success", f"{path.name}: {result.status}: {result.error_text()}\n{comfy.server.log_tail(3000)}"
    executed = {m["node"] for m in result.of_type("executed")} | set(result.outputs)
    comfy.timings[f"ws_previews_{path.stem}"] = result.binary_previews
    if any(v["class_type"] in SAMPLERS and v["inputs"].get("latent_preview") is True for v in api.values()):
        assert result.binary_previews > 0, "latent_preview is on but no preview frame reached the websocket"
    saves = [k for k, v in api.items() if v["class_type"] in ("SaveVideo",)]
    assert saves, f"{path.name} saves no video"
    for node_id in saves:
        files = saved_files(result.outputs, node_id)
        assert len(files) == 1, f"SaveVideo {node_id}: outputs {result.outputs.get(node_id)}"
        video = probe_video(comfy.output_dir / files[0]["subfolder"] / files[0]["filename"])
        expect = expected_video(api, node_id, comfy.input_dir)
        assert video["frames"] > 0 and video["codec"] == "h264"
        if "fps" in expect:
            assert video["fps"] == pytest.approx(expect["fps"], rel=1e-3), (video, expect)
        if "size" in expect:
            assert video["size"] == expect["size"], (video, expect)
        if "frames" in expect:
            assert video["frames"] == expect["frames"], (video, expect)
        comfy.timings[f"video_{path.stem}_{node_id}"] = video
        if any(api[n]["class_type"] == "ImageStitch" for n in upstream(api, node_id)):
            # the side-by-side strip: two or three panels of the same height next to each other
            assert video["size"][0] >= 2 * video["size"][1], (video, "is not a side-by-side strip")
    for node_id in (k for k, v in api.items() if v["class_type"] == "MTVMotionInfo"):
        text = (result.outputs.get(node_id) or {}).get("text") or []
        assert len(text) == 1 and "frames:" in text[0], f"Motion Info {node_id} showed {text!r}"
    # Every text our nodes compute reaches the canvas through Preview as Text (PreviewAny).
    expected_text = {"MTVEncodeMotion": "MPJPE", "MTVMotionInfo": "frames:", "MTVSaveMotion": ".npz"}
    for node_id in (k for k, v in api.items() if v["class_type"] == "PreviewAny"):
        src = source(api, node_id, "source")
        text = (result.outputs.get(node_id) or {}).get("text") or []
        assert src and len(text) == 1, f"Preview as Text {node_id} showed {text!r}"
        assert expected_text.get(api[src[0]]["class_type"], "") in text[0], (api[src[0]]["class_type"], text)
        comfy.timings.setdefault(f"text_{path.stem}", {})[api[src[0]]["class_type"]] = text[0][:200]
    previews = [k for k, v in api.items() if v["class_type"] == "PreviewImage"]
    for node_id in previews:
        assert node_id in executed, f"PreviewImage {node_id} did not run"
        images = (result.outputs.get(node_id) or {}).get("images") or []
        assert images, f"PreviewImage {node_id} produced no image"
        for image in images:
            assert comfy.server.view(image["filename"], image.get("subfolder", ""), image.get("type", "temp"))[:4] \
                == b"\x89PNG"


def _cancel_targets() -> list[Path]:
    """For each sampler, a workflow that samples with it; the smallest graph first (driving from a motion file)."""
    ranked = sorted(WORKFLOWS, key=lambda p: (0 if "motion_file" in p.stem else 1, p.name))
    targets = []
    for sampler in SAMPLERS:
        found = [p for p in ranked if any(n.get("type") == sampler for n in load_workflow(p)["nodes"])]
        assert found, f"no workflow with {sampler} among {[p.name for p in WORKFLOWS]}"
        targets.append(found[0])
    return targets


@pytest.mark.parametrize("path", _cancel_targets(), ids=lambda p: p.stem)
def test_cancel_during_sampling_then_next_prompt_runs(comfy, path):
    assert not _problems(comfy, path), "\n".join(_problems(comfy, path))
    info = comfy.object_info
    workflow = load_workflow(path)
    api = to_api(workflow, info)
    step_nodes = {k for k, v in api.items() if v["class_type"].startswith("MTV")
                  and any(s in v["inputs"] and not isinstance(v["inputs"][s], list) for s in STEP_INPUTS)}
    assert step_nodes, f"{path.name}: no node of ours with a steps input to cancel"
    long_api = adapt(api, info, overrides={**FAST_INPUTS, **{s: 200 for s in STEP_INPUTS}}, prefix="it/cancelled")
    api = adapt(api, info)
    sent: dict[str, float] = {}

    def interrupt_on_first_step(server, msg):
        data = msg.get("data", {})
        if msg.get("type") == "progress" and data.get("node") in step_nodes and not sent:
            sent["t"] = msg["_t"]
            status, _ = server.post_json("/interrupt", {})
            assert status == 200

    result = comfy.server.run(long_api, timeout=600, on_message=interrupt_on_first_step)
    assert sent, f"no progress message from the sampler {step_nodes}; messages: {[m['type'] for m in result.messages]}"
    assert result.status == "interrupted", f"{result.status}: {result.error_text()}"
    assert not result.of_type("execution_error")
    # no video of the interrupted sampler (the motion check strip does not wait for it and may be saved)
    for save_id in (k for k, v in api.items() if v["class_type"] == "SaveVideo" and step_nodes & set(upstream(api, k))):
        assert not saved_files(result.outputs, save_id), "an interrupted prompt saved a video"
    comfy.timings[f"cancel_run_{path.stem}_s"] = round(result.seconds, 1)
    comfy.timings[f"cancel_interrupt_after_{path.stem}_s"] = round(result.messages[-1]["_t"] - sent["t"], 2)
    comfy.timings[f"cancel_nodes_{path.stem}_s"] = result.node_seconds()
    # Next prompt, same models (cached loaders): runs normally.
    rerun = comfy.server.run(adapt(api, info, prefix="it/after_cancel"), timeout=600)
    assert rerun.status == "success", rerun.error_text()
    comfy.timings[f"after_cancel_run_{path.stem}_s"] = round(rerun.seconds, 1)
    comfy.timings[f"after_cancel_nodes_{path.stem}_s"] = rerun.node_seconds()


def test_motion_nodes_render_a_video_and_a_preview(comfy):
    # Our nodes between core ones, without any model: procedural motion -> skeleton frames -> mp4 + preview.
    info = comfy.object_info
    prompt = {
        "1": node_with_defaults(info, "MTVProceduralMotion", frames=17, fps=20.0),
        "2": node_with_defaults(info, "MTVRenderSkeleton", joints=["1", 0], width=64, height=48),
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 20.0}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "it/motion",
                                                      "format": "mp4", "codec": "h264"}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        # output nodes showing text in the UI
        "6": node_with_defaults(info, "MTVMotionInfo", joints=["1", 0]),
        "7": node_with_defaults(info, "MTVSaveMotion", joints=["1", 0], filename_prefix="it/motion"),
    }
    result = comfy.server.run(prompt, timeout=300)
    assert result.status == "success", result.error_text()
    files = saved_files(result.outputs, "4")
    video = probe_video(comfy.output_dir / files[0]["subfolder"] / files[0]["filename"])
    assert video == {"frames": 17, "fps": 20.0, "size": (64, 48), "codec": "h264"}
    assert len(result.outputs["5"]["images"]) == 17
    assert any(m.get("node") == "2" for m in result.of_type("progress")), "skeleton rendering reported no progress"
    text = result.outputs["6"]["text"]
    assert len(text) == 1 and "17" in text[0], text
    saved = sorted((comfy.output_dir / "it").glob("motion_*.npz"))
    assert len(saved) == 1 and saved[0].name in result.outputs["7"]["text"][0], result.outputs["7"]
    assert load_motion(saved[0]).num_frames == 17


def _edit_and_token_graph(info, tokenizer_file: str) -> dict:
    """Procedural motion through every edit node, then 4DMoT encode/decode, skeleton preview and info."""
    n = node_with_defaults
    return {
        "1": n(info, "MTVProceduralMotion", motion="walk", frames=70, fps=25.0),
        "2": n(info, "MTVTrimMotion", joints=["1", 0], start_frame=2, frame_count=65),
        "3": n(info, "MTVResampleMotion", joints=["2", 0], fps=20.0),
        "4": n(info, "MTVSmoothMotion", joints=["3", 0], sigma_frames=1.0),
        "5": n(info, "MTVMirrorMotion", joints=["4", 0]),
        "6": n(info, "MTVScaleMotion", joints=["5", 0], height_m=1.6),
        "7": n(info, "MTVRecenterMotion", joints=["6", 0]),
        "8": n(info, "MTVLoadMotionTokenizer", tokenizer_file=tokenizer_file, dtype="fp32", device="cpu"),
        "9": n(info, "MTVEncodeMotion", tokenizer=["8", 0], joints=["7", 0]),
        "10": n(info, "MTVDecodeMotionTokens", tokenizer=["8", 0], motion=["9", 0]),
        "11": n(info, "MTVRenderSkeleton", joints=["10", 0], width=64, height=64),
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}},
        "13": n(info, "MTVMotionInfo", joints=["9", 1]),
    }


def test_edit_and_token_nodes_run_in_one_graph(comfy):
    name = "it_tiny_4dmot.safetensors"
    # the server reads combo lists when it validates a prompt: the new file needs no /object_info refresh
    write_tiny_model("tokenizer", comfy.models_root / "mtvcrafter" / name)
    prompt = _edit_and_token_graph(comfy.object_info, name)
    result = comfy.server.run(prompt, timeout=300)
    assert result.status == "success", result.error_text()
    frames = len(result.outputs["12"]["images"])
    assert frames == 49, f"65 frames at 25 fps resampled to 20 fps (52-53 frames) decode on the 4k+1 grid to 49: {frames}"
    assert result.outputs["13"]["text"][0]


def test_17b_workflow_with_a_lora_between_loader_and_sampler(comfy):
    """The LoRA node in a real 17B run: ComfyUI loads the patched clone (its patches applied while it runs); keys
    that match no layer are listed once in the log."""
    import torch
    from safetensors.torch import save_file

    path = next(p for p in WORKFLOWS if any(n.get("type") == "MTVSampler17B" for n in load_workflow(p)["nodes"]))
    info = comfy.object_info
    api = adapt(to_api(load_workflow(path), info), info, prefix="it/lora17b")
    lora = comfy.models_root / "loras" / "it_tiny_wan_lora.safetensors"
    lora.parent.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 256, generator=gen),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(256, 4, generator=gen),
               "diffusion_model.blocks.1.ffn.2.diff_b": torch.randn(256, generator=gen),
               "diffusion_model.vace_blocks.0.proj.lora_up.weight": torch.zeros(1, 1)}, str(lora))
    sampler = next(k for k, v in api.items() if v["class_type"] == "MTVSampler17B")
    api["lora"] = node_with_defaults(info, "MTVLoraLoader17B", model=api[sampler]["inputs"]["model"],
                                     lora=lora.name, strength=0.8)
    api[sampler]["inputs"]["model"] = ["lora", 0]
    result = comfy.server.run(api, timeout=600)
    assert result.status == "success", f"{result.error_text()}\n{comfy.server.log_tail(3000)}"
    log = comfy.server.log_text()
    assert "1 keys match no layer of the model and were ignored: diffusion_model.vace_blocks.0.proj" in log
    assert "2 weight patches at strength 0.8" in log


def test_every_pack_node_is_exercised_by_the_integration_graphs():
    # A new node must join a shipped workflow or one of the graphs above, so it runs inside ComfyUI.
    source = "".join(p.read_text() for p in sorted(Path(__file__).parent.glob("test_*.py")))  # every graph file
    in_workflows = {n["type"] for p in WORKFLOWS_DIR.glob("*.json") for n in load_workflow(p)["nodes"]}
    missing = [c.define_schema().node_id for c in all_nodes()
               if c.define_schema().node_id not in in_workflows and f'"{c.define_schema().node_id}"' not in source]
    assert not missing, f"nodes no integration graph runs: {missing}"


def _path_to_output(info, start_types: list[str], ours: set[str], max_depth: int = 4):
    """Shortest chain of (node class, input name, output slot feeding it) from a node with ``start_types``
    outputs to an output node: [(slot, consumer, input), ...]."""
    sinks = ours | {"PreviewImage", "KSampler", "SaveLatent"}  # a MODEL reaches an output through KSampler
    frontier = [([], list(start_types))]
    for _ in range(max_depth):
        nxt = []
        for chain, types in frontier:
            for slot, t in enumerate(types):
                for name in sorted(sinks):
                    node = info[name]
                    for inp, spec, _ in ordered_inputs(node):
                        if spec[0] == t:
                            step = chain + [(slot, name, inp)]
                            if node.get("output_node"):
                                return step
                            nxt.append((step, node["output"]))
        frontier = nxt
    return None


def test_server_rejects_links_between_wrong_types(comfy):
    # "Custom types connect only where they should": ComfyUI's own validation refuses an IMAGE on every
    # MTV_* input of ours and every MTV_* output of ours on an IMAGE input.
    info = comfy.object_info
    ours = {k for k, v in info.items() if PACK_FOLDER in (v.get("python_module") or "")}
    checked, problems = 0, []
    for name in sorted(ours):
        node = info[name]
        for inp, spec, _ in ordered_inputs(node):
            if not str(spec[0]).startswith("MTV_"):
                continue
            prompt = {"src": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                        "color": 0}},
                      "x": node_with_defaults(info, name, **{inp: ["src", 0]})}
            chain = [] if node.get("output_node") else _path_to_output(info, node["output"], ours)
            if chain is None:
                problems.append(f"{name}: no path to an output node")
                continue
            prev = "x"
            for i, (slot, consumer, cin) in enumerate(chain):
                prompt[f"c{i}"] = node_with_defaults(info, consumer, **{cin: [prev, slot]})
                prev = f"c{i}"
            status, body = comfy.server.post_json("/prompt", {"prompt": prompt})
            errors = ((body or {}).get("node_errors") or {}).get("x", {}).get("errors", [])
            if status != 400 or not any(e.get("type") == "return_type_mismatch"
                                        and e.get("extra_info", {}).get("input_name") == inp for e in errors):
                problems.append(f"{name}.{inp} ({spec[0]}) accepted an IMAGE link: HTTP {status} {errors}")
            checked += 1
        for slot, t in enumerate(node["output"]):
            if not t.startswith("MTV_"):
                continue
            prompt = {"x": node_with_defaults(info, name),
                      "p": {"class_type": "PreviewImage", "inputs": {"images": ["x", slot]}}}
            status, body = comfy.server.post_json("/prompt", {"prompt": prompt})
            errors = ((body or {}).get("node_errors") or {}).get("p", {}).get("errors", [])
            if status != 400 or not any(e.get("type") == "return_type_mismatch" for e in errors):
                problems.append(f"{name} output {slot} ({t}) linked into PreviewImage.images: HTTP {status} {errors}")
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= len(ours), f"only {checked} links checked for {len(ours)} nodes"
