"""MV-DiT-17B nodes: load the DiT (and a LoRA), sample a video from motion tokens with ComfyUI's native Wan inputs,
decode it with the native Wan VAE.

Thin wrappers over ``mtv_core.dit`` (model: ``loading.load_dit`` with variant "17b"; sampling and long-video
windows: ``pipeline_17b`` over ``pipeline``). The text, the reference's CLIP features and the VAE come from
ComfyUI's own nodes: **Load CLIP** (type ``wan``, umT5-XXL) + **CLIP Text Encode** for the prompts,
**Load CLIP Vision** (clip_vision_h) + **CLIP Vision Encode** for the reference, **Load VAE** (wan_2.1_vae).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..mtv_core.attention import BACKENDS
from ..mtv_core.constants import OVERLAP_FRAMES, WINDOW_FRAMES, latent_frames
from ..mtv_core.dit.latents import MTVLatent
from ..mtv_core.dit.pipeline import limit_windows
from ..mtv_core.dit.pipeline_17b import (
    DEFAULTS,
    VARIANT,
    WINDOW_CLIP,
    decode_17b,
    output_size_17b,
    sample_17b,
    umt5_rows,
)
from ..mtv_core.dit.sampler_17b import CFG_MODES, DISTILLED_STEPS
from ..mtv_core.dit.vae_wan import FramesVideoVAE
from ..mtv_core.memory import sample_17b_activation_bytes
from ..mtv_core.offload import WEIGHT_DTYPES
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
    model_choices,
    native,
    progress,
    resolve_model,
    with_lora,
)

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/MV-DiT"
DIT_FOLDERS = ("diffusion_models", MTV_FOLDER)
LORA_FOLDERS = ("loras",)
SUFFIXES = (".safetensors", ".sft")
FP8_DTYPES = tuple(WEIGHT_DTYPES)
DTYPES = (*DTYPE_CHOICES, *FP8_DTYPES)
DIT_DEVICES = ("auto", "offload", "cpu")
NO_DIT = "(no MV-DiT-17B found: put MV-DiT/Wan-2-1 in models/mtvcrafter)"
NO_ADAPTER = "(none)"
NO_LORA = "(no LoRA found: put it in models/loras)"
WAN_URL = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/tree/main/split_files"
_DIT_HINTS = ("mv-dit", "mvdit", "wan-2-1", "mtv", "17b")
MAX_SEED = 2**63 - 1
WINDOW_CLIP_CHOICES = dict(zip(("last overlap frame", "reference"), WINDOW_CLIP))  # widget text -> core value


def dit_choices() -> list[str]:
    """MV-DiT-17B files and folders, and Wan2.1 image-to-video bases (for a motion adapter)."""
    return model_choices(DIT_FOLDERS, SUFFIXES, NO_DIT, hints=_DIT_HINTS, include_dirs=True,
                         kinds=("mvdit17b", "wan-i2v"))


def adapter_choices() -> list[str]:
    """``(none)`` and the MV-DiT-17B motion adapters (motion layers only)."""
    found = model_choices(DIT_FOLDERS, SUFFIXES, NO_ADAPTER, kinds=("mvdit17b-adapter",))
    return [NO_ADAPTER] + [n for n in found if n != NO_ADAPTER]


def lora_choices() -> list[str]:
    return model_choices(LORA_FOLDERS, SUFFIXES, NO_LORA)


class MTVLoadDiT17B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadDiT17B",
            display_name="Load MV-DiT (17B)",
            category=CATEGORY,
            description=(
                "Loads MTVCrafter's MV-DiT-17B (Wan2.1 I2V-14B with motion attention): the released folder "
                f"MV-DiT/Wan-2-1 ({MODEL_HELP_URL}), one .safetensors file (bf16, fp8 or scaled fp8), or a Wan2.1 "
                "I2V-14B / Fun-14B-InP base with the motion adapter. Weights stream from the file straight into the "
                "chosen precision (about 35 GB in bf16, 17.5 GB in fp8)."
            ),
            inputs=[
                io.Combo.Input(
                    "model", options=dit_choices(),
                    tooltip="MV-DiT-17B folder (holding config.json) or .safetensors file, or a Wan2.1 image-to-video "
                    "base (then choose its motion adapter), in models/mtvcrafter or models/diffusion_models.",
                ),
                io.Combo.Input(
                    "adapter", options=adapter_choices(), default=NO_ADAPTER,
                    tooltip="The MV-DiT-17B motion adapter (blocks.N.motion_attn / norm4 only) when model is a Wan2.1 "
                    "I2V base; (none) for a full MV-DiT-17B. Write one with `python -m mtv_core extract-adapter`.",
                ),
                io.Combo.Input(
                    "dtype", options=list(DTYPES), default="auto",
                    tooltip="Compute precision (auto = bf16 on a GPU, fp32 on CPU); fp8 files stay fp8 in memory. "
                    "fp8_e4m3fn / fp8_e5m2 store a bf16 file's block weights in fp8 (half the memory, slightly "
                    "different results). ComfyUI loads fp8 Linear layers whole (the rest can be partially loaded).",
                ),
                io.Combo.Input(
                    "attention", options=list(BACKENDS), default="auto",
                    tooltip="Attention kernel. auto = xformers when installed and on CUDA, else PyTorch SDPA.",
                ),
                io.Combo.Input(
                    "device", options=list(DIT_DEVICES), default="auto",
                    tooltip="auto = ComfyUI's GPU under its memory management (kept loaded while there is room, "
                    "offloaded or partially loaded like ComfyUI's own models); offload = the same, but back to "
                    "system RAM after every sampler run; cpu = load and run on the CPU (very slow).",
                ),
            ],
            outputs=[types.DiT.Output(display_name="model", tooltip="The loaded MV-DiT-17B, for MTV Sampler (17B).")],
        )

    @classmethod
    def execute(cls, model: str, adapter: str = NO_ADAPTER, dtype: str = "auto", attention: str = "auto",
                device: str = "auto") -> io.NodeOutput:
        from ..mtv_core.dit.loading import load_dit

        if model == NO_DIT:
            raise FileNotFoundError(f"no MV-DiT-17B selected: {NO_DIT} (download from {MODEL_HELP_URL})")
        check_choice("device", device, DIT_DEVICES)
        check_choice("dtype", dtype, DTYPES)
        path = resolve_model(DIT_FOLDERS, model, hint=f"MV-DiT-17B comes from {MODEL_HELP_URL} (MV-DiT/Wan-2-1)")
        adapter_path = None if adapter in (NO_ADAPTER, "") else resolve_model(DIT_FOLDERS, adapter)
        weight_dtype = dtype if dtype in FP8_DTYPES else None
        compute = "auto" if weight_dtype else dtype  # fp8-stored weights compute in the automatic precision
        return io.NodeOutput(load_managed(load_dit, path, compute, device, attention=attention, variant=VARIANT,
                                          adapter=adapter_path, weight_dtype=weight_dtype))


class MTVLoraLoader17B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoraLoader17B",
            display_name="Load LoRA (MTV 17B)",
            category=CATEGORY,
            description=(
                "Applies a Wan2.1 14B LoRA to MV-DiT-17B at a strength, as ComfyUI's own LoRA loaders do: the model "
                "itself is not changed (the LoRA is a set of weight patches applied when it runs), so the same "
                "model works without it elsewhere. A distillation LoRA (e.g. FusionX, lightx2v) goes with the "
                f"sampler's cfg_mode 'distilled' and about {DISTILLED_STEPS} steps."
            ),
            inputs=[
                types.DiT.Input("model", tooltip="From Load MV-DiT (17B)."),
                io.Combo.Input("lora", options=lora_choices(), tooltip="LoRA file in models/loras (diffusion_model.* / "
                               "lora_unet_* keys; lora_up/down, lora_A/B, diff, diff_b)."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05,
                               tooltip="LoRA strength (upstream merges its FusionX LoRA at 1.0)."),
            ],
            outputs=[types.DiT.Output(display_name="model", tooltip="MV-DiT-17B with the LoRA.")],
        )

    @classmethod
    def execute(cls, model, lora: str, strength: float = 1.0) -> io.NodeOutput:
        if lora == NO_LORA:
            raise FileNotFoundError(f"no LoRA selected: {NO_LORA}")
        _require_17b(model.model, "Load LoRA (MTV 17B)")
        if strength == 0:
            return io.NodeOutput(model)
        return io.NodeOutput(with_lora(model, resolve_model(LORA_FOLDERS, lora), strength))


def _require_17b(model: Any, node: str) -> None:
    from ..mtv_core.dit.transformer_17b import MVDiT17B
    from ..mtv_core.dit.variants import variant_of

    if not isinstance(model, MVDiT17B):
        found = variant_of(model)
        raise ValueError(f"{node} takes MV-DiT-17B; the model given is {found.title if found else type(model).__name__}")


def native_wan_vae(vae: Any) -> FramesVideoVAE:
    """ComfyUI's VAE (``comfy.sd.VAE``) as the pack's VideoVAE; ValueError unless it is the Wan2.1 VAE."""
    model = getattr(vae, "first_stage_model", None)
    channels, dims = getattr(vae, "latent_channels", None), getattr(vae, "latent_dim", None)
    kind = type(model).__module__ + "." + type(model).__name__ if model is not None else type(vae).__name__
    if channels != 16 or dims != 3 or not kind.endswith("wan.vae.WanVAE"):
        raise ValueError(f"the VAE input is {kind} ({channels} latent channels), not the Wan2.1 VAE: load "
                         f"wan_2.1_vae.safetensors with Load VAE ({WAN_URL}/vae)")
    return FramesVideoVAE(vae, source="the Wan2.1 VAE of Load VAE")


class NativeClipEncoder:
    """ComfyUI's CLIP vision model (``CLIP_VISION``) as the 17B's ``ClipImageEncoder``: the penultimate block's
    features of (B, 3, H, W) pixels in [-1, 1], resized to its input size without cropping (as upstream)."""

    def __init__(self, clip_vision: Any) -> None:
        self.clip_vision = clip_vision

    def encode(self, pixels_pm1: torch.Tensor) -> torch.Tensor:
        image = (pixels_pm1.float().permute(0, 2, 3, 1) * 0.5 + 0.5).clamp(0.0, 1.0)
        return clip_features(self.clip_vision.encode_image(image, crop=False), "clip_vision")


def clip_features(output: Any, name: str = "clip_vision_output") -> torch.Tensor:
    """The penultimate block's features of a CLIP_VISION_OUTPUT (what upstream and native Wan use), (1, T, D)."""
    features = getattr(output, "penultimate_hidden_states", None)
    if not isinstance(features, torch.Tensor) or features.ndim != 3:
        raise ValueError(f"{name}: expected CLIP Vision Encode's output with penultimate_hidden_states (B, tokens, "
                         f"width), got {type(output).__name__}")
    return features[:1].float().cpu()


