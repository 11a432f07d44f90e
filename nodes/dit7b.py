"""MV-DiT-7B nodes: load the DiT and the CogVideoX VAE, sample a video from motion tokens, decode it.

Thin wrappers over ``mtv_core.dit`` (model: ``loading.load_dit`` with variant "7b"; VAE: ``vae.load_vae``;
sampling and long-video windows: ``pipeline_7b`` over ``pipeline``). Connect the decoded IMAGE batch and fps to
native CreateVideo/SaveVideo.
"""

from __future__ import annotations

import logging

import torch

from ..mtv_core.attention import BACKENDS
from ..mtv_core.constants import OVERLAP_FRAMES, WINDOW_FRAMES
from ..mtv_core.dit.latents import MTVLatent
from ..mtv_core.dit.pipeline import limit_windows
from ..mtv_core.dit.pipeline_7b import DEFAULTS, VARIANT, decode_7b, sample_7b
from ..mtv_core.memory import decode_7b_activation_bytes, sample_7b_activation_bytes
from ..mtv_core.tokenizer.tokens import MotionTokens
from . import types
from ._comfy import (
    DTYPE_CHOICES,
    MODEL_HELP_URL,
    MTV_FOLDER,
    check_choice,
    decode_sampled,
    io,
    load_managed,
    loaded,
    manage,
    model_choices,
    model_placement,
    parse_dtype,
    progress,
    resolve_model,
)

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/MV-DiT"
DIT_FOLDERS = ("diffusion_models", MTV_FOLDER)
VAE_FOLDERS = ("vae",)
SUFFIXES = (".safetensors", ".sft")
DTYPES = DTYPE_CHOICES
ATTENTION = BACKENDS
DIT_DEVICES = ("auto", "offload", "cpu")
VAE_URL = "https://huggingface.co/THUDM/CogVideoX-5b/tree/main/vae"
NO_DIT = "(no MV-DiT-7B found: put MV-DiT/CogVideoX in models/mtvcrafter)"
NO_VAE = "(no VAE found: put CogVideoX-5b's vae folder in models/vae)"
_DIT_HINTS = ("mv-dit", "mvdit", "cogvideox", "7b")
_VAE_HINTS = ("cogvideox", "cogvideo", "5b")
MAX_SEED = 2**63 - 1


def _choices(folders: tuple[str, ...], hints: tuple[str, ...], empty: str, kind: str) -> list[str]:
    """Safetensors files and model folders (with config.json) whose tensor names are of ``kind``
    (``mtv_core.model_kinds``); files inside a listed folder are hidden."""
    return model_choices(folders, SUFFIXES, empty, hints=hints, include_dirs=True, kinds=(kind,))


class MTVLoadDiT7B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadDiT7B",
            display_name="Load MV-DiT (7B)",
            category=CATEGORY,
            description=(
                "Loads MTVCrafter's MV-DiT-7B (CogVideoX-5B with motion attention): the released diffusers folder "
                "MV-DiT/CogVideoX (config.json + safetensors shards) or a single safetensors file, from "
                f"models/mtvcrafter or models/diffusion_models ({MODEL_HELP_URL}). Weights stream from the file "
                "straight into the chosen precision (about 14.3 GB in bf16)."
            ),
            inputs=[
                io.Combo.Input(
                    "model", options=_choices(DIT_FOLDERS, _DIT_HINTS, NO_DIT, "mvdit7b"),
                    tooltip="MV-DiT-7B folder (holding config.json) or single .safetensors file in models/mtvcrafter "
                    "or models/diffusion_models.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPES), default="auto",
                    tooltip="Weight precision. auto = bf16 on a GPU (fp16 if bf16 is unsupported), fp32 on CPU. "
                    "The model was trained and released in bf16.",
                ),
                io.Combo.Input(
                    "attention", options=list(ATTENTION), default="auto",
                    tooltip="Attention kernel. auto = xformers when installed and on CUDA, else PyTorch SDPA. "
                    "Both give the same result.",
                ),
                io.Combo.Input(
                    "device", options=list(DIT_DEVICES), default="auto",
                    tooltip="auto = run on ComfyUI's GPU under its memory management: it stays loaded while there "
                    "is room and is offloaded or partially loaded (--lowvram) like ComfyUI's own models; offload = "
                    "the same, but back to system RAM after every sampler run (frees ~14 GB of VRAM between runs, "
                    "slower start); cpu = load and run on the CPU (very slow).",
                ),
            ],
            outputs=[types.DiT.Output(display_name="model", tooltip="The loaded MV-DiT-7B, for MTV Sampler (7B).")],
        )

    @classmethod
    def execute(cls, model: str, dtype: str = "auto", attention: str = "auto", device: str = "auto") -> io.NodeOutput:
        from ..mtv_core.dit.loading import load_dit

        if model == NO_DIT:
            raise FileNotFoundError(f"no MV-DiT-7B selected: {NO_DIT} (download from {MODEL_HELP_URL})")
        check_choice("device", device, DIT_DEVICES)
        path = resolve_model(DIT_FOLDERS, model, hint=f"MV-DiT-7B comes from {MODEL_HELP_URL} (MV-DiT/CogVideoX)")
        return io.NodeOutput(load_managed(load_dit, path, dtype, device, attention=attention, variant=VARIANT))


