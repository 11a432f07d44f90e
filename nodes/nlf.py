"""NLF nodes: load the NLF TorchScript model, extract a tracked SMPL-24 joint sequence from frames."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..mtv_core.motion.render import render_skeleton
from ..mtv_core.nlf import (
    DEFAULT_FPS,
    DEFAULT_MODEL_NAME,
    MODEL_SUFFIXES,
    NLF_LICENSE_NOTE,
    NLF_RELEASE_URL,
    PERSON_POLICIES,
    NLFModelNotFoundError,
    check_device,
    extract_smpl_motion,
    load_nlf_model,
)
from . import types
from ._comfy import NLF_FOLDER, folder_dirs, io, model_choices, offload_device, progress, resolve_model, torch_device

logger = logging.getLogger(__name__)

CATEGORY = f"{types.CATEGORY}/NLF"
PREVIEW_MAX_SIDE = 512


def _model_choices() -> list[str]:
    # With no file yet, offer the expected name so running the node explains where to put it.
    return model_choices((NLF_FOLDER,), MODEL_SUFFIXES, DEFAULT_MODEL_NAME)


class MTVLoadNLFModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVLoadNLFModel",
            display_name="Load NLF Model (MTV)",
            category=CATEGORY,
            description=(
                "Loads an NLF multi-person TorchScript model (nlf_l_multi*.torchscript or nlf_s_multi*) from "
                f"models/nlf. Not downloaded automatically: get it from {NLF_RELEASE_URL}. "
                f"{NLF_LICENSE_NOTE}. Needs an NVIDIA CUDA GPU to run."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name", options=_model_choices(),
                    tooltip=f"NLF TorchScript file in ComfyUI/models/nlf (download it yourself from {NLF_RELEASE_URL}; "
                    "non-commercial licence). L is more accurate, S is faster.",
                ),
                io.Boolean.Input(
                    "warm_up", default=False,
                    tooltip="Run two small detections right after loading, so the first extraction does not pay "
                    "TorchScript's compile passes (needs CUDA).",
                ),
            ],
            outputs=[types.NLFModel.Output(display_name="nlf_model", tooltip="The NLF model, for Extract SMPL Motion.")],
        )

    @classmethod
    def execute(cls, model_name: str, warm_up: bool = False) -> io.NodeOutput:
        try:
            path = resolve_model(NLF_FOLDER, model_name)
        except FileNotFoundError:
            raise NLFModelNotFoundError(model_name, folder_dirs(NLF_FOLDER)) from None
        model = load_nlf_model(path, device=torch_device(), offload_device=offload_device(), warm_up=warm_up)
        return io.NodeOutput(model)


def _fps_or_none(rate) -> float | None:
    """A usable frame rate, or None. ComfyUI reports exactly 1 fps when a container has no rate at all."""
    if rate is None or float(rate) <= 0:
        return None
    if float(rate) == 1.0:
        logger.warning("the video reports 1 fps, ComfyUI's value for 'unknown': using the default; set fps to override")
        return None
    return float(rate)


def _video_frames(video) -> tuple[torch.Tensor, float | None]:
    """ComfyUI VIDEO -> ((T, H, W, 3) float 0..1 frames, frames per second or None)."""
    components = video.get_components()
    return components.images, _fps_or_none(getattr(components, "frame_rate", None))


def _video_fps(video) -> float | None:
    """The VIDEO's frame rate, read from the container without decoding the frames where ComfyUI can."""
    get_rate = getattr(video, "get_frame_rate", None)
    if get_rate is None:  # an older VideoInput: decode to read the rate
        return _video_frames(video)[1]
    return _fps_or_none(get_rate())


