"""Skeleton previews: project SMPL-24 joints like upstream and draw the kinematic tree with OpenCV.

Projection (upstream ``draw_pose``): pinhole camera, 55 degree field of view on the larger image
side, ``f = max(H, W) / (2 tan(27.5 deg))``, principal point at the image centre (W/2, H/2), x right,
y down. Limbs follow upstream's 21-segment tree (the neck joins the shoulders directly; collars are
not drawn). Left limbs are warm (red..yellow), right limbs cool (blue..violet), the spine and head
green, so a mirrored skeleton is easy to spot. Frames marked invalid are drawn dimmed with a grey
frame border; joints at or behind the camera plane are skipped with their limbs.
"""

from __future__ import annotations

import math

import numpy as np

from ..progress import ProgressCallback
from .sequence import JointSequence

DEFAULT_FOV_DEG = 55.0
MIN_DEPTH_MM = 10.0  # joints closer than this (or behind the camera) are not drawn

# (parent, child, RGB colour)
LIMBS = (
    (12, 15, (80, 200, 80)),  # neck-head
    (12, 9, (60, 180, 110)), (9, 6, (50, 165, 125)), (6, 3, (40, 150, 140)), (3, 0, (30, 135, 155)),  # spine
    (12, 16, (255, 60, 40)), (16, 18, (255, 110, 30)), (18, 20, (255, 160, 20)), (20, 22, (255, 210, 10)),  # L arm
    (12, 17, (40, 80, 255)), (17, 19, (40, 140, 255)), (19, 21, (40, 200, 255)), (21, 23, (120, 90, 255)),  # R arm
    (0, 1, (220, 40, 90)), (1, 4, (235, 60, 60)), (4, 7, (245, 90, 50)), (7, 10, (250, 130, 60)),  # L leg
    (0, 2, (60, 60, 220)), (2, 5, (70, 100, 230)), (5, 8, (80, 140, 240)), (8, 11, (110, 170, 250)),  # R leg
)  # fmt: skip
# Joints drawn as dots (upstream skips the collars 13 and 14); colour of the limb ending there.
_JOINT_COLOURS = {0: (30, 135, 155), 12: (80, 200, 80)} | {child: colour for _, child, colour in LIMBS}
DRAWN_JOINTS = tuple(j for j in range(24) if j not in (13, 14))


def focal_length_px(height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Upstream intrinsics: the field of view spans the larger image side."""
    return max(height, width) / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def intrinsics(height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """3x3 camera matrix K (pixels) for an image of ``height`` x ``width``."""
    f = focal_length_px(height, width, fov_deg)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(joints_mm: np.ndarray, height: int, width: int,
            fov_deg: float = DEFAULT_FOV_DEG) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) camera-frame points -> ((..., 2) pixel x/y, (...) bool "in front of the camera")."""
    joints = np.asarray(joints_mm, dtype=np.float64)
    f = focal_length_px(height, width, fov_deg)
    z = joints[..., 2]
    visible = z > MIN_DEPTH_MM
    safe_z = np.where(visible, z, 1.0)
    pixels = np.stack([f * joints[..., 0] / safe_z + width / 2.0, f * joints[..., 1] / safe_z + height / 2.0], -1)
    return pixels, visible


def _check_size(name: str, value: int, low: int = 1, high: int = 8192) -> int:
    if not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def render_skeleton(seq: JointSequence, width: int = 512, height: int = 512, background: np.ndarray | None = None,
                    line_width: int = 4, point_radius: int = 4, fov_deg: float = DEFAULT_FOV_DEG,
                    dim_invalid: float = 0.35, callback: ProgressCallback | None = None) -> np.ndarray:
    """Draw every frame of ``seq``: returns (T, H, W, 3) float32 RGB in 0..1.

    ``background``: optional (B, H, W, 3) float 0..1 (or uint8) frames drawn over; its size wins over
    ``width``/``height``; with fewer frames than the motion, its last frame is held.
    ``callback(step, total, None)`` is called after each frame (raising from it cancels).
    """
    import cv2

    line_width = _check_size("line_width", line_width, 1, 64)
    point_radius = _check_size("point_radius", point_radius, 0, 64)
    if background is not None:
        bg = np.asarray(background)
        if bg.ndim == 3:
            bg = bg[None]
        if bg.ndim != 4 or bg.shape[-1] != 3 or bg.shape[0] < 1:
            raise ValueError(f"background must be (B, H, W, 3) images, got shape {bg.shape}")
        height, width = int(bg.shape[1]), int(bg.shape[2])
    else:
        width, height = _check_size("width", width), _check_size("height", height)
        bg = None
    pixels, visible = project(seq.joints_mm, height, width, fov_deg)
    pixels = np.clip(pixels, -1e5, 1e5)
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = float(1 << shift)
    frames = np.empty((seq.num_frames, height, width, 3), np.float32)
    for t in range(seq.num_frames):
        if bg is None:
            canvas = np.zeros((height, width, 3), np.uint8)
        else:  # converted frame by frame: a long float video is never copied whole
            frame = bg[min(t, bg.shape[0] - 1)]
            canvas = (np.array(frame, dtype=np.uint8) if frame.dtype == np.uint8
                      else (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
        gain = 1.0 if seq.valid[t] else dim_invalid
        pts = np.round(pixels[t] * scale).astype(np.int64)
        for a, b, colour in LIMBS:
            if visible[t, a] and visible[t, b]:
                cv2.line(canvas, tuple(map(int, pts[a])), tuple(map(int, pts[b])),
                         tuple(int(c * gain) for c in colour), line_width, cv2.LINE_AA, shift)
        if point_radius > 0:
            for j in DRAWN_JOINTS:
                if visible[t, j]:
                    cv2.circle(canvas, tuple(map(int, pts[j])), int(point_radius * scale),
                               tuple(int(c * gain) for c in _JOINT_COLOURS[j]), -1, cv2.LINE_AA, shift)
        if not seq.valid[t]:
            cv2.rectangle(canvas, (0, 0), (width - 1, height - 1), (110, 110, 110), max(2, line_width // 2))
        np.multiply(canvas, np.float32(1.0 / 255.0), out=frames[t], dtype=np.float32)
        if callback is not None:
            callback(t + 1, seq.num_frames, None)
    return frames
