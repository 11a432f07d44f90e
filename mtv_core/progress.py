"""Progress reporting and cancellation for long-running core functions.

Core functions accept ``callback: ProgressCallback | None``. It is called as
``callback(step, total, preview)`` after each unit of work (``preview`` is an optional
(H, W, 3) float image in 0..1, or None). A callback cancels the work by raising; the
node layer passes one that updates ComfyUI's progress bar, which raises on Cancel.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

ProgressCallback = Callable[[int, int, Optional[np.ndarray]], None]


def report(callback: ProgressCallback | None, step: int, total: int, preview: np.ndarray | None = None) -> None:
    """Call ``callback`` if one was given."""
    if callback is not None:
        callback(step, total, preview)