def _preview(seq, frames, fov_degrees: float) -> torch.Tensor:
    """Skeleton drawn over the frames, larger side at most PREVIEW_MAX_SIDE px: (T, h, w, 3) float 0..1."""
    import cv2

    frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    frames = frames[..., :3]
    height, width = frames.shape[1:3]
    scale = min(1.0, PREVIEW_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    # The projection scales with the image (focal length ~ larger side), so a resized frame still lines up.
    overlay = render_skeleton(seq, background=frames, fov_deg=fov_degrees, line_width=3, point_radius=3)
    return torch.from_numpy(overlay)


class MTVExtractSMPL(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="MTVExtractSMPL",
            display_name="Extract SMPL Motion (NLF)",
            category=CATEGORY,
            description=(
                "Runs NLF on every frame of a driving video and returns one person's SMPL-24 joints (mm, camera "
                "frame) as a joint sequence. The person is chosen by a policy in the first frame and tracked after; "
                "frames where nobody is found are interpolated and marked invalid. Needs a CUDA GPU."
            ),
            inputs=[
                types.NLFModel.Input("nlf_model", tooltip="The model from 'Load NLF Model (MTV)'."),
                io.Image.Input(
                    "images", optional=True,
                    tooltip="Driving video frames (RGB IMAGE batch). Connect this or 'video'.",
                ),
                io.Video.Input(
                    "video", optional=True,
                    tooltip="Driving video (native VIDEO). Used when 'images' is not connected; its frame rate "
                    "is used when fps is 0.",
                ),
                io.Float.Input(
                    "fps", default=0.0, min=0.0, max=240.0, step=0.01,
                    tooltip=f"Frame rate of the motion. 0 = the VIDEO's rate when a video is connected, else "
                    f"{DEFAULT_FPS:g} (MTVCrafter's rate).",
                ),
                io.Int.Input(
                    "batch_size", default=8, min=1, max=256,
                    tooltip="Frames per NLF call. Larger is faster but needs more GPU memory; the result is the same.",
                ),
                io.Float.Input(
                    "fov_degrees", default=55.0, min=10.0, max=150.0, step=0.5,
                    tooltip="Camera field of view (on the larger image side) assumed for 3D. 55 is NLF's and "
                    "MTVCrafter's default; change it only for a known camera.",
                ),
                io.Float.Input(
                    "detection_threshold", default=0.3, min=0.01, max=1.0, step=0.01,
                    tooltip="Person detector score threshold. Lower finds more (and more false) people.",
                ),
                io.Combo.Input(
                    "person_policy", options=list(PERSON_POLICIES), default="largest",
                    tooltip="Who to follow, decided in the first frame where they appear: the largest box, the "
                    "highest detector score, the leftmost, or NLF's own order ('index'). Tracked after that.",
                ),
                io.Int.Input(
                    "person_index", default=0, min=0, max=63,
                    tooltip="0 = the first person under the policy, 1 = the second, and so on.",
                ),
                io.Boolean.Input(
                    "preview", default=True,
                    tooltip=f"Draw the extracted skeleton over the frames (at most {PREVIEW_MAX_SIDE} px). Off: the "
                    "preview output is a single black frame (saves memory on long videos).",
                ),
            ],
            outputs=[
                types.Joints.Output(display_name="joints",
                                    tooltip="The tracked person's SMPL-24 joints (camera frame, mm); filled frames "
                                    "are marked invalid."),
                types.Boxes.Output(display_name="boxes", tooltip="That person's box in every frame (pixels)."),
                io.Image.Output(display_name="preview", tooltip="The skeleton drawn over the frames (or one black "
                                "frame when preview is off)."),
            ],
        )

    @classmethod
    def execute(
        cls, nlf_model, images=None, video=None, fps: float = 0.0, batch_size: int = 8, fov_degrees: float = 55.0,
        detection_threshold: float = 0.3, person_policy: str = "largest", person_index: int = 0, preview: bool = True,
    ) -> io.NodeOutput:
        device = check_device(nlf_model, torch_device())  # no CUDA: say so before decoding anything
        video_fps = None
        if images is None:
            if video is None:
                raise ValueError("connect the driving video: either 'images' (IMAGE) or 'video' (VIDEO)")
            images, video_fps = _video_frames(video)
        elif video is not None:
            video_fps = _video_fps(video)
            logger.info("both 'images' and 'video' connected: frames come from 'images', the rate from 'video'")
        if fps > 0:
            fps_source = "widget"
        elif video_fps:
            fps, fps_source = video_fps, "video"
        else:
            fps, fps_source = DEFAULT_FPS, "default"
        motion = extract_smpl_motion(
            nlf_model, images, fps=fps, batch_size=batch_size, fov_degrees=fov_degrees,
            detector_threshold=detection_threshold, policy=person_policy, person_index=person_index,
            device=device, offload_device=offload_device(), callback=progress(int(images.shape[0])),
        )
        seq, boxes = motion.sequences[0], motion.boxes[0]
        seq.meta["fps_source"] = fps_source
        shown = _preview(seq, images, fov_degrees) if preview else torch.zeros(1, 64, 64, 3)
        return io.NodeOutput(seq, boxes, shown)


NODES = [MTVLoadNLFModel, MTVExtractSMPL]
