"""Procedural demo motions built from the tokenizer's mean pose: no one's recorded data is shipped.

The rest skeleton is the dataset-mean pose (``stats.load_stats()[0]``, camera frame, facing the
camera ~1.8 m away), with its bone vectors rescaled to a chosen stature (averaging shrinks the
mean pose to ~1.24 m). Motions are sinusoidal joint rotations applied by forward kinematics along
the SMPL tree, plus a pelvis trajectory; they are fully deterministic (no random numbers).
Axes: x right (the subject's left, as they face the camera), y down, z away from the camera.
"""

from __future__ import annotations

import math

import numpy as np

from .edit import body_height_m
from .render import DEFAULT_FOV_DEG
from .sequence import NUM_JOINTS, SMPL_PARENTS, JointSequence
from .stats import load_stats

MOTIONS = ("dance", "walk", "wave", "squat")

# Joint ids
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW = 12, 13, 14, 15, 16, 17, 18, 19


def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """(T,) angles in radians -> (T, 3, 3) rotations about a camera axis (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(angle), np.zeros_like(angle)
    if axis == "x":
        m = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "y":
        m = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        m = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.moveaxis(np.array(m, dtype=np.float64), (0, 1), (-2, -1))


def rest_skeleton_mm(height_m: float = 1.7) -> np.ndarray:
    """(24, 3) rest pose: the mean pose with bone vectors scaled to a stature of ``height_m``.

    The pelvis keeps the mean pose's x and y; the depth is pushed back just enough that the feet
    project at 85% of the way from the image centre to the bottom edge of a square image.
    """
    mean = load_stats()[0].astype(np.float64)
    factor = height_m / body_height_m(JointSequence(mean[None].astype(np.float32)))
    rest = np.empty_like(mean)
    rest[0] = mean[0]
    for j in range(1, NUM_JOINTS):
        rest[j] = rest[SMPL_PARENTS[j]] + factor * (mean[j] - mean[SMPL_PARENTS[j]])
    feet_y = rest[[7, 8, 10, 11], 1].max()
    depth = max(float(mean[0, 2]), feet_y / (0.85 * math.tan(math.radians(DEFAULT_FOV_DEG / 2))))
    rest[:, 2] += depth - rest[0, 2]
    return rest


def _forward_kinematics(rest: np.ndarray, local: np.ndarray, root: np.ndarray) -> np.ndarray:
    """Local rotations (T, 24, 3, 3) in the camera frame, pelvis positions (T, 3) -> joints (T, 24, 3)."""
    count = local.shape[0]
    glob = np.empty_like(local)
    joints = np.empty((count, NUM_JOINTS, 3))
    glob[:, 0] = local[:, 0]
    joints[:, 0] = root
    for j in range(1, NUM_JOINTS):
        p = SMPL_PARENTS[j]
        glob[:, j] = glob[:, p] @ local[:, j]
        joints[:, j] = joints[:, p] + glob[:, p] @ (rest[j] - rest[p])
    return joints


def procedural_motion(kind: str = "dance", frames: int = 49, fps: float = 20.0, height_m: float = 1.7,
                      speed: float = 1.0) -> JointSequence:
    """A deterministic demo motion ``kind`` (one of ``MOTIONS``) of ``frames`` frames at ``fps``.

    ``speed`` scales the tempo (1.0: dance/walk at 1 cycle per second, wave at 2 waves per second).
    """
    if kind not in MOTIONS:
        raise ValueError(f"unknown procedural motion {kind!r}; choose one of {', '.join(MOTIONS)}")
    if not isinstance(frames, (int, np.integer)) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not math.isfinite(height_m) or not 0.3 <= height_m <= 3.0:
        raise ValueError(f"height must be between 0.3 and 3.0 metres, got {height_m}")
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a positive number, got {speed}")
    rest = rest_skeleton_mm(height_m)
    t = np.arange(frames, dtype=np.float64) / fps
    phase = 2.0 * math.pi * speed * t
    local = np.tile(np.eye(3), (frames, NUM_JOINTS, 1, 1))
    root = np.tile(rest[0], (frames, 1))
    zero = np.zeros(frames)
    # The mean pose's upper arms hang down (+y); a rotation about z by -a raises the left arm sideways
    # (towards +x, then up), by +a the right arm.
    left_arm, right_arm = zero.copy(), zero.copy()
    left_fore, right_fore = zero.copy(), zero.copy()
    arm_swing_l, arm_swing_r = zero.copy(), zero.copy()
    hip_l, hip_r, knee_l, knee_r = zero.copy(), zero.copy(), zero.copy(), zero.copy()
    spine_yaw, spine_roll = zero.copy(), zero.copy()

    if kind == "walk":  # walking in place, facing the camera; negative x-rotation = towards the camera
        hip_l, hip_r = -0.45 * np.sin(phase), 0.45 * np.sin(phase)
        knee_l = 0.6 * np.clip(np.sin(phase + 0.9), 0, None)
        knee_r = 0.6 * np.clip(np.sin(phase + math.pi + 0.9), 0, None)
        arm_swing_l, arm_swing_r = 0.35 * np.sin(phase), -0.35 * np.sin(phase)
        left_fore = right_fore = np.full(frames, 0.25)
        root[:, 1] -= 25.0 * np.abs(np.cos(phase))  # rise at mid-stance
        spine_yaw = 0.08 * np.sin(phase)
    elif kind == "dance":  # side-to-side groove, arms alternating up and down, knees bouncing
        root[:, 0] += 120.0 * np.sin(phase)
        root[:, 1] += 40.0 * (1 - np.cos(2 * phase)) / 2
        knee_l = knee_r = 0.25 * (1 - np.cos(2 * phase)) / 2
        hip_l = hip_r = -knee_l / 2
        left_arm = -1.6 * (0.5 + 0.5 * np.sin(phase))
        right_arm = 1.6 * (0.5 - 0.5 * np.sin(phase))
        left_fore, right_fore = -0.6 * (0.5 + 0.5 * np.cos(phase)), 0.6 * (0.5 - 0.5 * np.cos(phase))
        spine_roll = 0.12 * np.sin(phase)
        spine_yaw = 0.25 * np.sin(phase / 2)
    elif kind == "wave":  # right arm raised, forearm waving; the rest breathes a little
        right_arm = np.full(frames, 2.1)
        right_fore = -0.5 + 0.45 * np.sin(2 * phase)
        root[:, 1] += 5.0 * np.sin(phase / 2)
        spine_roll = 0.04 * np.sin(phase / 2)
    elif kind == "squat":  # knees bend, hips back, pelvis drops; arms forward for balance
        depth = 0.5 - 0.5 * np.cos(phase / 2)
        hip_l = hip_r = -1.2 * depth
        knee_l = knee_r = 2.0 * depth
        root[:, 1] += 350.0 * depth * height_m / 1.7
        root[:, 2] += 120.0 * depth
        arm_swing_l = arm_swing_r = -1.2 * depth
    local[:, L_SHOULDER] = _rot("z", left_arm) @ _rot("x", arm_swing_l)
    local[:, R_SHOULDER] = _rot("z", right_arm) @ _rot("x", arm_swing_r)
    local[:, L_ELBOW] = _rot("z", left_fore) @ _rot("x", -np.abs(left_fore) * 0.3)
    local[:, R_ELBOW] = _rot("z", right_fore) @ _rot("x", -np.abs(right_fore) * 0.3)
    local[:, L_HIP] = _rot("x", hip_l)
    local[:, R_HIP] = _rot("x", hip_r)
    local[:, L_KNEE] = _rot("x", knee_l)
    local[:, R_KNEE] = _rot("x", knee_r)
    local[:, SPINE1] = _rot("y", spine_yaw) @ _rot("z", spine_roll)
    joints = _forward_kinematics(rest, local, root)
    meta = {"format": "procedural", "motion": kind, "height_m": height_m, "speed": speed}
    return JointSequence(joints.astype(np.float32), fps=fps, meta=meta)
