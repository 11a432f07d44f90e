"""MTV on ComfyUI's native Wan 2.1: motion as a patch on the MODEL from Load Diffusion Model, upstream's CLIP
input, and window-by-window long videos.

Thin wrappers over ``_comfy_wan`` (the patch) and ``mtv_core.dit.motion_patch`` (motion layers and tokens).
Native nodes do the rest: UNETLoader (bf16 / fp8), LoraLoaderModelOnly, CLIPLoader + CLIPTextEncode,
WanImageToVideo (its ``concat_latent_image`` / ``concat_mask`` are upstream's ``y`` exactly), KSampler.
"""

from __future__ import annotations

import logging

from ..mtv_core.tokenizer.tokens import MotionTokens
from . import types
from ._comfy import MODEL_HELP_URL, MTV_FOLDER, io, model_choices, resolve_model

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/Wan"
ADAPTER_FOLDERS = (MTV_FOLDER, "diffusion_models")
ADAPTER_SUFFIXES = (".safetensors", ".sft")
NO_ADAPTER = "(no motion adapter: put mvdit17b_motion_adapter.safetensors or MV-DiT-17B in models/mtvcrafter)"
_ADAPTER_HINTS = ("adapter", "motion", "wan-2-1", "mtv", "mvdit")


def adapter_choices() -> list[str]:
    """Files and model folders of models/mtvcrafter and models/diffusion_models that hold MV-DiT-17B's motion layers
    (an extracted adapter, the released MV-DiT/Wan-2-1 folder or a full file), likely motion files first."""
    return model_choices(ADAPTER_FOLDERS, ADAPTER_SUFFIXES, NO_ADAPTER, hints=_ADAPTER_HINTS, include_dirs=True,
                         skip=lambda n: n.startswith(("motions/", "smpl/")), kinds=("mvdit17b", "mvdit17b-adapter"))


class MTVApplyMotionWan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVApplyMotionWan",
            display_name="MTV Apply Motion (Wan)",
            category=CATEGORY,
            description=(
                "Adds MTVCrafter's motion attention to a native Wan 2.1 image-to-video MODEL (Wan2.1 I2V-14B, "
                "Wan2.1-Fun-14B-InP, or MTVCrafter's MV-DiT-17B file loaded with Load Diffusion Model): the motion "
                "layers of MV-DiT-17B run in every 4th block between cross-attention and FFN, driven by the motion "
                "tokens. Returns a patched copy; the input MODEL is unchanged. Works with KSampler, LoRAs, fp8 "
                "and context windows."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A native Wan 2.1 image-to-video MODEL (Load Diffusion Model)."),
                io.Combo.Input("adapter", options=adapter_choices(),
                               tooltip="The motion layers: the extracted motion adapter, or the released MV-DiT-17B "
                                       "folder MV-DiT/Wan-2-1 or a single MV-DiT-17B file (bf16 or fp8; only its "
                                       "motion layers are read), from models/mtvcrafter or models/diffusion_models "
                                       f"({MODEL_HELP_URL})."),
                types.Motion.Input("motion", tooltip="Motion tokens from Encode Motion (released 4DMoT)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05,
                               tooltip="Scale of the motion attention's update (1 = as trained, 0 = no motion)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of the denoising where motion applies: start (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Part of the denoising where motion applies: end (1 = last step)."),
                io.Float.Input("motion_guidance", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="1 = off. Above 1, one extra forward pass of the positive prompt without "
                                       "motion per step pushes the result away from it (x scale - 1)."),
                io.Int.Input("start_frame", default=0, min=0, max=100_000, step=4, optional=True,
                             tooltip="Video frame of the motion where this video starts (a multiple of 4). Leave 0 "
                                     "with the motion from Next Window (MTV Wan)."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The Wan MODEL with motion.")],
        )

    @classmethod
    def execute(cls, model, adapter: str, motion: MotionTokens, strength: float = 1.0, start_percent: float = 0.0,
                end_percent: float = 1.0, motion_guidance: float = 1.0, start_frame: int = 0) -> io.NodeOutput:
        from ._comfy_wan import apply_motion

        if adapter == NO_ADAPTER:
            raise FileNotFoundError(f"no motion adapter selected: {NO_ADAPTER} (download from {MODEL_HELP_URL}, or "
                                    "write one with `python -m mtv_core extract-adapter`)")
        path = resolve_model(ADAPTER_FOLDERS, adapter, hint=f"MV-DiT-17B comes from {MODEL_HELP_URL}")
        return io.NodeOutput(apply_motion(model, path, motion, strength=strength, start_percent=start_percent,
                                          end_percent=end_percent, guidance=motion_guidance,
                                          start_frame=start_frame))


class MTVWanClipVisionEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVWanClipVisionEncode",
            display_name="CLIP Vision Encode (MTV Wan)",
            category=CATEGORY,
            description=(
                "CLIP vision features as MTVCrafter computed them (clip_fea): the image squashed to the tower's size "
                "with bicubic resizing without antialiasing and without re-rounding to 8 bits. Native CLIP Vision "
                "Encode resizes with antialiasing and rounds, which moves the features by about 2 %."
            ),
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="From Load CLIP Vision (clip_vision_h)."),
                io.Image.Input("image", tooltip="The reference image (the first of a batch is used)."),
                io.Boolean.Input("upstream_uint8", default=True,
                                 tooltip="Round the image down to 8 bits first, as upstream's script does with the "
                                         "reference (exact upstream features)."),
            ],
            outputs=[io.ClipVisionOutput.Output(display_name="clip_vision_output",
                                                tooltip="For WanImageToVideo's clip_vision_output.")],
        )

    @classmethod
    def execute(cls, clip_vision, image, upstream_uint8: bool = True) -> io.NodeOutput:
        from ._comfy_wan import encode_clip_upstream

        return io.NodeOutput(encode_clip_upstream(clip_vision, image[:1], truncate_uint8=upstream_uint8))


