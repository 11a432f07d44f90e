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
        joints = np.asarray(self.joints_mm)
        if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3):
            raise ValueError(f"joints must have shape (T, {NUM_JOINTS}, 3), got {tuple(joints.shape)}")
        if joints.shape[0] < 1:
            raise ValueError("joint sequence is empty (0 frames)")
        if not np.isfinite(joints).all():
            bad = int((~np.isfinite(joints)).any(axis=(1, 2)).sum())
            raise ValueError(f"joints contain NaN or inf values in {bad} frame(s)")
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        self.joints_mm = np.ascontiguousarray(joints, dtype=np.float32)
        self.fps = float(self.fps)
        if self.valid is None:
            self.valid = np.ones(joints.shape[0], dtype=bool)
        else:
            valid = np.asarray(self.valid, dtype=bool)
            if valid.shape != (joints.shape[0],):
                raise ValueError(f"valid mask must have shape ({joints.shape[0]},), got {tuple(valid.shape)}")
            self.valid = valid

    @property
    def num_frames(self) -> int:
        return int(self.joints_mm.shape[0])

    def __len__(self) -> int:
        return self.num_frames
