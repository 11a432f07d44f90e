"""SMPL-24 joint sequences: the motion type, its file formats, edits and rendering."""

from .sequence import NUM_JOINTS, SMPL_JOINT_NAMES, JointSequence

__all__ = ["NUM_JOINTS", "SMPL_JOINT_NAMES", "JointSequence"]
