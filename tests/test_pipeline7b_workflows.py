"""The shipped 7B workflows are exactly what scripts/make_workflows.py builds from the current node schemas."""

from __future__ import annotations

import importlib.util
import json

from conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _edges(wf: dict) -> set[tuple[str, str, str]]:
    """(source type, target type, target input) of every link."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    return {(nodes[s]["type"], nodes[d]["type"], nodes[d]["inputs"][slot]["name"]) for _, s, _, d, slot, _ in wf["links"]}


def test_workflows_are_up_to_date(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path / "no_models"))  # widget values must not depend on local files
    assert _generator().main(["--check"]) == 0, capsys.readouterr().err


def _workflow(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text())


# The motion check strip (upstream's output strip): NLF preview | source skeleton | decoded skeleton -> mp4.
STRIP = [("MTVExtractSMPL", "ImageStitch", "image1"), ("MTVRenderSkeleton", "ImageStitch", "image2"),
         ("ImageStitch", "ImageStitch", "image1"), ("ImageStitch", "CreateVideo", "images"),
         ("MTVExtractSMPL", "MTVRenderSkeleton", "joints"), ("MTVEncodeMotion", "MTVRenderSkeleton", "joints"),
         ("MTVEncodeMotion", "PreviewAny", "source")]


def test_video_workflow_wiring():
    wf = _workflow("mtvcrafter_7b.json")
    edges = _edges(wf)
    for edge in [("LoadVideo", "GetVideoComponents", "video"), ("GetVideoComponents", "MTVExtractSMPL", "images"),
                 ("MTVExtractSMPL", "MTVEncodeMotion", "joints"), ("MTVEncodeMotion", "MTVSampler7B", "motion"),
                 ("LoadImage", "MTVSampler7B", "reference"), ("MTVSampler7B", "MTVDecode7B", "latents"),
                 ("MTVDecode7B", "CreateVideo", "images"), ("MTVDecode7B", "CreateVideo", "fps"),
                 ("CreateVideo", "SaveVideo", "video"), *STRIP]:
        assert edge in edges, edge
    sampler = next(n for n in wf["nodes"] if n["type"] == "MTVSampler7B")
    assert sampler["widgets_values"][:6] == [512, 512, 50, 3.0, 6666, "fixed"]
    # only single files the frontend can download; the DiT folder and NLF are in the note
    assert {m["directory"] for m in wf["models"]} == {"mtvcrafter", "vae"}
    note = next(n for n in wf["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    assert "MV-DiT/CogVideoX" in note and "nlf_l_multi_0.3.2.torchscript" in note
    assert all(n["properties"].get("cnr_id") == "mtvcrafter" for n in wf["nodes"] if n["type"].startswith("MTV"))
    strip = next(g for g in wf["groups"] if "motion check" in g["title"])
    assert "Optional" in strip["title"], "the strip is a group users can bypass"


def test_motion_file_workflow_wiring():
    edges = _edges(_workflow("mtvcrafter_7b_motion_file.json"))
    for edge in [("MTVLoadMotion", "MTVEncodeMotion", "joints"), ("MTVLoadMotion", "MTVMotionInfo", "joints"),
                 ("MTVMotionInfo", "PreviewAny", "source"), ("MTVMotionInfo", "CreateVideo", "fps"),
                 ("MTVRenderSkeleton", "ImageStitch", "image1"), ("MTVRenderSkeleton", "ImageStitch", "image2"),
                 ("MTVEncodeMotion", "MTVSampler7B", "motion"), ("MTVEncodeMotion", "PreviewAny", "source")]:
        assert edge in edges, edge


def test_motion_check_workflow_needs_no_dit():
    wf = _workflow("mtvcrafter_motion_check.json")
    edges = _edges(wf)
    for edge in [*STRIP, ("GetVideoComponents", "CreateVideo", "fps"), ("MTVExtractSMPL", "MTVMotionInfo", "joints"),
                 ("MTVMotionInfo", "PreviewAny", "source"), ("MTVExtractSMPL", "MTVSaveMotion", "joints"),
                 ("MTVSaveMotion", "PreviewAny", "source")]:
        assert edge in edges, edge
    types = {n["type"] for n in wf["nodes"]}
    assert not types & {"MTVLoadDiT7B", "MTVLoadCogVideoXVAE", "MTVSampler7B", "MTVDecode7B"}
    assert [m["name"] for m in wf["models"]] == ["WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors"]


def test_motion_preview_workflow_needs_no_model_files():
    # The no-model starter: procedural dance -> skeleton -> mp4 at 20 fps, motion info, mirrored preview.
    wf = json.loads((ROOT / "workflows" / "mtvcrafter_motion_preview.json").read_text())
    edges = _edges(wf)
    for edge in [("MTVProceduralMotion", "MTVRenderSkeleton", "joints"), ("MTVRenderSkeleton", "CreateVideo", "images"),
                 ("CreateVideo", "SaveVideo", "video"), ("MTVProceduralMotion", "MTVMotionInfo", "joints"),
                 ("MTVProceduralMotion", "MTVMirrorMotion", "joints"), ("MTVMirrorMotion", "MTVRenderSkeleton", "joints"),
                 ("MTVRenderSkeleton", "PreviewImage", "images"), ("MTVMotionInfo", "PreviewAny", "source")]:
        assert edge in edges, edge
    by_type = {n["type"]: n for n in wf["nodes"]}
    assert by_type["MTVProceduralMotion"]["widgets_values"][:3] == ["dance", 49, 20.0]
    assert by_type["CreateVideo"]["widgets_values"] == [20.0]
    assert not wf.get("models")
    loaders = {"MTVLoadMotion", "MTVLoadNLFModel", "MTVLoadMotionTokenizer", "MTVLoadDiT7B", "MTVLoadCogVideoXVAE",
               "LoadImage", "LoadVideo"}
    assert not loaders & set(by_type), "the starter must run without any model or input file"
    note = by_type["MarkdownNote"]["widgets_values"][0]
    assert all(name in note for name in ("mtvcrafter_7b", "mtvcrafter_7b_motion_file", "mtvcrafter_motion_check"))
