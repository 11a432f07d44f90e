"""Training windows for 4DMoT: random 49-frame crops of joint sequences from a folder of motion files.

Every file format ``mtv_core.motion.io.load_motions`` reads is accepted (our .npz, upstream and raw
NLF pickles through the restricted unpickler, .npy; SMPL-parameter files with ``smpl_model``).
A sample is ``window`` consecutive frames from a uniformly random start, normalised with the
dataset statistics: (window, 24, 3) float32, as upstream's ``SMPLDataset``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..constants import WINDOW_FRAMES
from ..motion.io import MOTION_EXTENSIONS, load_motions

logger = logging.getLogger(__name__)


def find_motion_files(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"motion data folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MOTION_EXTENSIONS)


def load_sequences(root: str | os.PathLike, min_frames: int, smpl_model: str | None = None) -> list[np.ndarray]:
    """(T, 24, 3) float32 mm arrays of every sequence with at least ``min_frames`` frames under ``root``."""
    files = find_motion_files(root)
    if not files:
        raise FileNotFoundError(f"no motion files ({', '.join(MOTION_EXTENSIONS)}) under {root}")
    sequences, short, failed = [], 0, 0
    for path in files:
        try:
            loaded = load_motions(path, smpl_model=smpl_model)
        except Exception as exc:  # one bad file must not stop a long run; it is reported
            logger.warning("skipping %s: %s", path, exc)
            failed += 1
            continue
        for seq in loaded:
            if seq.num_frames >= min_frames:
                sequences.append(seq.joints_mm)
            else:
                short += 1
    if not sequences:
        raise ValueError(f"no sequence under {root} has the {min_frames} frames a training window needs "
                         f"({short} too short, {failed} unreadable files)")
    frames = sum(len(s) for s in sequences)
    logger.info("training data: %d sequences, %d frames from %d files (%d too short, %d unreadable)",
                len(sequences), frames, len(files), short, failed)
    return sequences


def compute_stats(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per (joint, axis) mean and std over all frames, as upstream (float64 accumulation)."""
    total = sum(len(s) for s in sequences)
    mean = sum(s.astype(np.float64).sum(axis=0) for s in sequences) / total
    var = sum(((s.astype(np.float64) - mean) ** 2).sum(axis=0) for s in sequences) / total
    std = np.sqrt(var)
    if (std <= 0).any():
        raise ValueError("motion data has a joint coordinate with zero variance; cannot normalise")
    return mean.astype(np.float32), std.astype(np.float32)


class MotionWindowDataset(Dataset):
    """Random ``window``-frame crops, normalised; one item per sequence per epoch (as upstream)."""

    def __init__(self, sequences: list[np.ndarray], mean: np.ndarray, std: np.ndarray, window: int = WINDOW_FRAMES,
                 repeats: int = 1) -> None:
        self.sequences = [np.ascontiguousarray(s, dtype=np.float32) for s in sequences if len(s) >= window]
        if not self.sequences:
            raise ValueError(f"no sequence has {window} frames")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.window = window
        self.repeats = max(1, int(repeats))

    def __len__(self) -> int:
        return len(self.sequences) * self.repeats

    def __getitem__(self, index: int) -> torch.Tensor:
        seq = self.sequences[index % len(self.sequences)]
        start = int(torch.randint(0, len(seq) - self.window + 1, ()))
        return torch.from_numpy((seq[start : start + self.window] - self.mean) / self.std)
