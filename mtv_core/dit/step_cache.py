"""Optional first-block step caching (FBCache / TeaCache style): skip most of the transformer on steps where the
input barely changed. Off by default; it changes the output.

On each forward the first block runs; its residual (output - input) is compared with the previous forward's:
``change = mean |r - r_prev| / mean |r_prev|``, accumulated over consecutive skipped steps. While the accumulated
change stays below ``threshold`` the remaining blocks are skipped and their previous residual (the hidden state
after the last block minus the one after the first) is added instead; otherwise they run and the accumulator is
reset. A new run (a timestep not lower than the previous call's), another input shape, device or dtype starts
afresh, so windows and CFG batches never mix.

Typical thresholds: 0.05-0.1 (FBCache's 0.08 for Wan/CogVideoX-class models); 0 never skips.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


class FirstBlockCache:
    """State of the step cache of one model (see the module docstring). ``hits`` / ``calls`` count forwards."""

    def __init__(self, threshold: float) -> None:
        if not threshold >= 0.0:
            raise ValueError(f"cache threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)
        self.calls = self.hits = 0
        self.reset()

    def reset(self) -> None:
        self._first: torch.Tensor | None = None  # first-block residual of the last computed forward
        self._rest: torch.Tensor | None = None  # residual of the remaining blocks of the last computed forward
        self._timestep: float | None = None
        self._accumulated = 0.0

    def begin(self, timestep: torch.Tensor | float) -> None:
        """Called once per forward, before the blocks, with its (first) timestep: a non-decreasing timestep means a
        new sampling run."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        if self._timestep is not None and t >= self._timestep:
            self.reset()
        self._timestep = t

    def run(self, blocks: Sequence[nn.Module], hidden: torch.Tensor, call: Callable[[nn.Module, torch.Tensor],
            torch.Tensor]) -> torch.Tensor:
        """The hidden state after ``blocks`` (``call(block, hidden)`` runs one), reusing the cached residual of
        blocks[1:] when the first block's residual changed less than the threshold since it was computed."""
        self.calls += 1
        first_out = call(blocks[0], hidden)
        first = first_out - hidden
        previous = self._first
        if previous is not None and previous.shape == first.shape and previous.device == first.device \
                and previous.dtype == first.dtype and self._rest is not None:
            change = float((first - previous).abs().float().mean() / previous.abs().float().mean().clamp_min(1e-12))
            if self._accumulated + change < self.threshold:
                self._accumulated += change
                self.hits += 1
                return first_out + self._rest
        out = first_out
        for block in blocks[1:]:
            out = call(block, out)
        self._first, self._rest, self._accumulated = first, out - first_out, 0.0
        return out


def run_blocks(model: nn.Module, blocks: Sequence[nn.Module], hidden: torch.Tensor,
               call: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``hidden`` through ``blocks``, through the model's step cache when one is set (``step_cache``)."""
    cache: FirstBlockCache | None = getattr(model, "step_cache", None)
    if cache is None or len(blocks) < 2:
        for block in blocks:
            hidden = call(block, hidden)
        return hidden
    return cache.run(blocks, hidden, call)


@contextlib.contextmanager
def step_caching(model: nn.Module, threshold: float | None) -> Iterator[FirstBlockCache | None]:
    """Use a ``FirstBlockCache(threshold)`` for ``model`` inside the block (None / 0: no caching); yields it."""
    if not threshold:
        yield None
        return
    cache = FirstBlockCache(threshold)
    previous = getattr(model, "step_cache", None)
    model.step_cache = cache
    try:
        yield cache
    finally:
        model.step_cache = previous
        if cache.calls:
            logger.info("step cache (threshold %g): skipped the blocks after the first on %d of %d forwards",
                        threshold, cache.hits, cache.calls)
