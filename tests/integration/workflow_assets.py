"""Everything a shipped workflow needs to run on CPU in a throw-away ComfyUI: tiny models, inputs.

* Model files: every ``models[]`` entry of every workflow, and every model our loaders name that
  ``models[]`` cannot list (the MV-DiT-7B folder, the NLF TorchScript; the note names them), is written
  as a tiny random checkpoint with the real key names, under its folder and name — so the workflow runs
  with its own widget values. Writers are the tiny-model test-support functions of ``mtv_core`` (and the
  NLF test double); an entry with no writer is reported, and the workflow's test fails naming it.
* Inputs: the files named by ``LoadImage``/``LoadVideo`` widgets (and motion files named by our nodes)
  are generated into ComfyUI's input folder: a small reference picture, a short synthetic video.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = ROOT / "workflows"

# The synthetic driving video / motion: short, but at least one 49-frame window where a node needs it.
INPUT_VIDEO_FRAMES = 49
INPUT_VIDEO_FPS = 20.0
INPUT_MOTION_FRAMES = 89  # two overlapping 49-frame windows
INPUT_VIDEO_SIZE = (96, 128)  # (H, W)
INPUT_IMAGE_SIZE = (160, 128)  # (H, W)
MOTION_SUFFIXES = (".npz", ".pkl", ".pickle")
# Our loaders: the tiny kind each one loads and the models folder its model goes to when models[] does not
# say (the folders the templates' notes name).
LOADERS = {"MTVLoadNLFModel": ("nlf", "nlf"), "MTVLoadMotionTokenizer": ("tokenizer", "mtvcrafter"),
           "MTVLoadDiT7B": ("dit7b", "mtvcrafter"), "MTVLoadCogVideoXVAE": ("video_vae", "vae"),
           "MTVApplyMotionWan": ("mvdit17b", "mtvcrafter"), "MTVLoadDiT17B": ("dit17b", "mtvcrafter")}
# Native Wan takes 4096-wide umT5 features and 1280-wide CLIP ViT-H features whatever the model's size: the tiny
# text encoder, CLIP tower and 17B models of both 17B templates are built at those widths.
TINY_WAN_TEXT_DIM = 4096
TINY_WAN_CLIP_DIM = 1280
STAND_INS_MODULE = Path(__file__).resolve().parent / "probe_pack" / "wan_stand_ins.py"


def workflow_files() -> list[Path]:
    """The workflows to run: ``workflows/*.json``, or those in ``MTV_WORKFLOWS_DIR`` (to try a draft)."""
    folder = Path(os.environ.get("MTV_WORKFLOWS_DIR", WORKFLOWS_DIR))
    return sorted(folder.glob("*.json"))


def load_workflow(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def classify_model(directory: str, name: str) -> str | None:
    """Which tiny writer a ``models[]`` entry needs, from its folder and file name."""
    n = name.lower().replace("-", "").replace("_", "")
    d = directory.lower()
    if "nlf" in n or d == "nlf":
        return "nlf"
    if any(k in n for k in ("4dmot", "vqvae", "tokenizer")):
        return "tokenizer"
    if d == "loras":
        return "wan_lora"
    if d in ("text_encoders", "clip"):
        return "wan_text_encoder"
    if d == "clip_vision":
        return "clip_vision"
    if ("vae" in n or d == "vae") and "wan" in n:
        return "wan_vae"
    if "vae" in n or d == "vae":
        return "video_vae"
    if "cogvideo" in n:
        return "dit7b"
    if "wan" in n and d in ("diffusion_models", "unet"):
        return "wan_i2v"  # a native Wan2.1 I2V transformer (UNETLoader)
    if "wan" in n:
        return "mvdit17b"  # MV-DiT-17B (the released folder or a file): the motion layers' source
    if d in ("diffusion_models", "unet") or "dit" in n:
        return "dit7b"
    return None


def write_tiny_model(kind: str, path: Path) -> None:
    """A tiny random checkpoint of ``kind`` at ``path`` (a file, or a diffusers folder when ``path`` has no suffix).

    The sizes fit together the way ``mtv_core.commands.animate.write_tiny_models`` pairs them: the 4DMoT's
    code size equals the tiny MV-DiT's motion token size.
    """

    path.parent.mkdir(parents=True, exist_ok=True)
    as_folder = path.suffix == ""
    if kind == "nlf":
        write_fake_nlf(path)
    elif kind == "tokenizer":
        from mtv_pack.mtv_core.dit.tiny import tiny_tokenizer_config_for_7b
        from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint

        write_tiny_checkpoint(path, config=tiny_tokenizer_config_for_7b(), seed=0)
    elif kind == "dit7b":
        from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b

        write_tiny_mvdit7b(path, seed=0, as_folder=as_folder)  # default: the tiny_mvdit7b_config the tokenizer fits
    elif kind == "video_vae":
        from mtv_pack.mtv_core.dit.vae import write_tiny_vae

        write_tiny_vae(path, seed=0, as_folder=as_folder)
    elif kind in ("wan_i2v", "mvdit17b"):
        # text width 4096: ComfyUI's native Wan always builds text_embedding for 4096-wide umT5 features
        from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config, write_tiny_mvdit17b

        config = tiny_mvdit17b_config(text_dim=TINY_WAN_TEXT_DIM)
        write_tiny_mvdit17b(path, seed=0, config=config, as_folder=as_folder,
                            part="base" if kind == "wan_i2v" else "full")
    elif kind == "wan_lora":
        from safetensors.torch import save_file

        from mtv_pack.mtv_core.dit.tiny_17b import tiny_lora_17b, tiny_mvdit17b_config

        save_file(tiny_lora_17b(tiny_mvdit17b_config(text_dim=TINY_WAN_TEXT_DIM), seed=1), str(path))
    elif kind == "wan_vae":
        from mtv_pack.mtv_core.wan.vae import write_tiny_wan_vae

        write_tiny_wan_vae(path, seed=0, naming="comfy")
    elif kind == "clip_vision":
        from mtv_pack.mtv_core.wan.image_encoder import write_tiny_clip_vision

        # width 1280: native Wan's image embedding takes ViT-H's features whatever the model's size
        write_tiny_clip_vision(path, seed=0, naming="comfy", hidden_size=TINY_WAN_CLIP_DIM, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2)
    elif kind == "dit17b":
        from mtv_pack.mtv_core.dit.tiny_17b import tiny_mvdit17b_config, write_tiny_mvdit17b

        # the widths of the tiny text encoder and CLIP tower below (native Wan's), so MTV Sampler (17B) takes the
        # native CONDITIONING / CLIP_VISION_OUTPUT of the template's own loaders
        config = tiny_mvdit17b_config(text_dim=TINY_WAN_TEXT_DIM, clip_dim=TINY_WAN_CLIP_DIM)
        write_tiny_mvdit17b(path, seed=0, config=config, as_folder=as_folder)
    elif kind == "umt5":  # our core's umT5 with a tokenizer folder (not one a template names)
        write_tiny_umt5_with_tokenizer(path)
    elif kind == "wan_text_encoder":
        # one umT5 layer of the width native Wan takes; vocab 384 holds the stand-in's byte tokens
        from mtv_pack.mtv_core.wan.text_encoder import write_tiny_umt5

        write_tiny_umt5(path, seed=0, naming="comfy", d_model=TINY_WAN_TEXT_DIM, d_kv=8, num_heads=2, d_ff=16,
                        num_layers=1, vocab_size=384)
    else:
        raise LookupError(f"no tiny writer for kind {kind!r}")
    if not path.exists():
        raise FileNotFoundError(f"the tiny {kind} writer did not create {path}")


def stand_ins():
    """``probe_pack/wan_stand_ins.py`` (loaded by path: the probe folder's ``__init__`` needs a running server)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mtv_test_wan_stand_ins", STAND_INS_MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_umt5_with_tokenizer(path: Path) -> None:
    """A tiny umT5 encoder in ComfyUI's naming carrying a tiny SentencePiece tokenizer as ``spiece_model``, as
    ComfyUI's umT5 files carry theirs."""
    import torch
    from safetensors.torch import load_file, save_file

    from mtv_pack.mtv_core.wan.text_encoder import tiny_umt5_config, write_tiny_umt5

    write_tiny_umt5(path, naming="comfy")
    state = load_file(str(path))
    spiece = stand_ins().train_tiny_spiece(vocab_size=min(200, tiny_umt5_config()["vocab_size"]))
    state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(state, str(path))


def write_fake_nlf(path: Path) -> None:
    """The NLF test double of the NLF tests (TorchScript, NLF's method names and outputs; one person).

    It declares itself CPU-capable, so the shipped video workflow runs unmodified on a CPU server.
    """
    from _nlf_fake import make_fake_file, person_row, scenario

    rows = [[person_row(20, 10, 40, 80, 0.9, (0.0, 100.0, 3000.0), 0)] for _ in range(256)]
    make_fake_file(path, scenario(rows), cpu_capable=True)


def write_input_image(path: Path, size: tuple[int, int] = INPUT_IMAGE_SIZE) -> None:
    """A plain reference picture: a figure on a gradient background."""
    from PIL import Image, ImageDraw

    from mtv_pack.mtv_core.video import to_uint8

    h, w = size
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    rgb = np.stack(np.broadcast_arrays(0.3 + 0.5 * x, 0.4 + 0.3 * y, 0.7 - 0.3 * x), axis=2)
    img = Image.fromarray(to_uint8(rgb))
    draw = ImageDraw.Draw(img)
    cx = w // 2
    draw.ellipse([cx - 10, 14, cx + 10, 36], fill=(230, 190, 160))
    draw.rectangle([cx - 14, 38, cx + 14, 96], fill=(40, 60, 150))
    draw.rectangle([cx - 12, 96, cx - 3, h - 12], fill=(30, 30, 40))
    draw.rectangle([cx + 3, 96, cx + 12, h - 12], fill=(30, 30, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_input_video(path: Path, frames: int = INPUT_VIDEO_FRAMES, fps: float = INPUT_VIDEO_FPS,
                      size: tuple[int, int] = INPUT_VIDEO_SIZE) -> None:
    """A short h264 clip whose frames the NLF test double reads as "one person here" (green 0.5, blue 1.0 on
    average; red changes per frame), so a CPU-capable NLF path would detect someone in every frame."""
    from mtv_pack.mtv_core.video import write_mp4

    h, w = size
    video = np.empty((frames, h, w, 3), dtype=np.uint8)
    video[..., 1] = 128
    video[..., 2] = 255
    for t in range(frames):
        video[t, ..., 0] = (40 + 4 * t) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, video, fps)


def write_input_motion(path: Path, frames: int = INPUT_MOTION_FRAMES) -> None:
    """A motion file named by a workflow: upstream's first sample motion cut to ``frames`` frames (two windows),
    as an upstream-format pickle (.pkl) or our .npz."""
    import pickle

    from conftest import reference_dir
    from mtv_pack.mtv_core.motion import load_motion, save_motion, trim

    sequence = trim(load_motion(reference_dir() / "motion" / "sampled_data.pkl"), 0, frames)
    if path.suffix in (".pkl", ".pickle"):
        pose = np.ascontiguousarray(sequence.joints_mm, dtype=np.float32)
        with open(path, "wb") as fh:
            pickle.dump([{"pose": pose, "video_length": int(pose.shape[0])}], fh)
        return
    save_motion(sequence, path)


def _node_widget_files(workflow: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, file name) for every input file a node's widgets name."""
    files: list[tuple[str, str]] = []
    for node in workflow.get("nodes", []):
        values = node.get("widgets_values")
        if not isinstance(values, list) or node.get("mode", 0) in (2, 4):
            continue
        ntype = node.get("type", "")
        if ntype in ("LoadImage", "LoadVideo") and values and isinstance(values[0], str):
            files.append((ntype, values[0]))
        elif ntype.startswith("MTV"):
            files.extend((ntype, v) for v in values if isinstance(v, str) and v.lower().endswith(MOTION_SUFFIXES))
    return files


def loader_models(workflow: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, directory, name) of the model each active loader of ours names (its first widget)."""
    listed = {entry.get("name"): entry.get("directory") for entry in workflow.get("models") or []}
    found = []
    for node in workflow.get("nodes", []):
        values = node.get("widgets_values")
        if node.get("type") in LOADERS and node.get("mode", 0) not in (2, 4) and isinstance(values, list) and values:
            kind, directory = LOADERS[node["type"]]
            found.append((kind, listed.get(values[0]) or directory, values[0]))
    return found


def prepare_workflow_assets(workflows: list[Path], models_root: Path, input_dir: Path) -> dict[str, Any]:
    """Write tiny models and input files for ``workflows``; returns what was written and what failed."""
    written: dict[str, str] = {}
    problems: dict[str, list[str]] = {}
    model_dirs: set[str] = set()
    for wf_path in workflows:
        wf = load_workflow(wf_path)
        issues = problems.setdefault(wf_path.name, [])
        for entry in wf.get("models", []) or []:
            directory, name = entry.get("directory", ""), entry.get("name", "")
            model_dirs.add(directory)
            target = models_root / directory / name
            key = f"{directory}/{name}"
            if target.exists():  # also one an earlier workflow listed
                continue
            kind = classify_model(directory, name)
            if kind is None:
                issues.append(f"models[] entry {key}: no tiny-model kind for it (tests/integration/workflow_assets.py)")
                continue
            try:
                write_tiny_model(kind, target)
                written[key] = kind
            except Exception as exc:
                issues.append(f"models[] entry {key} ({kind}): {type(exc).__name__}: {exc}")
        for kind, directory, name in loader_models(wf):
            model_dirs.add(directory)
            target = models_root / directory / name
            if target.exists():
                continue
            try:
                write_tiny_model(kind, target)
                written[f"{directory}/{name}"] = kind
            except Exception as exc:
                issues.append(f"model {directory}/{name} ({kind}): {type(exc).__name__}: {exc}")
        for ntype, fname in _node_widget_files(wf):
            target = input_dir / fname
            if target.exists():
                continue
            try:
                if ntype == "LoadImage":
                    write_input_image(target)
                elif ntype == "LoadVideo":
                    write_input_video(target)
                else:
                    write_input_motion(target)
                written[f"input/{fname}"] = ntype
            except Exception as exc:
                issues.append(f"input file {fname} for {ntype}: {type(exc).__name__}: {exc}")
    return {"written": written, "problems": problems, "model_dirs": sorted(d for d in model_dirs if d)}