class MTVWanNextWindow(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVWanNextWindow",
            display_name="Next Window (MTV Wan)",
            category=CATEGORY,
            description=(
                "Long videos window by window, as MTVCrafter does: the next window starts on the last `overlap` "
                "frames made so far. Its conditioning encodes those frames (mask 1 on their latent frames, as "
                "WanImageToVideo does for a start image), its latent keeps them fixed while sampling (noise mask), "
                "CLIP sees the last of them, and its motion is the motion tokens of the window. Decode the new "
                "window and append it to kept_images with Batch Images."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="Positive conditioning (from CLIP Text Encode or the "
                                                          "first window)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
                io.Image.Input("previous_images", tooltip="Every frame made so far (the first window's frames, "
                                                          "then the growing video)."),
                types.Motion.Input("motion", tooltip="The whole motion (from Encode Motion)."),
                io.Int.Input("length", default=49, min=5, max=1001, step=4,
                             tooltip="Frames of the new window (4k + 1; MTVCrafter: 49)."),
                io.Int.Input("overlap", default=9, min=1, max=1001, step=4,
                             tooltip="Frames taken over from the previous window (4k + 1; MTVCrafter: 9)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="When connected, CLIP sees the last overlap frame (upstream); otherwise "
                                            "the conditioning keeps its CLIP features (the reference)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="For KSampler."),
                io.Conditioning.Output(display_name="negative", tooltip="For KSampler."),
                io.Latent.Output(display_name="latent", tooltip="The window's latent, overlap frames kept."),
                types.Motion.Output(display_name="motion", tooltip="This window's motion tokens (for MTV Apply Motion "
                                                                   "with start_frame 0)."),
                io.Int.Output(display_name="start_frame", tooltip="First video frame of the window."),
                io.Image.Output(display_name="kept_images",
                                tooltip="previous_images without the overlap: append the new window's frames."),
            ],
        )

    @classmethod
    def execute(cls, positive, negative, vae, previous_images, motion: MotionTokens, length: int = 49,
                overlap: int = 9, clip_vision=None) -> io.NodeOutput:
        from ..mtv_core.dit.motion_patch import next_window_start, window_motion
        from ._comfy_wan import next_window_conditioning

        start = next_window_start(previous_images.shape[0], overlap, length)
        window = window_motion(motion, start, length)
        positive, negative, latent = next_window_conditioning(positive, negative, vae, previous_images[start:],
                                                              length, clip_vision)
        logger.info("next window: frames %d-%d, %d overlap frames kept", start, start + length - 1, overlap)
        return io.NodeOutput(positive, negative, latent, window, start, previous_images[:start])


NODES = [MTVApplyMotionWan, MTVWanClipVisionEncode, MTVWanNextWindow]
