"""Frames -> tracked SMPL-24 joint sequences: NLF detection, person selection, gap filling."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..motion.sequence import JointSequence
from ..progress import ProgressCallback
from .extract import FrameDetections, detect_people
from .model import NLFModel
from .tracking import PersonTrack, TrackedBoxes, track_people

logger = logging.getLogger(__name__)

DEFAULT_FPS = 20.0  # MTVCrafter's sampling rate, used when the source rate is unknown


@dataclass
class NLFMotion:
    """Result of ``extract_smpl_motion``: one entry per tracked person, the chosen one first."""

    sequences: list[JointSequence]
    boxes: list[TrackedBoxes]
    tracks: list[PersonTrack]
    detections: FrameDetections


def track_to_sequence(track: PersonTrack, detections: FrameDetections, fps: float, extra_meta: dict) -> JointSequence:
    """Wrap a track as a ``JointSequence`` (joints3d_nonparam, mm, camera frame) with JSON metadata."""
    height, width = detections.image_size
    meta = {
        "source": "nlf",
        "joints": "joints3d_nonparam",
        "image_height": int(height),
        "image_width": int(width),
        "fov_degrees": float(detections.fov_degrees),
        "detector_threshold": float(detections.detector_threshold),
        "track_id": int(track.track_id),
        "filled_frames": int((~track.valid).sum()),
        **extra_meta,
    }
    return JointSequence(joints_mm=track.joints_mm, fps=fps, valid=track.valid, meta=meta)


def extract_smpl_motion(
    model: NLFModel,
    frames: torch.Tensor | np.ndarray,
    *,
    fps: float = DEFAULT_FPS,
    batch_size: int = 8,
    fov_degrees: float = 55.0,
    detector_threshold: float = 0.3,
    policy: str = "largest",
    person_index: int = 0,
    max_people: int = 1,
    keep_smpl_params: bool = False,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
) -> NLFMotion:
    """Extract the motion of the chosen person(s) from RGB frames (T, H, W, 3) float 0..1 or uint8.

    See ``detect_people`` for the detection arguments and ``track_people`` for the selection ones.
    Raises NLFDeviceError (no CUDA, before any work), NoPersonDetectedError (nobody in any frame).
    """
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    detections = detect_people(
        model, frames, batch_size=batch_size, fov_degrees=fov_degrees, detector_threshold=detector_threshold,
        keep_smpl_params=keep_smpl_params, device=device, offload_device=offload_device, callback=callback,
    )
    tracks = track_people(detections, policy=policy, person_index=person_index, max_people=max_people)
    extra = {"nlf_model": model.name, "person_policy": policy, "person_index": int(person_index)}
    sequences = [track_to_sequence(t, detections, fps, extra) for t in tracks]
    return NLFMotion(sequences=sequences, boxes=[t.boxes for t in tracks], tracks=tracks, detections=detections)
