"""Write the example UI workflows (``workflows/*.json``, ComfyUI format 0.4) from the node schemas.

Widget order, defaults, socket types and output slots come from our node schemas (rendered like
``/object_info``) and the stored core-node snapshot, so the files stay consistent with the code:

    .venv/bin/python scripts/make_workflows.py          # rewrite workflows/mtvcrafter_*.json
    .venv/bin/python scripts/make_workflows.py --check  # exit 1 if a committed file differs

What the web frontend does with a template (tests/integration/frontend_rules.py) shapes the files:

* ``models[]`` (and each loader's ``properties.models``) lists only single ``.safetensors`` files on
  Hugging Face, each with its models folder and a URL whose file name is the listed name, so the
  "Missing Models" dialog stays away once they are installed and its Download button works. Model
  folders (MV-DiT-7B), NLF (a GitHub release, a ``.torchscript`` ComfyUI never lists) and SMPL are
  named in the note with their links.
* Text results reach the canvas through the core ``PreviewAny`` ("Preview as Text") node, wired to the
  nodes' STRING outputs, rather than through a web extension of ours drawing their ``text`` UI output:
  it is in ComfyUI 0.3.64 and 0.8.0, the frontend itself maintains how it shows text (selectable,
  copyable), and the pack carries no JavaScript against a frontend API that changes with every release.
  The price is one extra node per text, and a node that should show text needs a STRING output
  (outputs are only ever appended, see tests/test_node_contract.py).
* Nodes are laid out in columns; a node that grows when it shows a picture or video (inputs,
  previews, the sampler's latent preview) ends its column, so it never grows over another node.
  Groups enclose their nodes' title bars below their own title; ``extra.ds`` opens the view on the
  note and the first group.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402,F401  (imports the pack as ``mtv_pack``)
from mtv_pack.mtv_core.dit.pipeline_17b import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT  # noqa: E402
from integration.frontend_rules import GROUP_TITLE_HEIGHT, NODE_TITLE_HEIGHT  # noqa: E402
from integration.node_specs import (  # noqa: E402
    core_object_info,
    ordered_inputs,
    pack_object_info,
    pack_project,
    spec_default,
    spec_type,
    widget_slots,
)

OUT_DIR = ROOT / "workflows"
CORE_VERSION = "0.8.0"
PACK_ID = pack_project()["name"]  # the registry id: cnr_id of our nodes
PACK_VERSION = pack_project()["version"]

# Single files the frontend can check and download (frontend_rules.model_entry_problems).
MODELS = {
    "tokenizer": {
        "name": "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
        "url": "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/MTVCrafter/"
               "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
        "directory": "mtvcrafter",
    },
    "vae": {
        # the CogVideoX VAE as one bf16 file with diffusers key names (what MTVCrafter runs it in)
        "name": "cogvideox_vae_bf16.safetensors",
        "url": "https://huggingface.co/Kijai/CogVideoX-comfy/resolve/main/cogvideox_vae_bf16.safetensors",
        "directory": "vae",
    },
    # the Wan2.1 side models as ComfyUI's own Wan templates use them (Comfy-Org's repackaged single files)
    "umt5": {
        "name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
               "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "directory": "text_encoders",
    },
    "clip_vision": {
        "name": "clip_vision_h.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/"
               "clip_vision_h.safetensors",
        "directory": "clip_vision",
    },
    "wan_vae": {
        "name": "wan_2.1_vae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
               "wan_2.1_vae.safetensors",
        "directory": "vae",
    },
}
# Models the frontend cannot check or download: named in the note with their links.
DIT_FOLDER = "MV-DiT/CogVideoX"  # a diffusers folder (config.json + safetensors shards) in models/mtvcrafter
DIT17B_FOLDER = "MV-DiT/Wan-2-1"  # Wan config.json + weights in models/mtvcrafter
NLF_FILE = "nlf_l_multi_0.3.2.torchscript"

# Native Wan 2.1 files (the native template): single .safetensors files the frontend can check and download.
NATIVE_MODELS = {
    "wan_i2v": {
        "name": "wan2.1_i2v_480p_14B_fp16.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
               "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
        "directory": "diffusion_models",
    },
    "lora": {
        "name": "Wan2.1_I2V_14B_FusionX_LoRA.safetensors",
        "url": "https://huggingface.co/vrgamedevgirl84/Wan14BT2VFusioniX/resolve/main/FusionX_LoRa/"
               "Wan2.1_I2V_14B_FusionX_LoRA.safetensors",
        "directory": "loras",
    },
    # the Wan side models are the 17B template's own entries
    "umt5": MODELS["umt5"],
    "clip_vision": MODELS["clip_vision"],
    "wan_vae": MODELS["wan_vae"],
}
# The motion layers' source, a folder the frontend cannot list (the full MV-DiT-17B's): named in the native
# template's note.
MOTION_FOLDER_17B = DIT17B_FOLDER

MODEL_NOTE = """### Model files

Downloaded from the *Missing Models* dialog (or the links):

