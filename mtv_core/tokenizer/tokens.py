"""Motion tokens as passed from the tokenizer to the DiTs (the ``MTV_MOTION`` wire type)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..constants import NUM_JOINTS
from ..motion.sequence import JointSequence
from ..windows import WindowPlan


@dataclass
class TokenWindow:
    """Tokens of one window of frames, encoded on their own.

    Attributes:
        start: first frame of the window in the source sequence.
        num_frames: frames in the window (49 for a DiT window).
        tokens: (1, T' * 24, C) float32 quantised tokens, frame-major / joint-minor
            (index = f * 24 + j), C = 3072 for the released tokenizer.
        indices: (1, T' * 24) int64 codebook indices, same order.
    """

    start: int
    num_frames: int
    tokens: torch.Tensor
    indices: torch.Tensor

    @property
    def latent_frames(self) -> int:
        return self.tokens.shape[1] // NUM_JOINTS


@dataclass
class MotionTokens:
    """Tokenised motion: one ``TokenWindow`` per window of ``plan`` (or one for the whole sequence).

    ``joints`` is the (trimmed) sequence that was encoded; ``plan`` is None when the whole
    sequence was encoded as a single window of arbitrary length.
    """

    windows: list[TokenWindow]
    joints: JointSequence
    plan: WindowPlan | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.joints.fps

    @property
    def window_frames(self) -> int:
        """Video frames per window: the plan's window, else the single window's length (0 with no window)."""
        if self.plan is not None:
            return self.plan.window
        return self.windows[0].num_frames if self.windows else 0
