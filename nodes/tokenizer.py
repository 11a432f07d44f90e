"""Motion tokenizer nodes: load 4DMoT, encode joints to motion tokens (MTV_MOTION), decode them back.

Thin wrappers over ``mtv_core.tokenizer``; joints are camera-frame millimetres.
"""

from __future__ import annotations

import logging


from ..mtv_core.constants import NUM_JOINTS, OVERLAP_FRAMES, WINDOW_FRAMES, latent_frames
from ..mtv_core.memory import tokenizer_activation_bytes
from ..mtv_core.motion.sequence import JointSequence
from ..mtv_core.tokenizer.encode import decode_motion, encode_windows, reconstruction_report
from ..mtv_core.tokenizer.loading import load_tokenizer
from ..mtv_core.tokenizer.tokens import MotionTokens
from . import types
from ._comfy import (
    MODEL_HELP_URL,
    MTV_FOLDER,
    check_choice,
    io,
    load_managed,
    loaded,
    model_choices,
    progress,
    resolve_model,
)

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/Tokenizer"
FOLDERS = (MTV_FOLDER, "vae")
SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
NO_FILES = "(no tokenizer files: put 4DMoT in models/mtvcrafter or models/vae)"
DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu")
_HINTS = ("4dmot", "vqvae", "mp_rank")


def tokenizer_file_choices() -> list[str]:
    """4DMoT checkpoints in models/mtvcrafter and models/vae (by their tensor names; pickles by folder and
    name), likely 4DMoT files first."""
    return model_choices(FOLDERS, SUFFIXES, NO_FILES, hints=_HINTS, kinds=("4dmot",),
                         skip=lambda n: n.startswith(("motions/", "smpl/")))


class MTVLoadMotionTokenizer(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadMotionTokenizer",
            display_name="Load Motion Tokenizer (MTV 4DMoT)",
            category=CATEGORY,
            description=(
                "Loads the 4DMoT motion VQ-VAE: upstream 4DMoT/mp_rank_00_model_states.pt, kijai's "
                "WanVideo_MTV_Crafter_4DMoT_VQVAE_fp32.safetensors, or a tokenizer trained with this pack. "
                f"Files come from models/mtvcrafter or models/vae ({MODEL_HELP_URL})."
            ),
            inputs=[
                io.Combo.Input("tokenizer_file", options=tokenizer_file_choices(),
                               tooltip="4DMoT checkpoint (.pt or .safetensors) in models/mtvcrafter or models/vae."),
                io.Combo.Input("dtype", options=list(DTYPES), default="fp32",
                               tooltip="Precision of the encoder/decoder convolutions. The codebook search is always "
                                       "fp32; fp32 reproduces upstream's tokens exactly."),
                io.Combo.Input("device", options=list(DEVICES), default="auto",
                               tooltip="auto = ComfyUI's compute device under its memory management (the model, "
                                       "~0.3 GB, is loaded for Encode/Decode and offloaded when the room is needed); "
                                       "cpu = always on the CPU."),
            ],
            outputs=[types.Tokenizer.Output(display_name="tokenizer", tooltip="The 4DMoT tokenizer, for Encode/Decode Motion.")],
        )

    @classmethod
    def execute(cls, tokenizer_file: str, dtype: str = "fp32", device: str = "auto") -> io.NodeOutput:
        if tokenizer_file == NO_FILES:
            raise FileNotFoundError(f"no motion tokenizer selected: {NO_FILES} (download from {MODEL_HELP_URL})")
        check_choice("dtype", dtype, DTYPES)
        check_choice("device", device, DEVICES)
        path = resolve_model(FOLDERS, tokenizer_file, hint=f"4DMoT comes from {MODEL_HELP_URL}")
        managed = load_managed(load_tokenizer, path, dtype, device)
        managed.model.source_name = tokenizer_file
        return io.NodeOutput(managed)


class MTVEncodeMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVEncodeMotion",
            display_name="Encode Motion (MTV 4DMoT)",
            category=CATEGORY,
            description=(
                "Turns a joint sequence into 4D motion tokens for the MV-DiTs: overlapping windows of "
                f"{WINDOW_FRAMES} frames ({latent_frames(WINDOW_FRAMES)} latent frames, "
                f"{latent_frames(WINDOW_FRAMES) * NUM_JOINTS} tokens each), each encoded on its own as in training. "
                "Also decodes the "
                "tokens back so you can preview what the DiT will follow, and reports the error in mm."
            ),
            inputs=[
                types.Tokenizer.Input("tokenizer", tooltip="From Load Motion Tokenizer."),
                types.Joints.Input("joints", tooltip="SMPL-24 joints in camera-frame millimetres."),
                io.Int.Input("window", default=WINDOW_FRAMES, min=0, max=10_001,
                             tooltip=f"Frames per window (4k+1; the DiTs use {WINDOW_FRAMES}). 0 encodes the whole "
                                     "sequence as one window of any length (best as 8k+1 frames)."),
                io.Int.Input("overlap", default=OVERLAP_FRAMES, min=1, max=10_001,
                             tooltip="Frames shared by consecutive windows (4k+1)."),
            ],
            outputs=[
                types.Motion.Output(display_name="motion", tooltip="Motion tokens per window, for the MV-DiT sampler."),
                types.Joints.Output(display_name="reconstructed",
                                    tooltip="The tokens decoded back to joints: what the DiT will follow."),
                io.String.Output(display_name="mpjpe", tooltip="Reconstruction error in mm (mean and worst frame)."),
            ],
        )

    @classmethod
    def execute(cls, tokenizer, joints: JointSequence, window: int = WINDOW_FRAMES,
                overlap: int = OVERLAP_FRAMES) -> io.NodeOutput:
        bar = progress(2)  # the totals come with the callbacks: 2 x the number of windows

        def on_encode(step, total, preview=None):
            bar(step, 2 * total, None)

        def on_decode(step, total, preview=None):
            bar(total + step, 2 * total, None)

        frames = window or joints.num_frames
        need = tokenizer_activation_bytes(tokenizer.model.config, frames, dtype=tokenizer.model.dtype)
        with loaded(tokenizer, memory_required=need) as (model,):
            motion = encode_windows(model, joints, window=window, overlap=overlap, callback=on_encode)
            motion.meta["tokenizer"] = getattr(model, "source_name", "")
            recon = decode_motion(model, motion, callback=on_decode)
        text = reconstruction_report(motion, recon)
        logger.info("encoded %d frames: %s", motion.joints.num_frames, text)
        return io.NodeOutput(motion, recon, text)


class MTVDecodeMotionTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVDecodeMotionTokens",
            display_name="Decode Motion Tokens (MTV 4DMoT)",
            category=CATEGORY,
            description="Decodes motion tokens back to a joint sequence in mm (overlapping windows are cross-faded).",
            inputs=[
                types.Tokenizer.Input("tokenizer", tooltip="The tokenizer that made the tokens."),
                types.Motion.Input("motion", tooltip="Motion tokens from Encode Motion."),
            ],
            outputs=[types.Joints.Output(display_name="joints", tooltip="Decoded joint sequence (SMPL-24, mm).")],
        )

    @classmethod
    def execute(cls, tokenizer, motion: MotionTokens) -> io.NodeOutput:
        bar = progress(len(motion.windows))
        frames = max((w.num_frames for w in motion.windows), default=1)
        need = tokenizer_activation_bytes(tokenizer.model.config, frames, dtype=tokenizer.model.dtype)
        with loaded(tokenizer, memory_required=need) as (model,):
            return io.NodeOutput(decode_motion(model, motion, callback=bar))


NODES = [MTVLoadMotionTokenizer, MTVEncodeMotion, MTVDecodeMotionTokens]
