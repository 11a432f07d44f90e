"""Dataset normalisation statistics of the released 4DMoT tokenizer (package data).

``mean`` and ``std`` are (24, 3) float32 in millimetres, camera frame (upstream ``data/mean.npy`` and
``data/std.npy``). The tokenizer input is ``(joints_mm - mean) / std``; the same mean also gives the
joint positions of the motion RoPE. The mean pose stands ~1.82 m in front of the camera (pelvis at
(0.8, 202, 1822) mm), head up (negative y).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name in ("mean", "std"):
        path = DATA_DIR / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"package data file {path} is missing; reinstall the pack")
        array = np.load(path, allow_pickle=False)
        if array.shape != (24, 3):
            raise ValueError(f"{path} has shape {array.shape}, expected (24, 3)")
        array.setflags(write=False)
        arrays.append(array)
    return arrays[0], arrays[1]


def load_stats() -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (24, 3) float32 mm, read-only."""
    return _load()


def normalize(joints_mm: np.ndarray) -> np.ndarray:
    """(..., 24, 3) mm -> tokenizer input ``(joints_mm - mean) / std`` (float32)."""
    mean, std = load_stats()
    return ((np.asarray(joints_mm, dtype=np.float32) - mean) / std).astype(np.float32)


def denormalize(normalized: np.ndarray) -> np.ndarray:
    """Inverse of ``normalize``: (..., 24, 3) -> mm."""
    mean, std = load_stats()
    return (np.asarray(normalized, dtype=np.float32) * std + mean).astype(np.float32)
