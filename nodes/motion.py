"""Motion nodes: load/save SMPL-24 joint sequences (MTV_JOINTS), edit them, preview them, inspect them.

Thin wrappers over ``mtv_core.motion``; all units are camera-frame millimetres (y down).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from pathlib import Path

import torch

from ..mtv_core.constants import WINDOW_FRAMES
from ..mtv_core.errors import InputError
from ..mtv_core.files import contained_path
from ..mtv_core.motion import edit
from ..mtv_core.motion.io import MOTION_EXTENSIONS, load_motion, save_motion
from ..mtv_core.motion.procedural import MOTIONS, procedural_motion
from ..mtv_core.motion.render import render_skeleton
from ..mtv_core.motion.sequence import JointSequence
from ..mtv_core.motion.stats import load_stats
from ..mtv_core.motion.summary import motion_summary
from . import types
from ._comfy import MTV_FOLDER, files_under, folder_dirs, input_directory, io, list_models, output_directory, progress, resolve_model, ui

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/Motion"
MOTIONS_PREFIX = "motions/"  # sub-folder of models/mtvcrafter holding motion files
SMPL_PREFIX = "smpl/"  # sub-folder of models/mtvcrafter holding user-supplied SMPL model files
NO_FILES = "(no motion files: put them in ComfyUI/input or models/mtvcrafter/motions)"
NO_SMPL = "none"
MAX_FRAMES = 100_000


def motion_file_choices() -> list[str]:
    """Motion files in ComfyUI's input folder, then ``motions/...`` in models/mtvcrafter."""
    registered = [n for n in list_models(MTV_FOLDER, suffixes=MOTION_EXTENSIONS) if n.startswith(MOTIONS_PREFIX)]
    inputs = files_under(input_directory(), MOTION_EXTENSIONS)
    names = inputs + [n for n in registered if n not in inputs]
    return names or [NO_FILES]


def smpl_model_choices() -> list[str]:
    return [NO_SMPL] + [n for n in list_models(MTV_FOLDER, suffixes=(".pkl", ".npz")) if n.startswith(SMPL_PREFIX)]


def resolve_motion_file(name: str) -> Path:
    """A motion choice -> its path (input folder first, then models/mtvcrafter); clear error if absent."""
    if name == NO_FILES:
        raise FileNotFoundError(f"no motion file selected: {NO_FILES}")
    root = Path(input_directory())
    try:
        candidate = contained_path(root, name, "motion file")
    except InputError:
        candidate = None  # resolve_model below names the rule
    if candidate is not None and candidate.is_file():
        return candidate
    try:
        return Path(resolve_model(MTV_FOLDER, name))
    except FileNotFoundError:
        where = ", ".join([str(root), *folder_dirs(MTV_FOLDER)])
        raise FileNotFoundError(f"motion file '{name}' not found in {where}") from None


def _ui_text(text: str):
    preview = getattr(ui, "PreviewText", None)
    return preview(text) if preview is not None else {"text": [text]}


class MTVLoadMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadMotion",
            display_name="Load Motion (MTV)",
            category=CATEGORY,
            description=(
                "Loads an SMPL-24 joint sequence: our .npz, upstream MTVCrafter pickles (several sequences: pick one "
                "with index), raw NLF-extraction pickles, AMASS/NLF SMPL-parameter files (need an SMPL model in "
                "models/mtvcrafter/smpl) or a (T,24,3) .npy in mm. Pickles are read with a restricted loader that "
                "never runs code. Files come from ComfyUI/input or models/mtvcrafter/motions."
            ),
            inputs=[
                io.Combo.Input("motion_file", options=motion_file_choices(),
                               tooltip="Motion file from ComfyUI/input or models/mtvcrafter/motions "
                                       f"({', '.join(MOTION_EXTENSIONS)})."),
                io.Int.Input("index", default=0, min=0, max=100_000,
                             tooltip="Which sequence to take from a file holding several (upstream pickles); 0 = first."),
                io.Float.Input("fps", default=0.0, min=0.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the motion; 0 keeps the file's own (20 fps for pickles, which "
                                       "carry none). Only relabels time, it does not resample."),
                io.Combo.Input("smpl_model", options=smpl_model_choices(), default=NO_SMPL, optional=True,
                               tooltip="SMPL model file (models/mtvcrafter/smpl, e.g. SMPL_NEUTRAL.pkl without chumpy, "
                                       "or .npz) used only for SMPL-parameter files. Licensed: supply your own."),
            ],
            outputs=[types.Joints.Output(display_name="joints", tooltip="The loaded joint sequence (SMPL-24, camera frame, mm).")],
        )

    @classmethod
    def fingerprint_inputs(cls, motion_file: str, index: int = 0, fps: float = 0.0, smpl_model: str = NO_SMPL):
        try:
            stat = resolve_motion_file(motion_file).stat()
            return f"{motion_file}:{stat.st_mtime_ns}:{stat.st_size}:{index}:{fps}:{smpl_model}"
        except FileNotFoundError:
            return f"{motion_file}:missing"

    @classmethod
    def execute(cls, motion_file: str, index: int = 0, fps: float = 0.0, smpl_model: str = NO_SMPL) -> io.NodeOutput:
        path = resolve_motion_file(motion_file)
        model = None if smpl_model in (None, "", NO_SMPL) else resolve_model(MTV_FOLDER, smpl_model)
        seq = load_motion(path, index=index, fps=fps if fps > 0 else None, smpl_model=model)
        return io.NodeOutput(seq)


def _next_output_path(prefix: str) -> Path:
    root = output_directory()
    # inside the output folder and never the folder itself ('.', 'sub/..' would write beside it)
    base = contained_path(root, prefix, "filename_prefix", f"the output folder {os.path.abspath(root)}")
    pattern = re.compile(re.escape(base.name) + r"_(\d{5})\.npz$")
    existing = [int(m.group(1)) for p in base.parent.glob(f"{glob.escape(base.name)}_*.npz")
                if (m := pattern.match(p.name))]
    return base.parent / f"{base.name}_{max(existing, default=0) + 1:05d}.npz"


class MTVSaveMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVSaveMotion",
            display_name="Save Motion (MTV)",
            category=CATEGORY,
            description="Saves joints as a lossless .npz (joints_mm, fps, valid mask, metadata) in ComfyUI/output. "
                        "Load Motion reads it back.",
            inputs=[
                types.Joints.Input("joints", tooltip="Joint sequence to save."),
                io.String.Input("filename_prefix", default="mtvcrafter/motion",
                                tooltip="Path under ComfyUI/output; a 5-digit counter and .npz are appended."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Full path of the saved .npz file.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, joints: JointSequence, filename_prefix: str = "mtvcrafter/motion") -> io.NodeOutput:
        path = save_motion(joints, _next_output_path(filename_prefix))
        text = f"saved {joints.num_frames} frames at {joints.fps:g} fps to {path}"
        return io.NodeOutput(str(path), ui=_ui_text(text))


def _joints_in(tooltip: str = "Joint sequence (SMPL-24, camera frame, mm)."):
    return types.Joints.Input("joints", tooltip=tooltip)


def _joints_out(tooltip: str = "The edited joint sequence (same units and layout)."):
    return [types.Joints.Output(display_name="joints", tooltip=tooltip)]


class MTVTrimMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVTrimMotion", display_name="Trim Motion (MTV)", category=CATEGORY,
            description="Keeps a frame range of the motion (units unchanged).",
            inputs=[
                _joints_in(),
                io.Int.Input("start_frame", default=0, min=0, max=MAX_FRAMES, tooltip="First frame kept (0-based)."),
                io.Int.Input("frame_count", default=0, min=0, max=MAX_FRAMES,
                             tooltip="Number of frames kept from start_frame; 0 = all remaining frames."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, start_frame: int = 0, frame_count: int = 0) -> io.NodeOutput:
        stop = None if frame_count == 0 else start_frame + frame_count
        return io.NodeOutput(edit.trim(joints, start_frame, stop))


class MTVResampleMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVResampleMotion", display_name="Resample Motion (MTV)", category=CATEGORY,
            description="Changes the frame rate by linear interpolation over the same duration; invalid (filled-in) "
                        "frames are not interpolated from. MTVCrafter was trained on 20 fps-ish clips.",
            inputs=[
                _joints_in(),
                io.Float.Input("fps", default=20.0, min=0.1, max=240.0, step=0.001, tooltip="Target frames per second."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, fps: float = 20.0) -> io.NodeOutput:
        return io.NodeOutput(edit.resample(joints, fps))


class MTVSmoothMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVSmoothMotion", display_name="Smooth Motion (MTV)", category=CATEGORY,
            description="Gaussian temporal smoothing that averages observed frames only: filled-in frames never pull "
                        "observed ones. Removes extraction jitter.",
            inputs=[
                _joints_in(),
                io.Float.Input("sigma_frames", default=1.0, min=0.0, max=50.0, step=0.1,
                               tooltip="Gaussian sigma in frames; 0 = no smoothing, 1-2 removes jitter."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, sigma_frames: float = 1.0) -> io.NodeOutput:
        return io.NodeOutput(edit.smooth(joints, sigma_frames))


class MTVMirrorMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVMirrorMotion", display_name="Mirror Motion (MTV)", category=CATEGORY,
            description="Swaps left and right: exchanges the SMPL left/right joints and flips x.",
            inputs=[
                _joints_in(),
                io.Combo.Input("about", options=["center", "camera"], default="center",
                               tooltip="center: reflect about the person's mean pelvis x (stays in place); "
                                       "camera: reflect about the optical axis (like flipping the whole image)."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, about: str = "center") -> io.NodeOutput:
        return io.NodeOutput(edit.mirror(joints, about))


class MTVScaleMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVScaleMotion", display_name="Scale Motion To Height (MTV)", category=CATEGORY,
            description="Retargets the body to a stature: every frame is scaled about its pelvis, so position and "
                        "depth stay; with anchor 'feet' the floor level is kept too.",
            inputs=[
                _joints_in(),
                io.Float.Input("height_m", default=1.7, min=0.3, max=3.0, step=0.01,
                               tooltip="Target body height in metres (estimated from the joint chain head-to-ankle)."),
                io.Combo.Input("anchor", options=["feet", "root"], default="feet",
                               tooltip="feet: keep the floor level (median lowest foot); root: keep the pelvis."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, height_m: float = 1.7, anchor: str = "feet") -> io.NodeOutput:
        return io.NodeOutput(edit.scale_to_height(joints, height_m, anchor))


# The tokenizer's dataset-mean pelvis (mm), rounded for the widgets.
_RECENTER_DEFAULT = tuple(round(float(v), 1) for v in load_stats()[0][0])


class MTVRecenterMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVRecenterMotion", display_name="Re-centre Motion (MTV)", category=CATEGORY,
            description="Moves the whole motion so the pelvis lands on a target point (camera frame, mm). The default "
                        "is where the tokenizer's training data stood (~1.8 m away); (0, 0, depth) centres it in the image.",
            inputs=[
                _joints_in(),
                io.Float.Input("x_mm", default=_RECENTER_DEFAULT[0], min=-10000.0, max=10000.0, step=1.0,
                               tooltip="Target pelvis x in mm (right of the optical axis is positive)."),
                io.Float.Input("y_mm", default=_RECENTER_DEFAULT[1], min=-10000.0, max=10000.0, step=1.0,
                               tooltip="Target pelvis y in mm (below the optical axis is positive)."),
                io.Float.Input("z_mm", default=_RECENTER_DEFAULT[2], min=100.0, max=50000.0, step=1.0,
                               tooltip="Target pelvis depth in mm (distance in front of the camera)."),
                io.Combo.Input("reference", options=["mean", "first"], default="mean",
                               tooltip="mean: move the average pelvis position; first: move the first valid frame's pelvis."),
            ],
            outputs=_joints_out(),
        )

    @classmethod
    def execute(cls, joints: JointSequence, x_mm: float = _RECENTER_DEFAULT[0], y_mm: float = _RECENTER_DEFAULT[1],
                z_mm: float = _RECENTER_DEFAULT[2], reference: str = "mean") -> io.NodeOutput:
        return io.NodeOutput(edit.recenter(joints, (x_mm, y_mm, z_mm), reference))


class MTVRenderSkeleton(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVRenderSkeleton", display_name="Render Skeleton (MTV)", category=CATEGORY,
            description="Draws the SMPL skeleton per frame with MTVCrafter's camera (pinhole, 55 degree FOV on the "
                        "larger side, centred). Left limbs warm, right limbs cool; filled-in frames dimmed with a grey "
                        "border.",
            inputs=[
                _joints_in(),
                io.Int.Input("width", default=512, min=16, max=8192, step=8,
                             tooltip="Output width in pixels (ignored when a background is connected)."),
                io.Int.Input("height", default=512, min=16, max=8192, step=8,
                             tooltip="Output height in pixels (ignored when a background is connected)."),
                io.Int.Input("line_width", default=4, min=1, max=64, tooltip="Limb thickness in pixels."),
                io.Int.Input("point_radius", default=4, min=0, max=64, tooltip="Joint dot radius in pixels; 0 = no dots."),
                io.Image.Input("background", optional=True,
                               tooltip="Optional frames to draw over (e.g. the driving video); the last one is held if "
                                       "there are fewer frames than motion frames."),
            ],
            outputs=[io.Image.Output(display_name="images", tooltip="One skeleton image per motion frame (IMAGE batch).")],
        )

    @classmethod
    def execute(cls, joints: JointSequence, width: int = 512, height: int = 512, line_width: int = 4,
                point_radius: int = 4, background: torch.Tensor | None = None) -> io.NodeOutput:
        bg = None if background is None else background.detach().float().cpu().numpy()
        frames = render_skeleton(joints, width=width, height=height, background=bg, line_width=line_width,
                                 point_radius=point_radius, callback=progress(joints.num_frames))
        return io.NodeOutput(torch.from_numpy(frames))


class MTVMotionInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVMotionInfo", display_name="Motion Info (MTV)", category=CATEGORY,
            description="Shows frames, fps, valid %, extent in metres, depth and estimated height of a motion.",
            inputs=[_joints_in("Joint sequence to describe.")],
            # Outputs are only ever appended (saved workflows link them by index).
            outputs=[io.String.Output(display_name="info", tooltip="The same facts as text (connect Preview as "
                                                                   "Text to show them on the canvas)."),
                     io.Float.Output(display_name="fps", tooltip="The motion's frame rate, e.g. for Create Video.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, joints: JointSequence) -> io.NodeOutput:
        text = motion_summary(joints)
        return io.NodeOutput(text, float(joints.fps), ui=_ui_text(text))


class MTVProceduralMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVProceduralMotion", display_name="Procedural Motion (MTV)", category=CATEGORY,
            description="A deterministic demo motion built from the tokenizer's mean pose (no recorded data): "
                        "for trying workflows without a driving video.",
            inputs=[
                io.Combo.Input("motion", options=list(MOTIONS), default="dance", tooltip="Which demo motion."),
                io.Int.Input("frames", default=WINDOW_FRAMES, min=1, max=MAX_FRAMES,
                             tooltip=f"Number of frames (MTVCrafter windows are {WINDOW_FRAMES} frames)."),
                io.Float.Input("fps", default=20.0, min=1.0, max=240.0, step=0.5, tooltip="Frames per second."),
                io.Float.Input("height_m", default=1.7, min=0.3, max=3.0, step=0.01, tooltip="Body height in metres."),
                io.Float.Input("speed", default=1.0, min=0.05, max=10.0, step=0.05,
                               tooltip="Tempo multiplier (1 = one dance/walk cycle per second)."),
            ],
            outputs=_joints_out("The generated joint sequence (SMPL-24, camera frame, mm)."),
        )

    @classmethod
    def execute(cls, motion: str = "dance", frames: int = WINDOW_FRAMES, fps: float = 20.0, height_m: float = 1.7,
                speed: float = 1.0) -> io.NodeOutput:
        return io.NodeOutput(procedural_motion(motion, frames=frames, fps=fps, height_m=height_m, speed=speed))


NODES = [
    MTVLoadMotion, MTVSaveMotion, MTVProceduralMotion, MTVTrimMotion, MTVResampleMotion, MTVSmoothMotion,
    MTVMirrorMotion, MTVScaleMotion, MTVRecenterMotion, MTVRenderSkeleton, MTVMotionInfo,
]  # fmt: skip

__all__ = ["NODES", "motion_file_choices", "motion_summary", "resolve_motion_file"]
