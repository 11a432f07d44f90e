"""SMPL-24 joint sequences: the motion type, its file formats, edits and rendering.

Light to import (numpy only); smplx and cv2 are imported inside the functions that need them.
"""

from .edit import body_height_m, mirror, recenter, resample, scale_to_height, smooth, trim
from .io import MOTION_EXTENSIONS, MotionFormatError, load_motion, load_motions, save_motion
from .procedural import MOTIONS, procedural_motion
from .render import intrinsics, project, render_skeleton
from .safe_pickle import UnsafePickleError, safe_load_pickle
from .sequence import NUM_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS, JointSequence
from .stats import load_stats
from .summary import motion_summary

__all__ = [
    "MOTIONS", "MOTION_EXTENSIONS", "NUM_JOINTS", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "JointSequence",
    "MotionFormatError", "UnsafePickleError", "body_height_m", "intrinsics", "load_motion", "load_motions",
    "load_stats", "mirror", "motion_summary", "procedural_motion", "project", "recenter", "render_skeleton", "resample",
    "safe_load_pickle", "save_motion", "scale_to_height", "smooth", "trim",
]  # fmt: skip