class MTVLoadCogVideoXVAE(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadCogVideoXVAE",
            display_name="Load CogVideoX VAE (MTV 7B)",
            category=CATEGORY,
            description=(
                "Loads CogVideoX-5B's video VAE (scaling factor 0.7) for MV-DiT-7B: the vae folder of "
                f"THUDM/CogVideoX-5b ({VAE_URL}) or a single safetensors file with diffusers key names, from "
                "models/vae. Without a config.json the pack's CogVideoX-5B config is used. It runs on ComfyUI's VAE "
                "device under its memory management (always loaded whole)."
            ),
            inputs=[
                io.Combo.Input(
                    "vae", options=_choices(VAE_FOLDERS, _VAE_HINTS, NO_VAE, "cogvideox-vae"),
                    tooltip="CogVideoX-5B VAE folder (config.json + safetensors) or .safetensors file in models/vae.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPES), default="auto",
                    tooltip="auto = bf16 on a GPU (as upstream), fp32 on CPU.",
                ),
                io.Boolean.Input(
                    "tiling", default=True,
                    tooltip="Encode/decode in overlapping tiles: much less VRAM at 512 px and above, same look.",
                ),
            ],
            outputs=[types.VideoVAE.Output(display_name="vae", tooltip="The CogVideoX VAE, for the 7B sampler and decoder.")],
        )

    @classmethod
    def execute(cls, vae: str, dtype: str = "auto", tiling: bool = True) -> io.NodeOutput:
        from ..mtv_core.dit.vae import load_vae

        if vae == NO_VAE:
            raise FileNotFoundError(f"no CogVideoX VAE selected: {NO_VAE} (download from {VAE_URL})")
        path = resolve_model(VAE_FOLDERS, vae, hint=f"the CogVideoX-5B VAE comes from {VAE_URL}")
        placement = model_placement(kind="vae")
        video_vae = load_vae(path, dtype=parse_dtype(dtype, placement.load_device), device=placement.offload_device,
                             tiling=tiling)
        # a diffusers model of plain torch layers: ComfyUI may move it, but only whole
        return io.NodeOutput(manage(video_vae, placement, module=video_vae.vae, whole=True))


