"""Write the example UI workflows (``workflows/*.json``, ComfyUI format 0.4) from the node schemas.

Widget order, defaults, socket types and output slots come from our node schemas (rendered like
``/object_info``) and the stored core-node snapshot, so the files stay consistent with the code:

    .venv/bin/python scripts/make_workflows.py          # rewrite workflows/mtvcrafter_*.json
    .venv/bin/python scripts/make_workflows.py --check  # exit 1 if a committed file differs

Model widgets name the files/folders listed in each workflow's ``models[]`` (download URL + models folder);
the motion preview starter loads no model, so its ``models[]`` is empty.
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

MODELS = {
    "nlf": {
        "name": "nlf_l_multi_0.3.2.torchscript",
        "url": "https://github.com/isarandi/nlf/releases/download/v0.3.2/nlf_l_multi_0.3.2.torchscript",
        "directory": "nlf",
    },
    "tokenizer": {
        "name": "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
        "url": "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/MTVCrafter/"
               "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors",
        "directory": "mtvcrafter",
    },
    "dit": {
        # a diffusers folder (config.json + shards): download the whole folder
        "name": "MV-DiT/CogVideoX",
        "url": "https://huggingface.co/yanboding/MTVCrafter/tree/main/MV-DiT/CogVideoX",
        "directory": "mtvcrafter",
    },
    "vae": {
        "name": "cogvideox5b_vae.safetensors",
        "url": "https://huggingface.co/THUDM/CogVideoX-5b/resolve/main/vae/diffusion_pytorch_model.safetensors",
        "directory": "vae",
    },
}

NATIVE_MODELS = {
    "wan_i2v": {
        "name": "wan2.1_i2v_480p_14B_fp16.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
               "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors",
        "directory": "diffusion_models",
    },
    "motion": {
        # the released MV-DiT-17B folder: MTV Apply Motion reads only its motion layers
        "name": "MV-DiT/Wan-2-1",
        "url": "https://huggingface.co/yanboding/MTVCrafter/tree/main/MV-DiT/Wan-2-1",
        "directory": "mtvcrafter",
    },
    "lora": {
        "name": "Wan2.1_I2V_14B_FusionX_LoRA.safetensors",
        "url": "https://huggingface.co/vrgamedevgirl84/Wan14BT2VFusioniX/resolve/main/FusionX_LoRa/"
               "Wan2.1_I2V_14B_FusionX_LoRA.safetensors",
        "directory": "loras",
    },
    "umt5": {
        "name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
               "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "directory": "text_encoders",
    },
    "clip_vision": {
        "name": "clip_vision_h.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
               "clip_vision/clip_vision_h.safetensors",
        "directory": "clip_vision",
    },
    "wan_vae": {
        "name": "wan_2.1_vae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
               "wan_2.1_vae.safetensors",
        "directory": "vae",
    },
}

DOWNLOAD_NOTE = """## MTVCrafter 7B: models

