"""A human-readable description of a joint sequence (what the Motion Info node and logs show)."""

from __future__ import annotations

import numpy as np

from .edit import body_height_m
from .sequence import JointSequence


def motion_summary(joints: JointSequence) -> str:
    """Frames, fps and duration, valid %, extent and pelvis depth/travel in metres, estimated height, edits."""
    j = joints.joints_mm
    extent = (j.reshape(-1, 3).max(0) - j.reshape(-1, 3).min(0)) / 1000.0
    root = j[:, 0]
    lines = [
        f"frames: {joints.num_frames}",
        f"fps: {joints.fps:g} (duration {joints.num_frames / joints.fps:.2f} s)",
        f"valid: {100.0 * joints.valid.mean():.1f}% ({int(joints.valid.sum())}/{joints.num_frames})",
        f"extent (m): x {extent[0]:.2f}, y {extent[1]:.2f}, z {extent[2]:.2f}",
        f"pelvis depth (m): mean {root[:, 2].mean() / 1000:.2f}, min {root[:, 2].min() / 1000:.2f}, "
        f"max {root[:, 2].max() / 1000:.2f}",
        f"pelvis travel (m): {np.linalg.norm(np.diff(root, axis=0), axis=1).sum() / 1000:.2f}",
        f"estimated height (m): {body_height_m(joints):.2f}",
    ]
    if joints.meta.get("source"):
        lines.append(f"source: {joints.meta['source']}")
    if joints.meta.get("edits"):
        lines.append("edits: " + ", ".join(joints.meta["edits"]))
    return "\n".join(lines)
