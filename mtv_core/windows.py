"""Window layout for sequences longer than one DiT window.

The MV-DiTs were trained on 49-frame windows (13 latent frames). Longer motion is generated
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


def plan_windows(num_frames: int, window: int = 49, min_overlap: int = 9) -> WindowPlan:
    """Plan overlapping windows over ``num_frames`` frames.

    Raises ValueError if the sequence is shorter than one window or the arguments do not fit
    the 4k + 1 frame grid.
    """
    if window < 1 or (window - 1) % 4:
        raise ValueError(f"window must be 4k+1 frames (e.g. 49), got {window}")
    if min_overlap < 1 or (min_overlap - 1) % 4 or min_overlap >= window:
        raise ValueError(f"overlap must be 4k+1 frames and smaller than the window (e.g. 9), got {min_overlap}")
    if num_frames < window:
        raise ValueError(f"motion has {num_frames} frames, shorter than one window of {window} frames")
    used = num_frames - (num_frames - 1) % 4
    starts = [0]
    stride = window - min_overlap
    while starts[-1] + window < used:
        starts.append(min(starts[-1] + stride, used - window))
    return WindowPlan(starts=tuple(starts), window=window, used_frames=used)