| Node | File | Put it in |
|---|---|---|
| Load MV-DiT (7B) | folder `MV-DiT/CogVideoX` of [yanboding/MTVCrafter](https://huggingface.co/yanboding/MTVCrafter) (config.json + safetensors shards, ~14 GB) | `models/mtvcrafter/MV-DiT/CogVideoX/` |
| Load CogVideoX VAE | [CogVideoX-5b vae/diffusion_pytorch_model.safetensors](https://huggingface.co/THUDM/CogVideoX-5b/tree/main/vae), saved as `cogvideox5b_vae.safetensors` (or the whole `vae` folder) | `models/vae/` |
| Load Motion Tokenizer | [WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors](https://huggingface.co/Kijai/WanVideo_comfy/tree/main/MTVCrafter) or upstream `4DMoT/mp_rank_00_model_states.pt` | `models/mtvcrafter/` |
%s
`huggingface-cli download yanboding/MTVCrafter --include "MV-DiT/CogVideoX/*" --local-dir models/mtvcrafter`

Motion longer than 49 frames is generated in overlapping 49-frame windows (see the README). 512 x 512, 50 steps and motion guidance 3 are upstream's settings; upstream reports the 7B model running on one 24 GB RTX 4090 in bf16 (device = offload frees its VRAM between runs)."""

NLF_ROW = ("| Load NLF Model | [nlf_l_multi_0.3.2.torchscript](https://github.com/isarandi/nlf/releases) "
           "(non-commercial licence, CUDA only) | `models/nlf/` |\n")


class Graph:
    """A UI workflow under construction: nodes with schema-ordered widgets, links recorded on both ends."""

    def __init__(self) -> None:
        ours = pack_object_info()
        self.infos = {**core_object_info(CORE_VERSION), **ours}
        self.ours = set(ours)
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def add(self, ntype: str, pos: tuple[int, int], size: tuple[int, int] = (320, 130), title: str | None = None,
            models: list[dict[str, str]] | None = None, **widgets: Any) -> dict[str, Any]:
        node_id = len(self.nodes) + 1
        if ntype == "MarkdownNote":
            node = {"id": node_id, "type": ntype, "pos": list(pos), "size": list(size), "flags": {},
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
        node = {"id": node_id, "type": ntype, "pos": list(pos), "size": list(size), "flags": {},
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
        if dst["inputs"][dst_slot]["type"] != ltype:
            raise TypeError(f"{src['type']}.{output} ({ltype}) -> {dst['type']}.{input_name} "
                            f"({dst['inputs'][dst_slot]['type']})")
        dst["inputs"][dst_slot]["link"] = link_id
        src["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, src["id"], slot, dst["id"], dst_slot, ltype])

    def group(self, title: str, bounding: tuple[int, int, int, int], color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def workflow(self, models: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
            "links": self.links, "groups": self.groups, "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}}, "version": 0.4, "models": models,
        }


def _generation(g: Graph, motion_node: dict[str, Any], joints_output: str, x: int) -> None:
    """Tokenizer -> sampler -> decode -> CreateVideo -> SaveVideo, and the skeleton preview branch."""
    tok = g.add("MTVLoadMotionTokenizer", (x, 420), models=[MODELS["tokenizer"]],
                tokenizer_file=MODELS["tokenizer"]["name"])
    enc = g.add("MTVEncodeMotion", (x + 360, 300), size=(320, 150))
    g.link(tok, "tokenizer", enc, "tokenizer")
    g.link(motion_node, joints_output, enc, "joints")
    skel = g.add("MTVRenderSkeleton", (x + 360, 560), size=(320, 180), title="Skeleton preview (what the DiT follows)")
    g.link(enc, "reconstructed", skel, "joints")
    preview = g.add("PreviewImage", (x + 360, 790), size=(320, 300))
    g.link(skel, "images", preview, "images")

    dit = g.add("MTVLoadDiT7B", (x + 720, 0), size=(340, 150), models=[MODELS["dit"]], model=MODELS["dit"]["name"])
    vae = g.add("MTVLoadCogVideoXVAE", (x + 720, 200), size=(340, 110), models=[MODELS["vae"]],
                vae=MODELS["vae"]["name"])
    ref = g.add("LoadImage", (x + 720, 360), size=(340, 330), title="Reference image", image="reference.png")
    sampler = g.add("MTVSampler7B", (x + 1100, 120), size=(340, 330))
    g.link(dit, "model", sampler, "model")
    g.link(vae, "vae", sampler, "vae")
    g.link(ref, "IMAGE", sampler, "reference")
    g.link(enc, "motion", sampler, "motion")
    dec = g.add("MTVDecode7B", (x + 1100, 500), size=(340, 80))
    g.link(vae, "vae", dec, "vae")
    g.link(sampler, "latents", dec, "latents")
    create = g.add("CreateVideo", (x + 1480, 120), size=(300, 100))
    g.link(dec, "images", create, "images")
    g.link(dec, "fps", create, "fps")
    save = g.add("SaveVideo", (x + 1480, 280), size=(420, 420), filename_prefix="video/MTVCrafter")
    g.link(create, "VIDEO", save, "video")


def video_workflow() -> dict[str, Any]:
    """Driving video -> NLF joints -> tokens -> 7B sampler -> mp4."""
    g = Graph()
    g.add("MarkdownNote", (0, -420), size=(760, 380), text=DOWNLOAD_NOTE % NLF_ROW)
    video = g.add("LoadVideo", (0, 0), size=(320, 380), title="Driving video", file="dance.mp4")
    comps = g.add("GetVideoComponents", (0, 430), size=(320, 90))
    g.link(video, "VIDEO", comps, "video")
    nlf = g.add("MTVLoadNLFModel", (360, 0), size=(320, 100), models=[MODELS["nlf"]],
                model_name=MODELS["nlf"]["name"])
    extract = g.add("MTVExtractSMPL", (360, 150), size=(320, 260))
    g.link(nlf, "nlf_model", extract, "nlf_model")
    g.link(comps, "images", extract, "images")
    g.link(comps, "fps", extract, "fps")
    _generation(g, extract, "joints", 720)
    g.group("1. Driving video -> 3D motion (NLF, CUDA)", (-20, -40, 720, 600))
    return g.workflow([MODELS["nlf"], MODELS["tokenizer"], MODELS["dit"], MODELS["vae"]])


def motion_file_workflow() -> dict[str, Any]:
    """Saved motion file -> tokens -> 7B sampler -> mp4 (no NLF, no driving video)."""
    g = Graph()
    g.add("MarkdownNote", (0, -420), size=(760, 380), text=DOWNLOAD_NOTE % "")
    motion = g.add("MTVLoadMotion", (0, 200), size=(320, 160), title="Motion file", motion_file="dance_motion.npz")
    _generation(g, motion, "joints", 360)
    return g.workflow([MODELS["tokenizer"], MODELS["dit"], MODELS["vae"]])


PREVIEW_NOTE = """## MTVCrafter: motion preview (no model files)

A starter that needs **no downloads**: press **Run** to check that the pack is installed. It takes a few seconds, even on CPU.

- **Procedural Motion** builds a demo dance: 49 frames (one MTVCrafter window) at 20 fps, from the motion tokenizer's mean pose.
- **Render Skeleton** draws it with MTVCrafter's camera; **Create Video** + **Save Video** write `output/video/MTVCrafter_motion_preview_*.mp4`.
- **Motion Info** shows frames, fps, extent, depth and height of the motion.
- The lower branch mirrors the motion (left and right swapped) and previews those frames.

To animate a picture, open the two 7B templates of this pack (template browser, under `mtvcrafter`); their notes list the model files to download:

- **mtvcrafter_7b**: driving video -> NLF 3D pose -> MV-DiT 7B -> mp4.
- **mtvcrafter_7b_motion_file**: saved motion file (.npz / upstream .pkl) -> MV-DiT 7B -> mp4.

Procedural Motion's `joints` output also fits their Encode Motion node, in place of the video or the motion file."""


def motion_preview_workflow() -> dict[str, Any]:
    """Procedural motion -> skeleton frames -> mp4, motion info, mirrored preview: no model files at all."""
    g = Graph()
    g.add("MarkdownNote", (0, -400), size=(900, 360), text=PREVIEW_NOTE)
    motion = g.add("MTVProceduralMotion", (0, 0), size=(320, 200), title="Demo motion (no model needed)",
                   motion="dance", frames=49, fps=20.0)
    info = g.add("MTVMotionInfo", (0, 250), size=(320, 240))
    g.link(motion, "joints", info, "joints")
    skel = g.add("MTVRenderSkeleton", (360, 0), size=(320, 180), title="Skeleton frames")
    g.link(motion, "joints", skel, "joints")
    create = g.add("CreateVideo", (720, 0), size=(300, 100), fps=20.0)
    g.link(skel, "images", create, "images")
    save = g.add("SaveVideo", (1060, 0), size=(420, 420), filename_prefix="video/MTVCrafter_motion_preview")
    g.link(create, "VIDEO", save, "video")
    mirror = g.add("MTVMirrorMotion", (360, 510), size=(320, 90))
    g.link(motion, "joints", mirror, "joints")
    skel_mirror = g.add("MTVRenderSkeleton", (720, 510), size=(300, 180), title="Mirrored skeleton")
    g.link(mirror, "joints", skel_mirror, "joints")
    preview = g.add("PreviewImage", (1060, 510), size=(420, 320))
    g.link(skel_mirror, "images", preview, "images")
    g.group("Optional: mirrored motion (left <-> right)", (340, 440, 1160, 420))
    return g.workflow([])


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
    g.add("MarkdownNote", (0, -520), size=(900, 480), text=NATIVE_NOTE % NLF_ROW)
    video = g.add("LoadVideo", (0, 0), size=(320, 380), title="Driving video", file="dance.mp4")
    comps = g.add("GetVideoComponents", (0, 430), size=(320, 90))
    g.link(video, "VIDEO", comps, "video")
    nlf = g.add("MTVLoadNLFModel", (360, 0), size=(320, 100), models=[MODELS["nlf"]],
                model_name=MODELS["nlf"]["name"])
    extract = g.add("MTVExtractSMPL", (360, 150), size=(320, 260))
    g.link(nlf, "nlf_model", extract, "nlf_model")
    g.link(comps, "images", extract, "images")
    g.link(comps, "fps", extract, "fps")
    tok = g.add("MTVLoadMotionTokenizer", (360, 460), models=[MODELS["tokenizer"]],
                tokenizer_file=MODELS["tokenizer"]["name"])
    enc = g.add("MTVEncodeMotion", (720, 300), size=(320, 150))
    g.link(tok, "tokenizer", enc, "tokenizer")
    g.link(extract, "joints", enc, "joints")
    g.group("1. Driving video -> motion tokens (NLF needs CUDA)", (-20, -40, 1080, 640))

    x = 1100
    unet = g.add("UNETLoader", (x, 0), size=(340, 110), models=[NATIVE_MODELS["wan_i2v"]],
                 unet_name=NATIVE_MODELS["wan_i2v"]["name"])
    lora = g.add("LoraLoaderModelOnly", (x, 150), size=(340, 90), models=[NATIVE_MODELS["lora"]],
                 lora_name=NATIVE_MODELS["lora"]["name"], strength_model=1.0)
    g.link(unet, "MODEL", lora, "model")
    shift = g.add("ModelSamplingSD3", (x, 280), size=(340, 60), title="Shift 5 (upstream)", shift=5.0)
    g.link(lora, "MODEL", shift, "model")
    apply = g.add("MTVApplyMotionWan", (x, 380), size=(340, 240), models=[NATIVE_MODELS["motion"]],
                  adapter=NATIVE_MODELS["motion"]["name"])
    g.link(shift, "MODEL", apply, "model")
    g.link(enc, "motion", apply, "motion")
    g.group("2. Wan 2.1 I2V + MTV motion", (x - 20, -40, 380, 680))

    x = 1500
    clip = g.add("CLIPLoader", (x, 0), size=(340, 110), models=[NATIVE_MODELS["umt5"]],
                 clip_name=NATIVE_MODELS["umt5"]["name"], type="wan")
    pos = g.add("CLIPTextEncode", (x, 150), size=(340, 120), title="Prompt", text="The character is dancing.")
    neg = g.add("CLIPTextEncode", (x, 310), size=(340, 120), title="Negative prompt",
                text="bad hands, extra limbs, fused fingers, blurry, low quality")
    g.link(clip, "CLIP", pos, "clip")
    g.link(clip, "CLIP", neg, "clip")
    vision = g.add("CLIPVisionLoader", (x, 470), size=(340, 80), models=[NATIVE_MODELS["clip_vision"]],
                   clip_name=NATIVE_MODELS["clip_vision"]["name"])
    ref = g.add("LoadImage", (x, 590), size=(340, 330), title="Reference image", image="reference.png")
    clip_enc = g.add("MTVWanClipVisionEncode", (x + 380, 470), size=(320, 100))
    g.link(vision, "CLIP_VISION", clip_enc, "clip_vision")
    g.link(ref, "IMAGE", clip_enc, "image")
    vae = g.add("VAELoader", (x + 380, 0), size=(320, 80), models=[NATIVE_MODELS["wan_vae"]],
                vae_name=NATIVE_MODELS["wan_vae"]["name"])
    i2v = g.add("WanImageToVideo", (x + 380, 130), size=(320, 290), width=512, height=512, length=49)
    g.link(pos, "CONDITIONING", i2v, "positive")
    g.link(neg, "CONDITIONING", i2v, "negative")
    g.link(vae, "VAE", i2v, "vae")
    g.link(clip_enc, "clip_vision_output", i2v, "clip_vision_output")
    g.link(ref, "IMAGE", i2v, "start_image")
    g.group("3. Text, reference image and CLIP (upstream's y and clip_fea)", (x - 20, -40, 760, 980))

    x = 2280
    sampler = g.add("KSampler", (x, 0), size=(340, 480), seed=42, steps=10, cfg=1.0, sampler_name="euler",
                    scheduler="simple")
    g.link(apply, "model", sampler, "model")
    g.link(i2v, "positive", sampler, "positive")
    g.link(i2v, "negative", sampler, "negative")
    g.link(i2v, "latent", sampler, "latent_image")
    decode = g.add("VAEDecode", (x, 530), size=(340, 60))
    g.link(sampler, "LATENT", decode, "samples")
    g.link(vae, "VAE", decode, "vae")
    create = g.add("CreateVideo", (x + 380, 0), size=(300, 100))
    g.link(decode, "IMAGE", create, "images")
    g.link(comps, "fps", create, "fps")
    save = g.add("SaveVideo", (x + 380, 160), size=(420, 420), filename_prefix="video/MTVCrafter_17B")
    g.link(create, "VIDEO", save, "video")
    return g.workflow([MODELS["nlf"], MODELS["tokenizer"], NATIVE_MODELS["wan_i2v"], NATIVE_MODELS["motion"],
                       NATIVE_MODELS["lora"], NATIVE_MODELS["umt5"], NATIVE_MODELS["clip_vision"],
                       NATIVE_MODELS["wan_vae"]])


WORKFLOWS = {"mtvcrafter_7b.json": video_workflow, "mtvcrafter_7b_motion_file.json": motion_file_workflow,
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