class MTVSampler7B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVSampler7B",
            display_name="MTV Sampler (7B)",
            category=CATEGORY,
            description=(
                "Animates the reference image with the motion tokens: CogVideoX DPM sampling with MTVCrafter's "
                f"learned-token motion guidance. Motion longer than {WINDOW_FRAMES} frames is generated as overlapping "
                f"{WINDOW_FRAMES}-frame windows, each new window continuing from the last frames of the previous one. "
                "The reference is "
                "resized to cover width x height and centre-cropped."
            ),
            inputs=[
                types.DiT.Input("model", tooltip="From Load MV-DiT (7B)."),
                types.VideoVAE.Input("vae", tooltip="From Load CogVideoX VAE (MTV 7B)."),
                io.Image.Input(
                    "reference", tooltip="The person/character to animate (first image of the batch). Resized to "
                    "cover the output size and centre-cropped; at least 64 px on each side.",
                ),
                types.Motion.Input("motion", tooltip=f"Motion tokens from Encode Motion (MTV 4DMoT), {WINDOW_FRAMES}-frame "
                                   "windows."),
                io.Int.Input("width", default=512, min=64, max=2048, step=16,
                             tooltip="Output width (multiple of 16; MTVCrafter was trained at 512 x 512)."),
                io.Int.Input("height", default=512, min=64, max=2048, step=16,
                             tooltip="Output height (multiple of 16)."),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=200,
                             tooltip=f"Denoising steps per window (upstream: {DEFAULTS.steps})."),
                io.Float.Input("motion_guidance", default=DEFAULTS.guidance, min=1.0, max=20.0, step=0.1,
                               tooltip="How strongly the video follows the motion (classifier-free guidance against "
                               f"learned 'no motion' tokens). 1 = off (half the compute); upstream uses {DEFAULTS.guidance:g}."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip=f"Noise seed (upstream: {DEFAULTS.seed}). Same seed + inputs = same video."),
                io.Int.Input("max_windows", default=0, min=0, max=1000,
                             tooltip=f"Generate only the first N windows of the motion ({WINDOW_FRAMES} frames, then "
                             f"+{WINDOW_FRAMES - OVERLAP_FRAMES} each); "
                             "0 = the whole motion."),
                io.Boolean.Input("latent_preview", default=True,
                                 tooltip="Show a rough false-colour preview of the current prediction on the node."),
            ],
            outputs=[types.Latent.Output(display_name="latents", tooltip="Sampled latents of every window; decode with MTV VAE Decode (7B).")],
        )

    @classmethod
    def execute(cls, model, vae, reference: torch.Tensor, motion: MotionTokens, width: int = 512, height: int = 512,
                steps: int = DEFAULTS.steps, motion_guidance: float = DEFAULTS.guidance, seed: int = DEFAULTS.seed,
                max_windows: int = 0, latent_preview: bool = True) -> io.NodeOutput:
        motion = limit_windows(motion, max_windows)
        bar = progress(len(motion.windows) * steps)
        need = sample_7b_activation_bytes(model.model, vae.model, motion, width, height, motion_guidance)
        with loaded(model, vae, memory_required=need) as (dit, video_vae):
            # keep_frames: every window but the last is decoded anyway; the decoder then reuses the frames
            latents = sample_7b(dit, video_vae, reference, motion, width=width, height=height, num_steps=steps,
                                guidance=motion_guidance, seed=seed, callback=bar, preview=latent_preview,
                                keep_frames=True)
        return io.NodeOutput(latents)


class MTVDecode7B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVDecode7B",
            display_name="MTV VAE Decode (7B)",
            category=CATEGORY,
            description=(
                "Decodes the sampler's latents with the CogVideoX VAE into video frames, joining the windows "
                "(each window's frames up to where the next begins). Feed images and fps to CreateVideo."
            ),
            inputs=[
                types.VideoVAE.Input("vae", tooltip="The same VAE the sampler used."),
                types.Latent.Input("latents", tooltip="From MTV Sampler (7B)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Generated frames (IMAGE batch, one per video frame)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the driving motion; connect to "
                                                            "CreateVideo's fps."),
            ],
        )

    @classmethod
    def execute(cls, vae, latents: MTVLatent) -> io.NodeOutput:
        frames = decode_sampled(decode_7b, vae.model, vae, latents,
                                memory_required=lambda: decode_7b_activation_bytes(vae.model, latents))
        return io.NodeOutput(frames, float(latents.fps))


NODES = [MTVLoadDiT7B, MTVLoadCogVideoXVAE, MTVSampler7B, MTVDecode7B]
