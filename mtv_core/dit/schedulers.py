"""Scheduler adapters: one interface over the diffusers schedulers the MV-DiTs sample with.

The sampling loop (``sampling.sample_loop``) only calls ``set_timesteps``, ``scale_model_input``, ``step``
and ``renoise``; an adapter hides what its scheduler needs beyond that:

- ``DPMAdapter``: ``CogVideoXDPMScheduler`` (MV-DiT-7B, v-prediction). Its ``step`` needs the previous x0
  prediction and the previous timestep, and draws noise from the generator. Known latents are re-noised
  to the next timestep with ``add_noise``.
- ``FlowMatchAdapter``: ``FlowMatchEulerDiscreteScheduler`` (MV-DiT-17B, flow matching, shift 5):
  ``x <- x + (sigma_next - sigma) * v``. Known latents are re-noised as ``(1 - sigma_next) z + sigma_next e``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

COGVIDEOX_SCHEDULER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cogvideox5b_scheduler.json"
# upstream infer_17b.py: FlowMatchEulerDiscreteScheduler(shift=5.0) without dynamic shifting
FLOW_MATCH_CONFIG = {
    "num_train_timesteps": 1000, "shift": 5.0, "use_dynamic_shifting": False, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}


def _randn_like(tensor: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tensor.shape, generator=generator, device=tensor.device, dtype=tensor.dtype)


class SchedulerAdapter:
    """The interface of the sampling loop. ``timesteps`` is set by ``set_timesteps``."""

    timesteps: torch.Tensor

    def set_timesteps(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def scale_model_input(self, sample: torch.Tensor, step: int) -> torch.Tensor:
        return sample

    def step(self, prediction: torch.Tensor, step: int, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(next sample, x0 prediction) after step ``step`` (0-based) with the model's ``prediction``."""
        raise NotImplementedError

    def renoise(self, clean: torch.Tensor, step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clean latents noised to the level the sample has after step ``step`` (not called after the last)."""
        raise NotImplementedError


class DPMAdapter(SchedulerAdapter):
    """``CogVideoXDPMScheduler``: second-order DPM-Solver++ with stochastic noise from the generator."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self._old_x0: torch.Tensor | None = None

    def set_timesteps(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        self.scheduler.set_timesteps(num_steps, device=device)
        self.timesteps = self.scheduler.timesteps
        self._old_x0 = None
        return self.timesteps

    def scale_model_input(self, sample: torch.Tensor, step: int) -> torch.Tensor:
        return self.scheduler.scale_model_input(sample, self.timesteps[step])

    def step(self, prediction, step, sample, generator=None):
        previous = self.timesteps[step - 1] if step > 0 else None
        sample, self._old_x0 = self.scheduler.step(
            prediction, self._old_x0, self.timesteps[step], previous, sample, generator=generator, return_dict=False
        )
        return sample, self._old_x0

    def renoise(self, clean, step, generator=None):
        noise = _randn_like(clean, generator)
        return self.scheduler.add_noise(clean, noise, self.timesteps[step + 1 : step + 2])


class FlowMatchAdapter(SchedulerAdapter):
    """``FlowMatchEulerDiscreteScheduler``: Euler steps along the flow (the prediction is the velocity)."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    @property
    def sigmas(self) -> torch.Tensor:
        """(steps + 1,) noise levels, ending in 0."""
        return self.scheduler.sigmas

    def set_timesteps(self, num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
        self.scheduler.set_timesteps(num_steps, device=device)
        self.timesteps = self.scheduler.timesteps
        return self.timesteps

    def step(self, prediction, step, sample, generator=None):
        sigma = self.sigmas[step].to(sample.device)
        next_sample = self.scheduler.step(prediction, self.timesteps[step], sample, return_dict=False)[0]
        return next_sample, sample.float() - sigma * prediction.float()

    def renoise(self, clean, step, generator=None):
        sigma = self.sigmas[step + 1].to(clean.device, clean.dtype)
        return (1.0 - sigma) * clean + sigma * _randn_like(clean, generator)


def make_dpm_scheduler() -> DPMAdapter:
    """``CogVideoXDPMScheduler`` with CogVideoX-5B's scheduler configuration (shipped with the pack)."""
    from diffusers import CogVideoXDPMScheduler

    if not COGVIDEOX_SCHEDULER_CONFIG.is_file():
        raise FileNotFoundError(f"package data file {COGVIDEOX_SCHEDULER_CONFIG} is missing; reinstall the pack")
    config = {k: v for k, v in json.loads(COGVIDEOX_SCHEDULER_CONFIG.read_text()).items() if not k.startswith("_")}
    return DPMAdapter(CogVideoXDPMScheduler(**config))


def make_flow_match_scheduler(shift: float = FLOW_MATCH_CONFIG["shift"]) -> FlowMatchAdapter:
    """``FlowMatchEulerDiscreteScheduler`` as upstream's 17B uses it (shift 5, no dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchAdapter(FlowMatchEulerDiscreteScheduler(**{**FLOW_MATCH_CONFIG, "shift": shift}))
