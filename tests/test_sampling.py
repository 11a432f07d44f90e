"""The shared sampling loop and scheduler adapters: flow-match Euler (the 17B's) against upstream's sigmas, on a
toy denoiser, known-frame inpainting in the channel-first layout, guidance terms with step ranges, DPM."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import reference_dir
from safetensors import safe_open

from mtv_pack.mtv_core.dit.sampling import GuidanceTerm, KnownLatents, cfg, guide, sample_loop
from mtv_pack.mtv_core.dit.schedulers import FlowMatchAdapter, make_dpm_scheduler, make_flow_match_scheduler

FLOW_CASES = sorted((reference_dir() / "wan" / "cond17b").glob("flowmatch_*.json"))


def test_flow_match_reference_present():
    assert FLOW_CASES, f"no flowmatch_*.json in {reference_dir() / 'wan' / 'cond17b'}"


@pytest.mark.parametrize("case", FLOW_CASES, ids=[c.stem for c in FLOW_CASES])
def test_flow_match_timesteps_and_sigmas_match_upstream(case):
    data = json.loads(case.read_text())
    kwargs = data["scheduler_kwargs"]
    assert kwargs["use_dynamic_shifting"] is False
    tensors = {}
    if case.with_suffix(".safetensors").is_file():
        with safe_open(str(case.with_suffix(".safetensors")), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    runs = [key for key in data if key.startswith("steps_")]
    assert runs
    for key in runs:
        steps = int(key.removeprefix("steps_"))
        adapter = make_flow_match_scheduler(shift=kwargs["shift"])
        timesteps = adapter.set_timesteps(steps)
        for name, ours in (("timesteps", timesteps), ("sigmas", adapter.sigmas)):
            expected = torch.tensor(data[key][name], dtype=torch.float32)
            torch.testing.assert_close(ours.float(), expected, rtol=1e-6, atol=1e-6, msg=f"{key} {name}")
            if f"{name}_{steps}" in tensors:
                torch.testing.assert_close(ours.float(), tensors[f"{name}_{steps}"], rtol=1e-6, atol=1e-6)


class ExactVelocity:
    """A toy flow-matching denoiser that knows the clean sample: v = (x_t - x0) / sigma, which is the velocity
    eps - x0 of the straight path x_t = (1 - sigma) x0 + sigma eps through x_t. Records what it sees."""

    def __init__(self, target: torch.Tensor, adapter: FlowMatchAdapter) -> None:
        self.target, self.adapter, self.seen = target, adapter, []

    def __call__(self, sample, timestep, step, num_steps):
        self.seen.append((step, num_steps, sample.clone(), float(timestep)))
        sigma = self.adapter.sigmas[step]
        return (sample - self.target) / sigma


def test_flow_match_on_a_toy_denoiser_reaches_the_target():
    target = torch.randn(1, 16, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    adapter = make_flow_match_scheduler()
    toy = ExactVelocity(target, adapter)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    progress, previews = [], []
    out = sample_loop(toy, noise, adapter, num_steps=10, callback=lambda s, t, p: progress.append((s, t)),
                      preview=lambda x0: previews.append(x0) or None)
    torch.testing.assert_close(out, target, atol=1e-5, rtol=0)
    assert progress == [(s, 10) for s in range(1, 11)]
    assert [t for *_, t in toy.seen] == pytest.approx(adapter.timesteps.tolist())
    for x0 in previews:  # the x0 prediction of an exact denoiser is the target at every step
        torch.testing.assert_close(x0, target, atol=1e-4, rtol=0)


def test_flow_match_known_frames_in_the_channel_first_layout():
    """The 17B's overlap carry: after every step the first latent frames (axis 2) are (1 - s) z + s e at the
    next sigma, and exactly z after the last step."""
    target = torch.zeros(1, 16, 5, 4, 6)
    known = torch.randn(1, 16, 2, 4, 6, generator=torch.Generator().manual_seed(2)) + 3.0
    adapter = make_flow_match_scheduler()
    toy = ExactVelocity(target, adapter)
    out = sample_loop(toy, torch.randn(target.shape, generator=torch.Generator().manual_seed(3)), adapter,
                      num_steps=6, generator=torch.Generator().manual_seed(4),
                      known=KnownLatents(known, 2, frame_axis=2))
    assert torch.equal(out[:, :, :2], known) and torch.allclose(out[:, :, 2:], target[:, :, 2:], atol=1e-5)
    for step, _, sample, _ in toy.seen[1:]:
        sigma = float(adapter.sigmas[step])
        noise = (sample[:, :, :2] - (1 - sigma) * known) / sigma
        assert abs(float(noise.mean())) < 0.2 and 0.8 < float(noise.std()) < 1.2, (step, sigma)


class TextAndMotionGuidance:
    """A 17B-style guidance function on toy predictions: text CFG [negative, positive] at every step plus a
    no-motion pass that only runs inside its step range."""

    def __init__(self, text: float, motion: GuidanceTerm) -> None:
        self.text, self.motion, self.passes = text, motion, []

    def __call__(self, sample, timestep, step, num_steps):
        cond, negative, no_motion = sample + 1.0, sample - 1.0, sample + 0.5
        terms = [(negative, self.text)]
        if self.motion.active(step, num_steps):
            terms.append((no_motion, self.motion.scale))
        self.passes.append(len(terms) + 1)
        return guide(cond, terms)


def test_guidance_terms_with_a_step_range():
    guidance = TextAndMotionGuidance(6.0, GuidanceTerm(2.5, start=0.5, end=1.0))
    adapter = make_flow_match_scheduler()
    sample_loop(guidance, torch.zeros(1, 16, 1, 2, 2), adapter, num_steps=10)
    assert guidance.passes == [2] * 5 + [3] * 5
    x = torch.randn(3)
    expected = cfg(x - 1, x + 1, 6.0) + 1.5 * ((x + 1) - (x + 0.5))
    torch.testing.assert_close(guide(x + 1, [(x - 1, 6.0), (x + 0.5, 2.5)]), expected)
    torch.testing.assert_close(guide(x + 1, [(x - 1, 6.0), (x + 0.5, 1.0)]), cfg(x - 1, x + 1, 6.0))
    assert torch.equal(guide(x, []), x)
    torch.testing.assert_close(cfg(x - 1, x, 1.0), x)
    assert not GuidanceTerm(1.0).active(0, 10)  # scale 1 needs no extra pass
    with pytest.raises(ValueError, match="start <= end"):
        GuidanceTerm(2.0, start=0.8, end=0.2)


def test_dpm_adapter_renoises_with_add_noise_and_cancel_stops():
    adapter = make_dpm_scheduler()
    adapter.set_timesteps(4)
    clean = torch.randn(1, 3, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    noised = adapter.renoise(clean, 0, torch.Generator().manual_seed(1))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    expected = adapter.scheduler.add_noise(clean, noise, adapter.timesteps[1:2])
    torch.testing.assert_close(noised, expected)

    calls = []

    def cancel(step, total, preview):
        calls.append(step)
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        sample_loop(lambda x, t, i, n: torch.zeros_like(x), clean, make_dpm_scheduler(), num_steps=4, callback=cancel)
    assert calls == [1]
    with pytest.raises(ValueError, match="at least 1"):
        sample_loop(lambda x, t, i, n: x, clean, make_dpm_scheduler(), num_steps=0)
