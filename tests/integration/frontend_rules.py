"""What ComfyUI's web frontend (1.35, shipped with 0.8.0) and its server do with a workflow, as plain rules.

Read from the built frontend (``comfyui_frontend_package``: ``app.loadGraphData``, the
``MissingModelsWarning`` dialog, LiteGraph's node and group drawing) and from ComfyUI 0.8.0's
``app/model_manager.py``; checked in a real browser by ``test_browser.py``. The static workflow checks
apply them without ComfyUI, so a template cannot regress into the "Missing Models" dialog, a dead Download
button, overlapping nodes or a view that opens on empty canvas.

Missing models: on load the frontend collects every ``models[]`` entry (and each node's
``properties.models`` entry whose name is one of its widget values), asks the server for the listing of
the entry's ``directory`` (``/experiment/models/<directory>``) and reports the entry missing unless the
listing holds a file whose relative path equals ``name``. The listing walks the folder recursively,
skips hidden files and folders and ``.git``, and keeps only ``folder_paths.supported_pt_extensions``
(so a ``.torchscript`` file or a diffusers folder is never listed). A directory the server does not
know makes an "Invalid directory" entry. The dialog's Download button works only for URLs starting with
an allowed prefix and names ending in ``.safetensors``/``.sft``; the browser saves the file under the
URL's last path segment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DOWNLOAD_PREFIXES = ("https://civitai.com/", "https://huggingface.co/", "http://localhost:")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft")
# ComfyUI's folder_paths.supported_pt_extensions: the only suffixes /experiment/models/<folder> lists.
LISTED_SUFFIXES = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
# Model folders /experiment/models reports in 0.3.64 and 0.8.0 (legacy names such as unet/clip are not among
# them), plus the two this pack registers.
CORE_MODEL_FOLDERS = {"checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
                      "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
                      "upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders"}
PACK_MODEL_FOLDERS = {"mtvcrafter", "nlf"}
MODEL_FOLDERS = CORE_MODEL_FOLDERS | PACK_MODEL_FOLDERS

# LiteGraph geometry (graph units): a node's title bar sits above its pos; a group's title bar is
# font_size * 1.4 high at its top.
NODE_TITLE_HEIGHT = 30
GROUP_TITLE_HEIGHT = 34  # 24 px font x 1.4, rounded up
# Nodes that grow after a run or once their input is chosen (image/video previews, the sampler's latent
# preview): nothing may sit below them.
GROWING_NODES = {"LoadImage", "LoadVideo", "PreviewImage", "SaveImage", "SaveVideo", "SaveWEBM", "SaveAnimatedWEBP",
                 "MTVSampler7B", "MTVSampler17B"}
# The part of the window the canvas shows, (left, top, right margin, bottom margin) in px: the side bar on
# the left, the tab bar, the workflow name and the Run button on top.
CANVAS_MARGINS = (70, 100, 10, 10)
WINDOW_SIZES = ((1280, 800), (1920, 1080))


def listed_names(folder: Path) -> list[str]:
    """What ``/experiment/models/<key>`` lists for one folder: relative paths of the model files below it."""
    names = []
    for dirpath, subdirs, filenames in os.walk(folder, followlinks=True):
        subdirs[:] = [d for d in subdirs if d != ".git" and not d.startswith(".")]
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(LISTED_SUFFIXES):
                names.append(os.path.relpath(os.path.join(dirpath, filename), folder))
    return sorted(names)


def listing_holds(name: str) -> bool:
    """Whether the file ``name`` would be listed under that name once installed in its models folder."""
    if not name or os.path.isabs(name) or ".." in Path(name).parts:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        return name in listed_names(Path(tmp))


def model_entry_problems(entry: dict[str, Any]) -> list[str]:
    """Why the frontend would report this ``models[]`` entry missing although installed, or could not download it."""
    name, url, directory = entry.get("name") or "", entry.get("url") or "", entry.get("directory") or ""
    label = f"{directory}/{name}"
    problems = []
    if directory not in MODEL_FOLDERS:
        problems.append(f"{label}: {directory!r} is not a models folder the server lists (the dialog says "
                        "'Invalid directory')")
    if not Path(name).suffix or name.endswith(("/", "\\")):
        problems.append(f"{label}: names a folder; the frontend checks and downloads single files only (name the "
                        "folder in the note)")
    elif not name.lower().endswith(LISTED_SUFFIXES):
        problems.append(f"{label}: ComfyUI's model listing never lists {Path(name).suffix} files, so it is always "
                        "missing (name it in the note)")
    elif "/" in name or "\\" in name:
        problems.append(f"{label}: a path in a sub-folder is listed with the OS separator, so it never matches on "
                        "every OS; use a file directly in the folder")
    elif not listing_holds(name):
        problems.append(f"{label}: not in the folder's listing once installed (hidden file?)")
    if not url.startswith(DOWNLOAD_PREFIXES):
        problems.append(f"{label}: Download is refused for {url!r}: not on an allowed host {DOWNLOAD_PREFIXES}")
    if not name.endswith(DOWNLOAD_SUFFIXES):
        problems.append(f"{label}: Download is refused: only names ending in {DOWNLOAD_SUFFIXES}")
    path = urlparse(url).path
    if "/tree/" in path or "/blob/" in path:
        problems.append(f"{label}: {url} is a web page, not a file (use .../resolve/...)")
    elif url and Path(path).name != Path(name).name:
        problems.append(f"{label}: the browser saves {url} as {Path(path).name!r}, not as {Path(name).name!r}")
    return problems


def node_box(node: dict[str, Any]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a node as drawn, title bar included."""
    x, y = node["pos"]
    w, h = node["size"]
    return x, y - NODE_TITLE_HEIGHT, x + w, y + h


def overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_problems(wf: dict[str, Any]) -> list[str]:
    """Overlapping nodes, nodes below a growing preview, groups that hide their title or cut a node."""
    problems = []
    nodes = wf.get("nodes", [])
    boxes = {n["id"]: node_box(n) for n in nodes}
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if overlap(boxes[a["id"]], boxes[b["id"]]):
                problems.append(f"nodes {a['id']} ({a['type']}) and {b['id']} ({b['type']}) overlap")
    for a in nodes:
        if a["type"] not in GROWING_NODES:
            continue
        ax0, _, ax1, ay1 = boxes[a["id"]]
        for b in nodes:
            bx0, by0, bx1, _ = boxes[b["id"]]
            if b is not a and bx0 < ax1 and ax0 < bx1 and by0 >= ay1:
                problems.append(f"node {b['id']} ({b['type']}) sits below {a['id']} ({a['type']}), whose preview "
                                "grows it downwards")
    for group in wf.get("groups", []):
        gx, gy, gw, gh = group["bounding"]
        title = (gx, gy, gx + gw, gy + GROUP_TITLE_HEIGHT)
        body = (gx, gy, gx + gw, gy + gh)
        for n in nodes:
            box = boxes[n["id"]]
            inside = body[0] <= box[0] and box[2] <= body[2] and body[1] <= box[1] and box[3] <= body[3]
            if overlap(box, title):
                problems.append(f"group {group['title']!r}: node {n['id']} ({n['type']}) covers its title")
            elif overlap(box, body) and not inside:
                problems.append(f"group {group['title']!r}: node {n['id']} ({n['type']}) is cut by its border")
    return problems


def screen_rect(box: tuple[float, float, float, float], ds: dict[str, Any]) -> tuple[float, float, float, float]:
    """A graph-space box in window pixels for the view ``ds`` (LiteGraph: screen = (pos + offset) * scale)."""
    (ox, oy), s = ds["offset"], ds["scale"]
    return (box[0] + ox) * s, (box[1] + oy) * s, (box[2] + ox) * s, (box[3] + oy) * s


def view_problems(wf: dict[str, Any]) -> list[str]:
    """The view the template opens with (``extra.ds``) must show the note and the first group whole."""
    ds = (wf.get("extra") or {}).get("ds")
    if not ds:
        return ["extra.ds is missing: the view would open wherever the last workflow was"]
    notes = [n for n in wf.get("nodes", []) if n["type"] in ("MarkdownNote", "Note")]
    problems = []
    for width, height in WINDOW_SIZES:
        left, top = CANVAS_MARGINS[0], CANVAS_MARGINS[1]
        right, bottom = width - CANVAS_MARGINS[2], height - CANVAS_MARGINS[3]
        for note in notes[:1]:
            x0, y0, x1, y1 = screen_rect(node_box(note), ds)
            if not (left <= x0 and x1 <= right and top <= y0 and y1 <= bottom):
                problems.append(f"at {width}x{height} the note is not fully in view: {x0:.0f},{y0:.0f} - {x1:.0f},"
                                f"{y1:.0f} px")
        for group in wf.get("groups", [])[:1]:
            gx, gy, gw, gh = group["bounding"]
            x0, y0, x1, y1 = screen_rect((gx, gy, gx + gw, gy + gh), ds)
            if not (left <= x0 and x1 <= right and top <= y0 and y1 <= bottom):
                problems.append(f"at {width}x{height} the first group is not fully in view: {x0:.0f},{y0:.0f} - "
                                f"{x1:.0f},{y1:.0f} px")
    return problems
