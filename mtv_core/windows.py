"""Window layout for sequences longer than one DiT window.

The MV-DiTs were trained on 49-frame windows (13 latent frames; ``constants.WINDOW_FRAMES``; a model whose
learned tokens cover F latent frames works on 4(F - 1) + 1). Longer motion is generated
as overlapping windows; the tokenizer encodes each window on its own (as in training) and the
sampler carries the overlap frames from one window into the next.

Layout rule: only the first ``used_frames`` frames are generated, where ``used_frames`` is the
largest value <= ``num_frames`` of the form 4k + 1 (the causal video VAE's frame grid; at most 3
trailing frames are dropped). Windows start every ``window - min_overlap`` frames; the last
window is moved back to end exactly at ``used_frames``, so its overlap with the previous one is
at least ``min_overlap`` and still of the form 4k + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import OVERLAP_FRAMES, TEMPORAL_COMPRESSION, WINDOW_FRAMES


@dataclass(frozen=True)
class WindowPlan:
    """Start frames of the windows and the number of frames they cover together."""

    starts: tuple[int, ...]
    window: int
    used_frames: int

    def overlap_before(self, index: int) -> int:
        """Frames window ``index`` shares with window ``index - 1`` (0 for the first)."""
        if index == 0:
            return 0
        return self.starts[index - 1] + self.window - self.starts[index]


def default_overlap(window: int) -> int:
    """The overlap for ``window``-frame windows: ``OVERLAP_FRAMES`` (9), or the largest 4k + 1 below shorter
    windows."""
    return max(1, min(OVERLAP_FRAMES, window - TEMPORAL_COMPRESSION))


def plan_windows(num_frames: int, window: int = WINDOW_FRAMES, min_overlap: int = OVERLAP_FRAMES) -> WindowPlan:
    """Plan overlapping windows over ``num_frames`` frames.

    Raises ValueError if the sequence is shorter than one window or the arguments do not fit
    the 4k + 1 frame grid.
    """
    grid = TEMPORAL_COMPRESSION
    if window < 1 or (window - 1) % grid:
        raise ValueError(f"window must be {grid}k+1 frames (e.g. {WINDOW_FRAMES}), got {window}")
    if min_overlap < 1 or (min_overlap - 1) % grid or min_overlap >= window:
        raise ValueError(f"overlap must be {grid}k+1 frames and smaller than the window (e.g. {OVERLAP_FRAMES}), "
                         f"got {min_overlap}")
    if num_frames < window:
        raise ValueError(f"motion has {num_frames} frames, shorter than one window of {window} frames")
    used = num_frames - (num_frames - 1) % grid
    starts = [0]
    stride = window - min_overlap
    while starts[-1] + window < used:
        starts.append(min(starts[-1] + stride, used - window))
    return WindowPlan(starts=tuple(starts), window=window, used_frames=used)
