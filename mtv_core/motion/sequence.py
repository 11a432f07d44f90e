"""The joint-sequence type shared by every stage of the pack.

Layout: ``joints_mm`` is (T, 24, 3) float32 in SMPL joint order, camera frame (x right,
y down, z forward/depth), millimetres. ``valid`` is a (T,) bool mask: False marks frames whose
joints were filled in (e.g. nobody detected) rather than observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constants import NUM_JOINTS
from ..errors import InputError
from ..limits import MAX_ABS_MM, MAX_FRAMES, check_fps, check_limit, real_array

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee",
    "spine2", "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot",
    "neck", "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip

# Parent of each joint in the SMPL kinematic tree (-1 for the root).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


@dataclass
class JointSequence:
    """SMPL-24 joints over time.

    Attributes:
        joints_mm: (T, 24, 3) float32, camera frame, y down, millimetres.
        fps: frames per second (> 0).
        valid: (T,) bool, True where the joints were observed.
        meta: free-form source metadata (file, video size, person id, ...); JSON-serialisable.
    """

    joints_mm: np.ndarray
    fps: float = 20.0
    valid: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The one validation of joint data, wherever it comes from (files, nodes, edits): real numbers
        # (no complex / timedelta / strings), finite and within MAX_ABS_MM *before* the float32 cast, so
        # values that would overflow float32 are refused rather than turned into inf.
        try:
            joints = np.asarray(self.joints_mm)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InputError(f"joints are not a regular (T, {NUM_JOINTS}, 3) array ({exc})") from None
        if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
            raise InputError(f"joints must have shape (T, {NUM_JOINTS}, 3), got {tuple(joints.shape)}")
        if joints.shape[0] < 1:
            raise InputError("joint sequence is empty (0 frames)")
        check_limit(joints.shape[0], MAX_FRAMES, "the number of frames", "joint sequence")
        if joints.dtype.kind == "f" and not np.isfinite(joints).all():
            bad = int((~np.isfinite(joints)).any(axis=(1, 2)).sum())
            raise InputError(f"joints contain NaN or inf values in {bad} frame(s)")
        joints = real_array(joints, "joints (mm)", max_abs=MAX_ABS_MM)
        self.joints_mm = np.ascontiguousarray(joints, dtype=np.float32)
        self.fps = check_fps(self.fps)
        if self.valid is None:
            self.valid = np.ones(joints.shape[0], dtype=bool)
        else:
            try:
                valid = np.asarray(self.valid)
            except (ValueError, TypeError, OverflowError, RecursionError):
                raise InputError("valid mask is not a regular array") from None
            if valid.shape != (joints.shape[0],):
                raise InputError(f"valid mask must have shape ({joints.shape[0]},), got {tuple(valid.shape)}")
            if valid.dtype.kind != "b" and not (valid.dtype.kind in "iuf" and np.isin(valid, (0, 1)).all()):
                raise InputError(f"valid mask must be booleans (or 0/1), got dtype {valid.dtype}")
            self.valid = valid.astype(bool)
        if not isinstance(self.meta, dict):
            raise InputError(f"metadata must be a dict, got a {type(self.meta).__name__}")

    @property
    def num_frames(self) -> int:
        return int(self.joints_mm.shape[0])

    def __len__(self) -> int:
        return self.num_frames
