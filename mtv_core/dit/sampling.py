"""The one denoising loop of the MV-DiTs, with injected guidance and known-frame inpainting.

``sample_loop(predict, latents, scheduler, ...)`` runs ``num_steps`` steps of a ``schedulers`` adapter. The
model and its guidance are one function, ``predict(sample, timestep, step, num_steps) -> prediction``
(v-prediction for the 7B, flow velocity for the 17B), so a variant plugs in its conditioning and its guidance
without touching the loop. ``cfg`` and ``GuidanceTerm`` are the pieces guidance functions are built from.

Known latents (the overlap carried over from the previous window) are written into the sample after every
step, re-noised to the next noise level by the scheduler adapter, and exactly as given after the last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..progress import ProgressCallback, report
from .schedulers import SchedulerAdapter

Predict = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)`` (scale 1 = ``cond``)."""
    return uncond + scale * (cond - uncond)


def guide(cond: torch.Tensor, terms: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Several guidance terms on one conditional prediction: ``cfg`` with the first (uncond, scale) pair, then
    ``+ (scale_i - 1) * (cond - uncond_i)`` for each further pair, so that any term at scale 1 drops out.
    E.g. text guidance [negative, positive] plus a no-motion pass: ``guide(v_pos, [(v_neg, 6.0), (v_nomo, 2.0)])``.
    """
    if not terms:
        return cond
    (uncond, scale), *rest = terms
    out = cfg(uncond, cond, scale)
    for uncond_i, scale_i in rest:
        out = out + (scale_i - 1.0) * (cond - uncond_i)
    return out


@dataclass(frozen=True)
class GuidanceTerm:
    """A guidance scale that applies on part of the run: steps with ``start <= step / num_steps < end``."""

    scale: float
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {self.scale}")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise ValueError(f"guidance step range must satisfy 0 <= start <= end <= 1, got {self.start}..{self.end}")

    def active(self, step: int, num_steps: int) -> bool:
        """Whether the term changes step ``step``: inside the range and not at scale 1 (no extra pass needed)."""
        return self.scale != 1.0 and self.start * num_steps <= step < self.end * num_steps


@dataclass
class KnownLatents:
    """Clean latents whose first ``count`` frames (along ``frame_axis``) are held fixed while sampling."""

    latents: torch.Tensor
    count: int
    frame_axis: int = 1

    def paste(self, sample: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``sample`` with its first ``count`` frames replaced by ``values`` (a new tensor)."""
        sample = sample.clone()
        sample.narrow(self.frame_axis, 0, self.count).copy_(values.to(sample.dtype))
        return sample


@torch.no_grad()
def sample_loop(
    predict: Predict,
    latents: torch.Tensor,
    scheduler: SchedulerAdapter,
    *,
    num_steps: int,
    generator: torch.Generator | None = None,
    known: KnownLatents | None = None,
    callback: ProgressCallback | None = None,
    preview: Callable[[torch.Tensor], np.ndarray | None] | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (initial noise, on the model's device) in ``num_steps`` steps; returns them in their dtype.

    ``generator`` feeds the scheduler's noise and the re-noising of ``known`` frames. ``callback(step, total,
    preview)`` runs after every step, ``preview`` being ``preview(x0_prediction)`` when given, else None; a
    callback cancels the loop by raising.
    """
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    sample_dtype = latents.dtype
    timesteps = scheduler.set_timesteps(num_steps, device=latents.device)
    total = len(timesteps)
    clean = None
    if known is not None:
        clean = known.latents.narrow(known.frame_axis, 0, known.count).to(latents.device, sample_dtype)
    for i, t in enumerate(timesteps):
        prediction = predict(scheduler.scale_model_input(latents, i), t, i, total)
        latents, x0 = scheduler.step(prediction, i, latents, generator=generator)
        latents = latents.to(sample_dtype)
        if clean is not None:
            latents = known.paste(latents, scheduler.renoise(clean, i, generator) if i + 1 < total else clean)
        report(callback, i + 1, total, preview(x0) if preview is not None else None)
    return latents


@dataclass(frozen=True)
class SamplingDefaults:
    """A variant's default sampling settings (what upstream's inference script uses)."""

    steps: int
    guidance: float
    seed: int