def text_embeddings(conditioning: Any, name: str) -> torch.Tensor:
    """One prompt's umT5 rows (L, D) from a native CONDITIONING ([[cond (1, 512, D), extras], ...])."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning or not isinstance(conditioning[0][0], torch.Tensor):
        raise ValueError(f"{name}: expected CONDITIONING from CLIP Text Encode, got {type(conditioning).__name__}")
    if len(conditioning) > 1:
        logger.warning("%s: %d conditionings combined; MV-DiT-17B uses the first", name, len(conditioning))
    cond = conditioning[0][0]
    if cond.ndim != 3:
        raise ValueError(f"{name}: conditioning tensor of shape {tuple(cond.shape)}; expected (1, tokens, width)")
    return umt5_rows(cond[:1].cpu())


class MTVSampler17B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVSampler17B",
            display_name="MTV Sampler (17B)",
            category=CATEGORY,
            description=(
                "Animates the reference image with the motion tokens: MV-DiT-17B flow-matching sampling (shift 5) "
                "with text classifier-free guidance, as upstream. Prompts come from CLIP Text Encode with Load CLIP "
                "(type wan, umT5-XXL), the reference's CLIP features from CLIP Vision Encode (clip_vision_h, crop "
                f"none), the VAE from Load VAE (wan_2.1_vae). Motion longer than {WINDOW_FRAMES} frames is generated as "
                f"overlapping {WINDOW_FRAMES}-frame windows, each continuing from the last {OVERLAP_FRAMES} frames of the "
                "previous one."
            ),
            inputs=[
                types.DiT.Input("model", tooltip="From Load MV-DiT (17B) (or Load LoRA (MTV 17B))."),
                io.Vae.Input("vae", tooltip="The Wan2.1 VAE from Load VAE (wan_2.1_vae.safetensors)."),
                io.Conditioning.Input("positive", tooltip="The prompt: CLIP Text Encode with Load CLIP type wan "
                                      "(umT5-XXL), e.g. 'The character is dancing.'"),
                io.Conditioning.Input("negative", tooltip="The negative prompt (upstream: 'bad hands, extra limbs, "
                                      "fused fingers, blurry, low quality'); unused in the distilled mode."),
                io.ClipVisionOutput.Input("clip_vision_output", tooltip="CLIP Vision Encode of the reference image "
                                          "(clip_vision_h; crop none, as upstream)."),
                io.Image.Input("reference", tooltip="The person/character to animate (first image of the batch). "
                               "Resized to cover the output size and centre-cropped."),
                types.Motion.Input("motion", tooltip=f"Motion tokens from Encode Motion (MTV 4DMoT), {WINDOW_FRAMES}-frame "
                                   "windows."),
                io.Int.Input("width", default=0, min=0, max=2048, step=16,
                             tooltip="Output width (multiple of 16); 0 with height 0 = upstream's 512-area aspect bucket "
                             "nearest the reference (512 x 512 for a square one)."),
                io.Int.Input("height", default=0, min=0, max=2048, step=16, tooltip="Output height; 0: see width."),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=200,
                             tooltip=f"Denoising steps per window (upstream: {DEFAULTS.steps}; {DISTILLED_STEPS} with a "
                             "distillation LoRA)."),
                io.Float.Input("text_guidance", default=DEFAULTS.guidance, min=1.0, max=20.0, step=0.1,
                               tooltip=f"Text classifier-free guidance (upstream: {DEFAULTS.guidance:g}); 1 = off (half the "
                               "compute)."),
                io.Combo.Input("cfg_mode", options=list(CFG_MODES), default=CFG_MODES[0],
                               tooltip="text_cfg: guidance with the negative prompt (2 passes per step, upstream without "
                               "LoRA); distilled: the prompt alone, 1 pass per step, for a distillation LoRA (upstream "
                               f"with FusionX, {DISTILLED_STEPS} steps)."),
                io.Float.Input("motion_guidance", default=1.0, min=1.0, max=10.0, step=0.1,
                               tooltip="How strongly the video follows the motion: guidance against a pass without motion "
                               "attention (the Wan base's prediction). 1 = off (upstream has none); above 1 costs one more "
                               "pass per step in its range."),
                io.Float.Input("motion_guidance_start", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the steps where motion guidance starts."),
                io.Float.Input("motion_guidance_end", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the steps where motion guidance ends."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip=f"Noise seed (upstream: {DEFAULTS.seed}). Same seed + inputs = same video."),
                io.Int.Input("max_windows", default=0, min=0, max=1000,
                             tooltip=f"Generate only the first N windows ({WINDOW_FRAMES} frames, then "
                             f"+{WINDOW_FRAMES - OVERLAP_FRAMES} each); 0 = the whole motion."),
                io.Combo.Input("window_clip", options=list(WINDOW_CLIP_CHOICES), default="last overlap frame",
                               tooltip="CLIP image of each later window: its last overlap frame (upstream; needs "
                               "clip_vision) or the reference."),
                io.Boolean.Input("latent_preview", default=True,
                                 tooltip="Show a rough false-colour preview of the current prediction on the node."),
                io.Boolean.Input("batched_cfg", default=True,
                                 tooltip="Run the negative and the positive prompt as one batch (as upstream, faster); off "
                                 "runs them one after the other with half the activation memory, same result."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="Load CLIP Vision (clip_vision_h): encodes each later window's last overlap "
                                    "frame (window_clip 'last overlap frame')."),
            ],
            outputs=[types.Latent.Output(display_name="latents",
                                         tooltip="Sampled latents of every window; decode with MTV VAE Decode (17B).")],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, clip_vision_output, reference: torch.Tensor, motion: MotionTokens,
                width: int = 0, height: int = 0, steps: int = DEFAULTS.steps, text_guidance: float = DEFAULTS.guidance,
                cfg_mode: str = CFG_MODES[0], motion_guidance: float = 1.0, motion_guidance_start: float = 0.0,
                motion_guidance_end: float = 1.0, seed: int = DEFAULTS.seed, max_windows: int = 0,
                window_clip: str = "last overlap frame", latent_preview: bool = True, batched_cfg: bool = True,
                clip_vision=None) -> io.NodeOutput:
        _require_17b(model.model, "MTV Sampler (17B)")
        video_vae = native_wan_vae(vae)
        motion = limit_windows(motion, max_windows)
        width, height = output_size_17b(reference, width, height)
        conditioning = dict(
            context=text_embeddings(positive, "positive"), negative_context=text_embeddings(negative, "negative"),
            reference_clip=clip_features(clip_vision_output), clip=NativeClipEncoder(clip_vision) if clip_vision else None,
            guidance=text_guidance, cfg_mode=cfg_mode, motion_guidance=motion_guidance,
            motion_guidance_start=motion_guidance_start, motion_guidance_end=motion_guidance_end,
            window_clip=WINDOW_CLIP_CHOICES.get(window_clip, window_clip), batched_cfg=batched_cfg,
        )
        bar = progress(len(motion.windows) * steps)
        text_batch = cfg_mode == "text_cfg" and text_guidance > 1.0 and batched_cfg
        need = max(sample_17b_activation_bytes(model.model, motion, width, height, text_cfg=text_batch),
                   _vae_bytes(vae, motion, width, height))
        extra = (native(clip_vision),) if clip_vision is not None else ()
        with loaded(model, native(vae), *extra, memory_required=need) as (dit, *_):
            latents = sample_17b(dit, video_vae, reference, motion, width=width, height=height, num_steps=steps,
                                 seed=seed, callback=bar, preview=latent_preview, keep_frames=True, **conditioning)
        return io.NodeOutput(latents)


def _vae_bytes(vae: Any, motion: MotionTokens, width: int, height: int) -> int:
    """What ComfyUI's Wan VAE says it needs to encode and decode one window (its own estimates)."""
    frames = motion.window_frames
    dtype = getattr(vae, "vae_dtype", torch.float32)
    try:
        encode = vae.memory_used_encode((1, 3, frames, height, width), dtype)
        decode = vae.memory_used_decode((1, 16, latent_frames(frames), height // 8, width // 8), dtype)
    except (AttributeError, TypeError):
        return 0
    return int(max(encode, decode))


class MTVDecode17B(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVDecode17B",
            display_name="MTV VAE Decode (17B)",
            category=CATEGORY,
            description=(
                "Decodes the 17B sampler's latents with the Wan2.1 VAE into video frames, joining the windows (each "
                "window's frames up to where the next begins). Feed images and fps to CreateVideo."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="The same Wan2.1 VAE the sampler used (Load VAE)."),
                types.Latent.Input("latents", tooltip="From MTV Sampler (17B)."),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip="Generated frames (IMAGE batch, one per video frame)."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the driving motion; connect to CreateVideo's "
                                                            "fps."),
            ],
        )

    @classmethod
    def execute(cls, vae, latents: MTVLatent) -> io.NodeOutput:
        frames = decode_sampled(decode_17b, native_wan_vae(vae), native(vae), latents)
        return io.NodeOutput(frames, float(latents.fps))


NODES = [MTVLoadDiT17B, MTVLoraLoader17B, MTVSampler17B, MTVDecode17B]