| Node | File | Folder |
|---|---|---|
| Load Motion Tokenizer | [WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors](https://huggingface.co/Kijai/WanVideo_comfy/tree/main/MTVCrafter) (or upstream `4DMoT/mp_rank_00_model_states.pt`) | `models/mtvcrafter/` |
| Load CogVideoX VAE | [cogvideox_vae_bf16.safetensors](https://huggingface.co/Kijai/CogVideoX-comfy/tree/main) (or the whole [vae folder](https://huggingface.co/THUDM/CogVideoX-5b/tree/main/vae) of CogVideoX-5b) | `models/vae/` |

Download yourself (the dialog cannot fetch these):

| Node | What | Folder |
|---|---|---|
%s"""

DIT_ROW = ("| Load MV-DiT (7B) | the folder [MV-DiT/CogVideoX](https://huggingface.co/yanboding/MTVCrafter/tree/main/MV-DiT/"
           "CogVideoX) (config.json + safetensors shards, 14.3 GB): "
           "`huggingface-cli download yanboding/MTVCrafter --include \"MV-DiT/CogVideoX/*\" --local-dir models/mtvcrafter` "
           "| `models/mtvcrafter/MV-DiT/CogVideoX/` |")
NLF_ROW = (f"| Load NLF Model | [{NLF_FILE}](https://github.com/isarandi/nlf/releases) (non-commercial licence; "
           "needs an NVIDIA GPU) | `models/nlf/` |")
SMPL_ROW = ("| Load Motion (only SMPL-parameter files) | `SMPL_NEUTRAL.pkl` without chumpy, from "
            "[smpl.is.tue.mpg.de](https://smpl.is.tue.mpg.de) (registration, non-commercial) | `models/mtvcrafter/smpl/` |")

NOTE_7B_VIDEO = """## MTVCrafter 7B: animate a picture with a driving video's motion

1. **Driving video -> 3D motion**: NLF extracts the person's SMPL joints (CUDA only).
2. **Motion tokens**: 4DMoT encodes them; *MPJPE* shows how well the tokens keep the motion.
3. **Motion check** (optional; select the group, Ctrl+B bypasses it): video with the NLF skeleton | NLF skeleton | the skeleton decoded from the tokens, i.e. what the DiT will follow.
4. **Animate**: MV-DiT-7B animates the reference image, 49-frame windows, 512 x 512, 50 steps, motion guidance 3 (upstream's settings; 24 GB GPU in bf16, *device = offload* frees its VRAM between runs).

Check the motion in seconds with the **mtvcrafter_motion_check** template before spending minutes here.

""" + MODEL_NOTE % "\n".join([DIT_ROW, NLF_ROW])

NOTE_7B_MOTION_FILE = """## MTVCrafter 7B: animate a picture with a saved motion file

1. **Motion file** from `ComfyUI/input` or `models/mtvcrafter/motions` (.npz saved by *Save Motion*, upstream .pkl, SMPL parameters, .npy); *Motion Info* describes it.
2. **Motion tokens**: 4DMoT encodes them; *MPJPE* shows how well the tokens keep the motion.
3. **Motion check** (optional; select the group, Ctrl+B bypasses it): the loaded skeleton | the skeleton decoded from the tokens (what the DiT will follow).
4. **Animate**: MV-DiT-7B animates the reference image, 49-frame windows, 512 x 512, 50 steps, motion guidance 3.

""" + MODEL_NOTE % "\n".join([DIT_ROW, SMPL_ROW])

DIT17B_ROW = ("| Load MV-DiT (17B) | the folder [MV-DiT/Wan-2-1](https://huggingface.co/yanboding/MTVCrafter/tree/main/MV-DiT/"
              "Wan-2-1) (config.json + weights, about 35 GB in bf16): "
              "`huggingface-cli download yanboding/MTVCrafter --include \"MV-DiT/Wan-2-1/*\" --local-dir models/mtvcrafter`; "
              "or a single .safetensors in `models/diffusion_models/` (bf16, fp8, scaled fp8), or a Wan2.1 I2V-14B base + "
              "the motion adapter written by `python -m mtv_core extract-adapter` | `models/mtvcrafter/MV-DiT/Wan-2-1/` |")

NOTE_17B = """## MTVCrafter 17B: animate a picture with a driving video's motion (Wan2.1)

1. **Driving video -> 3D motion**: NLF extracts the person's SMPL joints (CUDA only).
2. **Motion tokens**: 4DMoT encodes them; *MPJPE* shows how well the tokens keep the motion.
3. **Motion check** (optional; select the group, Ctrl+B bypasses it): video with the NLF skeleton | NLF skeleton | the skeleton decoded from the tokens, i.e. what the DiT will follow.
4. **Prompt and reference** with ComfyUI's own Wan encoders: umT5-XXL (*Load CLIP*, type **wan**) for the prompt and upstream's negative prompt, CLIP ViT-H (*CLIP Vision Encode*, crop **none** as upstream) for the reference.
5. **Animate**: MV-DiT-17B, 49-frame windows overlapping by 9, size from the reference's aspect (width = height = 0: upstream's 512-area buckets), 50 steps, text guidance 6 (upstream's settings; about 35 GB of weights in bf16, 17.5 GB in fp8, which ComfyUI loads partially where they do not fit). *motion_guidance* above 1 follows the motion harder at one more pass per step. With a distillation LoRA (*Load LoRA (MTV 17B)* between the loader and the sampler) use *cfg_mode* distilled and about 10 steps, as upstream with FusionX.

Check the motion in seconds with the **mtvcrafter_motion_check** template before spending minutes here.

### Model files

Downloaded from the *Missing Models* dialog (or the links):

| Node | File | Folder |
|---|---|---|
| Load Motion Tokenizer | [WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors](https://huggingface.co/Kijai/WanVideo_comfy/tree/main/MTVCrafter) (or upstream `4DMoT/mp_rank_00_model_states.pt`) | `models/mtvcrafter/` |
| Load CLIP (type wan) | [umt5_xxl_fp8_e4m3fn_scaled.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/text_encoders) (6.7 GB; or umt5_xxl_fp16, 11.4 GB) | `models/text_encoders/` |
| Load CLIP Vision | [clip_vision_h.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/clip_vision) (1.3 GB) | `models/clip_vision/` |
| Load VAE | [wan_2.1_vae.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/vae) (254 MB) | `models/vae/` |

Download yourself (the dialog cannot fetch these):

| Node | What | Folder |
|---|---|---|
""" + "\n".join([DIT17B_ROW, NLF_ROW])

NOTE_MOTION_CHECK = """## MTVCrafter: check a driving video's motion (seconds, before the DiT)

1. **Driving video -> 3D motion**: NLF extracts the person's SMPL joints (CUDA only); *Motion Info* describes them.
2. **Motion tokens**: 4DMoT encodes and decodes them; *MPJPE* is the reconstruction error in mm (below ~30 mm is good).
3. **Side by side** (as MTVCrafter's own output strip): video with the NLF skeleton | NLF skeleton | the skeleton decoded from the tokens, i.e. what the MV-DiT will follow. Saved as `output/video/MTVCrafter_motion_check_*.mp4`.
4. **Save the motion** (optional): copy the .npz to `ComfyUI/input` and drive **mtvcrafter_7b_motion_file** with it, without NLF.

Lost limbs or jitter in the middle panel: try *person_policy*, *fov_degrees* or Smooth Motion; a right panel far from the middle one: the motion is unusual for 4DMoT (see MPJPE).

### Model files

| Node | File | Folder |
|---|---|---|
| Load Motion Tokenizer | [WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors](https://huggingface.co/Kijai/WanVideo_comfy/tree/main/MTVCrafter) (the *Missing Models* dialog downloads it) | `models/mtvcrafter/` |
""" + NLF_ROW

PREVIEW_NOTE = """## MTVCrafter: motion preview (no model files)

A starter that needs **no downloads**: press **Run** to check that the pack is installed. It takes a few seconds, even on CPU.

- **Procedural Motion** builds a demo dance: 49 frames (one MTVCrafter window) at 20 fps, from the motion tokenizer's mean pose.
- **Render Skeleton** draws it with MTVCrafter's camera; **Create Video** + **Save Video** write `output/video/MTVCrafter_motion_preview_*.mp4`.
- **Motion Info** describes the motion (frames, fps, extent, depth, height); *Preview as Text* shows it.
- The optional group mirrors the motion (left and right swapped) and previews those frames.

Next, in the template browser under `mtvcrafter`:

- **mtvcrafter_motion_check**: driving video -> NLF 3D pose -> 4DMoT tokens, side by side, in seconds.
- **mtvcrafter_7b**: driving video -> NLF 3D pose -> MV-DiT 7B -> mp4.
- **mtvcrafter_7b_motion_file**: saved motion file (.npz / upstream .pkl) -> MV-DiT 7B -> mp4.
- **mtvcrafter_17b**: driving video -> NLF 3D pose -> MV-DiT 17B (Wan2.1, with a prompt) -> mp4.

Procedural Motion's `joints` output also fits their Encode Motion node, in place of the video or the motion file."""

GAP = 30  # between a node's bottom and the next node's title bar
COLUMN_GAP = 50
GROUP_PAD = 20
VIEW = {"scale": 0.65, "offset": [123, 192]}  # the note's title bar at about (80, 105) px: clear of the menus
BLUE, GREEN, GREY, PURPLE = "#3f789e", "#3f7e5a", "#555555", "#6a4f8f"


class Graph:
    """A UI workflow under construction: nodes with schema-ordered widgets, links recorded on both ends."""

    def __init__(self) -> None:
        ours = pack_object_info()
        self.infos = {**core_object_info(CORE_VERSION), **ours}
        self.ours = set(ours)
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def add(self, ntype: str, pos: tuple[float, float], size: tuple[int, int] = (320, 130), title: str | None = None,
            models: list[dict[str, str]] | None = None, **widgets: Any) -> dict[str, Any]:
        node_id = len(self.nodes) + 1
        pos, size = [round(pos[0]), round(pos[1])], list(size)
        if ntype == "MarkdownNote":
            node = {"id": node_id, "type": ntype, "pos": pos, "size": size, "flags": {},
                    "order": node_id - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                    "widgets_values": [widgets["text"]], "color": "#432", "bgcolor": "#653"}
            self.nodes.append(node)
            return node
        info = self.infos[ntype]
        slots = widget_slots(info)
        widget_names = {name for name, _ in slots}
        unknown = set(widgets) - widget_names
        if unknown:
            raise KeyError(f"{ntype} has no widget(s) {sorted(unknown)}")
        specs = {name: spec for name, spec, _ in ordered_inputs(info)}
        values: list[Any] = []
        for name, kind in slots:
            if kind == "control":
                values.append("fixed")
            elif kind == "upload":
                values.append("image")
            elif name in widgets:
                values.append(widgets[name])
            else:
                values.append(self._default(specs[name]))
        inputs = [{"name": name, "type": spec_type(spec), "link": None}
                  for name, spec, _ in ordered_inputs(info) if name not in widget_names]
        outputs = [{"name": name, "type": otype, "links": [], "slot_index": i}
                   for i, (otype, name) in enumerate(zip(info["output"], info.get("output_name") or info["output"]))]
        properties: dict[str, Any] = {"Node name for S&R": ntype}
        if ntype in self.ours:
            properties.update(cnr_id=PACK_ID, ver=PACK_VERSION)
        else:
            properties.update(cnr_id="comfy-core", ver=CORE_VERSION)
        if models:
            properties["models"] = models
        node = {"id": node_id, "type": ntype, "pos": pos, "size": size, "flags": {},
                "order": node_id - 1, "mode": 0, "inputs": inputs, "outputs": outputs, "properties": properties,
                "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    @staticmethod
    def _default(spec: list[Any]) -> Any:
        value = spec_default(spec)
        if value is not None:
            return value
        if spec_type(spec) == "COMBO":
            return ""  # a combo with no choice yet (e.g. no model file here)
        raise ValueError(f"no default for {spec}")

    def link(self, src: dict[str, Any], output: str, dst: dict[str, Any], input_name: str) -> None:
        link_id = len(self.links) + 1
        slot = next(i for i, o in enumerate(src["outputs"]) if o["name"] == output)
        ltype = src["outputs"][slot]["type"]
        dst_slot = next((i for i, inp in enumerate(dst["inputs"]) if inp["name"] == input_name), None)
        if dst_slot is None:  # a widget turned into an input socket
            spec = dict((n, s) for n, s, _ in ordered_inputs(self.infos[dst["type"]]))[input_name]
            dst["inputs"].append({"name": input_name, "type": spec_type(spec), "link": None,
                                  "widget": {"name": input_name}})
            dst_slot = len(dst["inputs"]) - 1
        if dst["inputs"][dst_slot]["type"] not in (ltype, "*"):
            raise TypeError(f"{src['type']}.{output} ({ltype}) -> {dst['type']}.{input_name} "
                            f"({dst['inputs'][dst_slot]['type']})")
        dst["inputs"][dst_slot]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], dst_slot, ltype])

    def show_text(self, src: dict[str, Any], output: str, pos: tuple[float, float], title: str,
                  size: tuple[int, int] = (320, 200)) -> dict[str, Any]:
        """A core Preview as Text node showing ``src.output`` on the canvas."""
        node = self.add("PreviewAny", pos, size=size, title=title)
        self.link(src, output, node, "source")
        return node

    def group(self, title: str, members: list[dict[str, Any]], color: str = BLUE) -> None:
        """A group around ``members`` (their title bars included), its own title bar above them."""
        x0 = min(n["pos"][0] for n in members) - GROUP_PAD
        y0 = min(n["pos"][1] - NODE_TITLE_HEIGHT for n in members) - GROUP_PAD - GROUP_TITLE_HEIGHT
        x1 = max(n["pos"][0] + n["size"][0] for n in members) + GROUP_PAD
        y1 = max(n["pos"][1] + n["size"][1] for n in members) + GROUP_PAD
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def workflow(self) -> dict[str, Any]:
        models: list[dict[str, str]] = []
        for node in self.nodes:
            for entry in node["properties"].get("models", []):
                if entry not in models:
                    models.append(entry)
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
            "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": VIEW["scale"], "offset": list(VIEW["offset"])}}, "version": 0.4,
            "models": models,
        }


class Column:
    """Nodes stacked top to bottom at ``x``; a node that grows with its preview must be the last one."""

    def __init__(self, graph: Graph, x: float, y: float = 0, width: int = 320) -> None:
        self.graph, self.x, self.y, self.width = graph, x, y, width
        self.closed = False

    def add(self, ntype: str, node_height: int, node_width: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """``ntype`` below the column's last node; ``kwargs`` are its widgets (which may be called width/height)."""
        if self.closed:
            raise ValueError(f"nothing may go below a growing preview ({ntype} at x={self.x})")
        node = self.graph.add(ntype, (self.x, self.y + NODE_TITLE_HEIGHT), size=(node_width or self.width, node_height),
                              **kwargs)
        self.y += NODE_TITLE_HEIGHT + node_height + GAP
        return node

    def last(self, ntype: str, node_height: int, node_width: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """The column's bottom node: one whose preview may grow it downwards."""
        node = self.add(ntype, node_height, node_width, **kwargs)
        self.closed = True
        return node

    @property
    def right(self) -> float:
        return self.x + self.width + COLUMN_GAP


def _columns(graph: Graph, x: float, y: float, widths: list[int]) -> list[Column]:
    cols = []
    for width in widths:
        cols.append(Column(graph, x, y, width))
        x += width + COLUMN_GAP
    return cols


GROUP_GAP = 2 * GROUP_PAD + 40  # between the columns of neighbouring groups
TOP = GROUP_TITLE_HEIGHT + GROUP_PAD  # first node's title bar below a group's title


def _note(g: Graph, text: str, height: int = 700, width: int = 600) -> float:
    g.add("MarkdownNote", (0, 0), size=(width, height), text=text)
    return width + GROUP_GAP


def _reference(col: Column) -> dict[str, Any]:
    """The reference image to animate, last in ``col`` (its preview grows it)."""
    return col.last("LoadImage", 380, title="Reference image", image="reference.png")


def _wan_vae(col: Column) -> dict[str, Any]:
    """The native Wan 2.1 VAE loader (Comfy-Org's single file)."""
    return col.add("VAELoader", 60, models=[MODELS["wan_vae"]], vae_name=MODELS["wan_vae"]["name"])


def _motion_info(g: Graph, col: Column, joints: tuple[dict, str]) -> tuple[dict, dict]:
    """Motion Info on ``joints`` in ``col``, its text shown below it; returns (info, text)."""
    info = col.add("MTVMotionInfo", 50)
    g.link(*joints, info, "joints")
    text = g.show_text(info, "info", (col.x, col.y + NODE_TITLE_HEIGHT), "Motion Info", size=(320, 220))
    return info, text


def _save_video(g: Graph, col: Column, images: tuple[dict, str], fps: tuple[dict, str] | float, prefix: str,
                height: int = 600, save_col: Column | None = None, title: str | None = None) -> list[dict]:
    """CreateVideo (``fps`` a linked output or a fixed number) in ``col`` -> SaveVideo last in ``save_col`` (default:
    ``col``; ``height`` 600 shows a 512 x 512 video at full width); returns both."""
    linked_fps = isinstance(fps, tuple)
    create = col.add("CreateVideo", 80, **({} if linked_fps else {"fps": fps}))
    g.link(*images, create, "images")
    if linked_fps:
        g.link(*fps, create, "fps")
    save = (save_col or col).last("SaveVideo", height, title=title, filename_prefix=prefix)
    g.link(create, "VIDEO", save, "video")
    return [create, save]


def _nlf(g: Graph, x: float) -> tuple[float, dict, dict, list[dict]]:
    """Group 1: LoadVideo -> GetVideoComponents -> NLF; returns (next x, components, extract, its members)."""
    c_video, c_nlf = _columns(g, x, TOP, [320, 320])
    video = c_video.last("LoadVideo", 600, title="Driving video", file="dance.mp4")  # room for a portrait video
    comps = c_nlf.add("GetVideoComponents", 70)
    g.link(video, "VIDEO", comps, "video")
    loader = c_nlf.add("MTVLoadNLFModel", 90, model_name=NLF_FILE)
    extract = c_nlf.add("MTVExtractSMPL", 260)
    g.link(loader, "nlf_model", extract, "nlf_model")
    g.link(comps, "images", extract, "images")
    g.link(comps, "fps", extract, "fps")
    return c_nlf.right + GROUP_GAP - COLUMN_GAP, comps, extract, [video, comps, loader, extract]


def _tokens(g: Graph, x: float, joints: tuple[dict, str]) -> tuple[float, dict, list[dict]]:
    """Group 2: tokenizer -> Encode Motion, MPJPE shown as text; returns (next x, encoder, members)."""
    col = Column(g, x, TOP, 360)
    tok = col.add("MTVLoadMotionTokenizer", 110, models=[MODELS["tokenizer"]], tokenizer_file=MODELS["tokenizer"]["name"])
    enc = col.add("MTVEncodeMotion", 130, node_width=320)
    g.link(tok, "tokenizer", enc, "tokenizer")
    g.link(*joints, enc, "joints")
    mpjpe = g.show_text(enc, "mpjpe", (col.x, col.y + NODE_TITLE_HEIGHT), "MPJPE: tokens vs. motion", size=(360, 110))
    return col.right + GROUP_GAP - COLUMN_GAP, enc, [tok, enc, mpjpe]


def _strip(g: Graph, x: float, first: tuple[dict, str] | None, source: tuple[dict, str], decoded: tuple[dict, str],
           fps: tuple[dict, str]) -> tuple[float, list[dict]]:
    """Side by side (upstream's output strip): [first panel |] source skeleton | decoded skeleton -> mp4."""
    c_draw, c_join, c_save = _columns(g, x, TOP, [320, 320, 440])
    src = c_draw.add("MTVRenderSkeleton", 150, title="Source skeleton")
    g.link(*source, src, "joints")
    dec = c_draw.add("MTVRenderSkeleton", 150, title="Decoded from the tokens")
    g.link(*decoded, dec, "joints")
    members = [src, dec]
    left = (src, "images")
    if first is not None:
        stitch = c_join.add("ImageStitch", 150, spacing_width=2)
        g.link(*first, stitch, "image1")
        g.link(src, "images", stitch, "image2")
        left = (stitch, "IMAGE")
        members.append(stitch)
    stitch = c_join.add("ImageStitch", 150, spacing_width=2)
    g.link(*left, stitch, "image1")
    g.link(dec, "images", stitch, "image2")
    video = _save_video(g, c_join, (stitch, "IMAGE"), fps, "video/MTVCrafter_motion_check", 480, c_save, "Motion check")
    return c_save.right + GROUP_GAP - COLUMN_GAP, members + [stitch, *video]


CHECK_TITLE = "3. Optional: motion check (Ctrl+B bypasses)"


def _tokens_and_check(g: Graph, x: float, joints: tuple[dict, str], first: tuple[dict, str] | None,
                      fps: tuple[dict, str], check_title: str = CHECK_TITLE, check_color: str = GREY) -> tuple[float, dict]:
    """Groups 2 and 3: motion tokens of ``joints``, then the strip checking them; returns (next x, encoder)."""
    x, enc, members = _tokens(g, x, joints)
    g.group("2. Motion tokens (4DMoT)", members)
    x, members = _strip(g, x, first, joints, (enc, "reconstructed"), fps)
    g.group(check_title, members, color=check_color)
    return x, enc


def _driving_video(g: Graph, x: float, check_title: str = CHECK_TITLE) -> tuple[float, dict, dict]:
    """Groups 1-3 of the driving-video templates: NLF, motion tokens, the optional motion check; returns (next x,
    video components, encoder)."""
    x, comps, extract, members = _nlf(g, x)
    g.group("1. Driving video -> 3D motion (NLF)", members)
    x, enc = _tokens_and_check(g, x, (extract, "joints"), (extract, "preview"), (comps, "fps"), check_title)
    return x, comps, enc


def _decode_mtv(g: Graph, col: Column, decoder: str, vae: tuple[dict, str], sampler: dict, prefix: str) -> list[dict]:
    """An MTV decoder of the sampler's latents -> CreateVideo at its fps -> SaveVideo, in ``col``."""
    dec = col.add(decoder, 60)
    g.link(*vae, dec, "vae")
    g.link(sampler, "latents", dec, "latents")
    return [dec, *_save_video(g, col, (dec, "images"), (dec, "fps"), prefix)]


def _animate(g: Graph, x: float, encoder: dict) -> list[dict]:
    """The 7B stage: loaders + reference -> sampler -> decode -> CreateVideo -> SaveVideo."""
    c_load, c_sample, c_out = _columns(g, x, TOP, [340, 340, 460])
    dit = c_load.add("MTVLoadDiT7B", 140, model=DIT_FOLDER)
    vae = c_load.add("MTVLoadCogVideoXVAE", 110, models=[MODELS["vae"]], vae=MODELS["vae"]["name"])
    ref = _reference(c_load)
    sampler = c_sample.last("MTVSampler7B", 540)  # room for its latent preview
    g.link(dit, "model", sampler, "model")
    g.link(vae, "vae", sampler, "vae")
    g.link(ref, "IMAGE", sampler, "reference")
    g.link(encoder, "motion", sampler, "motion")
    return [dit, vae, ref, sampler, *_decode_mtv(g, c_out, "MTVDecode7B", (vae, "vae"), sampler, "video/MTVCrafter")]


def _wan_inputs(g: Graph, c_text: Column, c_image: Column, prompt: str, negative_prompt: str, negative_title: str,
                clip_height: int, vision_encoder: str, **encoder_widgets: Any) -> tuple[dict, dict, dict, dict, dict]:
    """Wan's side-model conditioning: umT5 (Load CLIP, type wan) encoding the prompt and the negative prompt in
    ``c_text``; CLIP ViT-H and ``vision_encoder`` in ``c_image``, whose image the caller links once it has placed
    the reference. Returns (clip, positive, negative, clip vision loader, clip vision encoder)."""
    clip = c_text.add("CLIPLoader", clip_height, models=[MODELS["umt5"]], clip_name=MODELS["umt5"]["name"], type="wan")
    positive = c_text.add("CLIPTextEncode", 120, title="Prompt", text=prompt)
    negative = c_text.add("CLIPTextEncode", 120, title=negative_title, text=negative_prompt)
    g.link(clip, "CLIP", positive, "clip")
    g.link(clip, "CLIP", negative, "clip")
    vision = c_image.add("CLIPVisionLoader", 60, models=[MODELS["clip_vision"]], clip_name=MODELS["clip_vision"]["name"])
    encode = c_image.add(vision_encoder, 80, **encoder_widgets)
    g.link(vision, "CLIP_VISION", encode, "clip_vision")
    return clip, positive, negative, vision, encode


def _prompt_and_reference(g: Graph, x: float) -> tuple[float, dict, dict, dict, dict, dict, list[dict]]:
    """Group 4 of the 17B: native umT5 prompts and CLIP vision of the reference; returns (next x, positive,
    negative, clip vision output, reference image, clip vision loader, members)."""
    c_text, c_image = _columns(g, x, TOP, [360, 340])
    clip, positive, negative, vision, encode = _wan_inputs(
        g, c_text, c_image, DEFAULT_PROMPT, DEFAULT_NEGATIVE_PROMPT, "Negative prompt (upstream's)", 110,
        "CLIPVisionEncode", crop="none")
    ref = _reference(c_image)
    g.link(ref, "IMAGE", encode, "image")
    members = [clip, positive, negative, vision, encode, ref]
    return c_image.right + GROUP_GAP - COLUMN_GAP, positive, negative, encode, ref, vision, members


def _animate_17b(g: Graph, x: float, encoder: dict, positive: dict, negative: dict, clip_out: dict, ref: dict,
                 vision: dict) -> list[dict]:
    """The 17B stage: DiT + native Wan VAE -> sampler -> decode -> CreateVideo -> SaveVideo."""
    c_load, c_sample, c_out = _columns(g, x, TOP, [340, 360, 460])
    dit = c_load.add("MTVLoadDiT17B", 170, model=DIT17B_FOLDER)
    vae = _wan_vae(c_load)
    sampler = c_sample.last("MTVSampler17B", 700)  # room for its latent preview
    g.link(dit, "model", sampler, "model")
    g.link(vae, "VAE", sampler, "vae")
    g.link(positive, "CONDITIONING", sampler, "positive")
    g.link(negative, "CONDITIONING", sampler, "negative")
    g.link(clip_out, "CLIP_VISION_OUTPUT", sampler, "clip_vision_output")
    g.link(ref, "IMAGE", sampler, "reference")
    g.link(encoder, "motion", sampler, "motion")
    g.link(vision, "CLIP_VISION", sampler, "clip_vision")
    return [dit, vae, sampler, *_decode_mtv(g, c_out, "MTVDecode17B", (vae, "VAE"), sampler, "video/MTVCrafter_17b")]


def workflow_17b() -> dict[str, Any]:
    """Driving video -> NLF joints -> tokens; native umT5 / CLIP vision / Wan VAE -> 17B sampler -> mp4."""
    g = Graph()
    x = _note(g, NOTE_17B, height=980, width=640)
    x, _, enc = _driving_video(g, x)
    x, positive, negative, clip_out, ref, vision, members = _prompt_and_reference(g, x)
    g.group("4. Prompt and reference (ComfyUI's Wan encoders)", members, color=PURPLE)
    g.group("5. Animate the reference (MV-DiT-17B)", _animate_17b(g, x, enc, positive, negative, clip_out, ref, vision),
            color=GREEN)
    return g.workflow()


def video_workflow() -> dict[str, Any]:
    """Driving video -> NLF joints -> tokens -> (check strip) -> 7B sampler -> mp4."""
    g = Graph()
    x = _note(g, NOTE_7B_VIDEO, height=820)
    x, _, enc = _driving_video(g, x)
    g.group("4. Animate the reference (MV-DiT-7B)", _animate(g, x, enc), color=GREEN)
    return g.workflow()


def motion_file_workflow() -> dict[str, Any]:
    """Saved motion file -> tokens -> (check strip) -> 7B sampler -> mp4 (no NLF, no driving video)."""
    g = Graph()
    x = _note(g, NOTE_7B_MOTION_FILE, height=820)
    col = Column(g, x, TOP, 320)
    motion = col.add("MTVLoadMotion", 140, title="Motion file", motion_file="dance_motion.npz")
    info, text = _motion_info(g, col, (motion, "joints"))
    g.group("1. Motion file", [motion, info, text])
    x, enc = _tokens_and_check(g, col.right + GROUP_GAP - COLUMN_GAP, (motion, "joints"), None, (info, "fps"))
    g.group("4. Animate the reference (MV-DiT-7B)", _animate(g, x, enc), color=GREEN)
    return g.workflow()


def motion_check_workflow() -> dict[str, Any]:
    """Driving video -> NLF -> tokens -> side by side strip + MPJPE, in seconds: no DiT."""
    g = Graph()
    x = _note(g, NOTE_MOTION_CHECK, height=760)
    x, comps, extract, members = _nlf(g, x)
    col = Column(g, x - GROUP_GAP + COLUMN_GAP, TOP, 320)
    info, text = _motion_info(g, col, (extract, "joints"))
    g.group("1. Driving video -> 3D motion (NLF)", members + [info, text])
    x, _ = _tokens_and_check(g, col.right + GROUP_GAP - COLUMN_GAP, (extract, "joints"), (extract, "preview"),
                             (comps, "fps"), "3. Side by side: video | NLF skeleton | decoded tokens", GREEN)
    col = Column(g, x, TOP, 360)
    save = col.add("MTVSaveMotion", 60, filename_prefix="mtvcrafter/motion")
    g.link(extract, "joints", save, "joints")
    path = g.show_text(save, "path", (col.x, col.y + NODE_TITLE_HEIGHT), "Saved motion file", size=(360, 110))
    g.group("4. Optional: save the motion", [save, path], color=GREY)
    return g.workflow()


def motion_preview_workflow() -> dict[str, Any]:
    """Procedural motion -> skeleton frames -> mp4, motion info, mirrored preview: no model files at all."""
    g = Graph()
    x = _note(g, PREVIEW_NOTE, height=700, width=520)
    c_motion, c_draw, c_save = _columns(g, x, TOP, [320, 320, 380])
    motion = c_motion.add("MTVProceduralMotion", 160, title="Demo motion (no model needed)", motion="dance",
                          frames=49, fps=20.0)
    info, text = _motion_info(g, c_motion, (motion, "joints"))
    skel = c_draw.add("MTVRenderSkeleton", 150, title="Skeleton frames")
    g.link(motion, "joints", skel, "joints")
    video = _save_video(g, c_draw, (skel, "images"), 20.0, "video/MTVCrafter_motion_preview", 480, c_save)
    g.group("Procedural motion -> skeleton video", [motion, info, text, skel, *video])
    c_mirror, c_preview = _columns(g, c_save.right + GROUP_GAP - COLUMN_GAP, TOP, [320, 420])
    mirror = c_mirror.add("MTVMirrorMotion", 60)
    g.link(motion, "joints", mirror, "joints")
    skel_mirror = c_mirror.add("MTVRenderSkeleton", 150, title="Mirrored skeleton")
    g.link(mirror, "joints", skel_mirror, "joints")
    preview = c_preview.last("PreviewImage", 420)
    g.link(skel_mirror, "images", preview, "images")
    g.group("Optional: mirrored motion (left <-> right)", [mirror, skel_mirror, preview], color=GREY)
    return g.workflow()


NATIVE_NOTE = """## MTVCrafter 17B on ComfyUI's native Wan 2.1

The motion layers of MTVCrafter's MV-DiT-17B are added to the Wan 2.1 I2V-14B model you load with **Load Diffusion Model** (bf16, fp8 or scaled fp8; Wan2.1-Fun-14B-InP works too). Everything else is native: LoRA, KSampler, context windows, caches.

| Node | File | Put it in |
|---|---|---|
| Load Diffusion Model | [wan2.1_i2v_480p_14B_fp16.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/diffusion_models) (or an fp8 file) | `models/diffusion_models/` |
| MTV Apply Motion (Wan) | folder `MV-DiT/Wan-2-1` of [yanboding/MTVCrafter](https://huggingface.co/yanboding/MTVCrafter), or the 2 GB adapter `python -m mtv_core extract-adapter` writes from it | `models/mtvcrafter/` |
| LoraLoaderModelOnly | [Wan2.1_I2V_14B_FusionX_LoRA.safetensors](https://huggingface.co/vrgamedevgirl84/Wan14BT2VFusioniX) (upstream's default; without it: bypass the node, cfg 6, 50 steps) | `models/loras/` |
| Load CLIP (wan) | [umt5_xxl_fp8_e4m3fn_scaled.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/text_encoders) | `models/text_encoders/` |
| Load CLIP Vision | [clip_vision_h.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/clip_vision) | `models/clip_vision/` |
| Load VAE | [wan_2.1_vae.safetensors](https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files/vae) | `models/vae/` |
| Load Motion Tokenizer | [WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors](https://huggingface.co/Kijai/WanVideo_comfy/tree/main/MTVCrafter) | `models/mtvcrafter/` |
%s
Upstream's settings: 49 frames (13 latent frames, one motion window), shift 5, with the FusionX LoRA 10 steps at cfg 1 (without it cfg 6, 50 steps), 20 fps. **CLIP Vision Encode (MTV Wan)** gives the CLIP features exactly as MTVCrafter computed them (native CLIP Vision Encode resizes with antialiasing: ~2 %% off). For longer motion, chain **Next Window (MTV Wan)** per 49-frame window."""


def native_workflow() -> dict[str, Any]:
    """Driving video -> NLF -> tokens; native Wan 2.1 I2V + LoRA + MTV Apply Motion -> KSampler -> mp4."""
    g = Graph()
    x = _note(g, NATIVE_NOTE % NLF_ROW, height=900, width=760)
    x, comps, enc = _driving_video(g, x, "Optional: motion check (Ctrl+B bypasses)")

    col = Column(g, x, TOP, 360)
    unet = col.add("UNETLoader", 90, models=[NATIVE_MODELS["wan_i2v"]], unet_name=NATIVE_MODELS["wan_i2v"]["name"])
    lora = col.add("LoraLoaderModelOnly", 90, models=[NATIVE_MODELS["lora"]], lora_name=NATIVE_MODELS["lora"]["name"],
                   strength_model=1.0)
    g.link(unet, "MODEL", lora, "model")
    shift = col.add("ModelSamplingSD3", 60, title="Shift 5 (upstream)", shift=5.0)
    g.link(lora, "MODEL", shift, "model")
    apply = col.add("MTVApplyMotionWan", 250, adapter=MOTION_FOLDER_17B)
    g.link(shift, "MODEL", apply, "model")
    g.link(enc, "motion", apply, "motion")
    g.group("3. Wan 2.1 I2V + LoRA + MTV motion", [unet, lora, shift, apply])

    c_text, c_image, c_ref = _columns(g, col.right + GROUP_GAP - COLUMN_GAP, TOP, [360, 340, 340])
    clip, pos, neg, vision, clip_enc = _wan_inputs(
        g, c_text, c_image, DEFAULT_PROMPT, DEFAULT_NEGATIVE_PROMPT, "Negative prompt", 90, "MTVWanClipVisionEncode")
    vae = _wan_vae(c_image)
    i2v = c_image.add("WanImageToVideo", 230, width=512, height=512, length=49)
    ref = _reference(c_ref)
    g.link(ref, "IMAGE", clip_enc, "image")
    g.link(pos, "CONDITIONING", i2v, "positive")
    g.link(neg, "CONDITIONING", i2v, "negative")
    g.link(vae, "VAE", i2v, "vae")
    g.link(clip_enc, "clip_vision_output", i2v, "clip_vision_output")
    g.link(ref, "IMAGE", i2v, "start_image")
    g.group("4. Text, reference image and CLIP (upstream's y and clip_fea)",
            [clip, pos, neg, vision, clip_enc, vae, i2v, ref])

    c_sample, c_out = _columns(g, c_ref.right + GROUP_GAP - COLUMN_GAP, TOP, [340, 460])
    sampler = c_sample.last("KSampler", 520, seed=42, steps=10, cfg=1.0, sampler_name="euler",
                            scheduler="simple")  # room for its latent preview
    g.link(apply, "model", sampler, "model")
    g.link(i2v, "positive", sampler, "positive")
    g.link(i2v, "negative", sampler, "negative")
    g.link(i2v, "latent", sampler, "latent_image")
    decode = c_out.add("VAEDecode", 50)
    g.link(sampler, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    video = _save_video(g, c_out, (decode, "IMAGE"), (comps, "fps"), "video/MTVCrafter_17B")
    g.group("5. Sample and decode (10 steps, cfg 1 with the FusionX LoRA)", [sampler, decode, *video], color=GREEN)
    return g.workflow()


WORKFLOWS = {"mtvcrafter_7b.json": video_workflow, "mtvcrafter_7b_motion_file.json": motion_file_workflow,
             "mtvcrafter_17b.json": workflow_17b, "mtvcrafter_motion_check.json": motion_check_workflow,
             "mtvcrafter_motion_preview.json": motion_preview_workflow,
             "mtvcrafter_17b_native.json": native_workflow}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: workflows/)")
    args = parser.parse_args(argv)
    stale = []
    for name, build in WORKFLOWS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date: {', '.join(stale)}; run scripts/make_workflows.py\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
