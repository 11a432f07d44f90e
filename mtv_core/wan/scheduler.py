"""The flow-matching schedule MV-DiT-17B samples with (upstream ``infer_17b.py``).

diffusers ``FlowMatchEulerDiscreteScheduler`` with shift 5 and no dynamic shifting (upstream passes
``mu=1`` to ``set_timesteps``, which is then ignored). Timesteps are 1000 * sigma; the last one is 24.41,
not 5, because the scheduler shifts sigma_min once when building its table and again in
``set_timesteps``. ``sigmas`` has N + 1 entries ending in 0; a step is x <- x + (sigma_next - sigma) * v.
"""

from __future__ import annotations

SCHEDULER_17B = dict(
    num_train_timesteps=1000, shift=5.0, use_dynamic_shifting=False,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)


def flowmatch_scheduler_17b():
    """A fresh ``FlowMatchEulerDiscreteScheduler`` configured as upstream's 17B pipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_17B)


def flowmatch_timesteps_17b(num_steps: int, device=None):
    """(timesteps (N,), sigmas (N + 1,)) float32 of a ``num_steps`` 17B sampling run."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    scheduler = flowmatch_scheduler_17b()
    scheduler.set_timesteps(num_steps, device=device)
    return scheduler.timesteps, scheduler.sigmas
