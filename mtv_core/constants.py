"""The numbers every stage of the pack shares, defined once.

MTVCrafter's models were trained on 49-frame windows of SMPL-24 motion: the causal video VAEs and the 4DMoT
compress time by 4 keeping frame 0, so a window of 4k + 1 frames has k + 1 latent frames (49 -> 13), and
every latent frame carries one motion token per joint (13 x 24 = 312). Long videos are overlapping windows
that share ``OVERLAP_FRAMES`` frames (upstream's 17B long-video setting).
"""

from __future__ import annotations

NUM_JOINTS = 24  # SMPL body joints per frame, and motion tokens per latent frame
TEMPORAL_COMPRESSION = 4  # video frames per latent frame after the first (frame grid 4k + 1)
WINDOW_FRAMES = 49  # frames per DiT window (13 latent frames) in the released models
OVERLAP_FRAMES = 9  # frames consecutive windows share (3 latent frames)


def latent_frames(num_frames: int) -> int:
    """Latent frames for ``num_frames`` video frames on the 4k + 1 grid (49 -> 13)."""
    return (num_frames - 1) // TEMPORAL_COMPRESSION + 1


def video_frames(num_latent_frames: int) -> int:
    """Video frames that ``num_latent_frames`` latent frames stand for (13 -> 49)."""
    return TEMPORAL_COMPRESSION * (num_latent_frames - 1) + 1
