"""denoise_7b on a tiny model: CFG batching, guidance 1.0, known-frame carry-over, callbacks, input checks."""

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b, make_scheduler_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES, H, W = 13, 4, 4


@pytest.fixture(scope="module")
def model():
    m = MVDiT7B(tiny_mvdit7b_config())
    m.load_state_dict(random_state_dict_7b(tiny_mvdit7b_config(), seed=5))
    return m.eval()


@pytest.fixture(scope="module")
def joint_mean():
    return np.random.default_rng(0).normal(0, 200, (24, 3)).astype(np.float32)


def _inputs(frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, frames, 16, H, W, generator=g)
    ref = torch.randn(1, frames, 16, H, W, generator=g)
    motion = torch.randn(1, frames * 24, 128, generator=g)
    return latents, ref, motion


class _Recorder(torch.nn.Module):
    """Wraps the model and records the batch size and motion tokens of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.inputs = inner, [], []
        self.config, self.unconditional_motion_token = inner.config, inner.unconditional_motion_token

    dtype = property(lambda self: self.inner.dtype)
    device = property(lambda self: self.inner.device)

    def forward(self, latents_in, timestep, motion_tokens, vision_rope, motion_rope):
        self.calls.append((latents_in.shape[0], motion_tokens.clone(), timestep.clone()))
        self.inputs.append(latents_in.clone())
        return self.inner(latents_in, timestep, motion_tokens, vision_rope, motion_rope)


def test_cfg_batch_is_unconditional_then_motion(model, joint_mean):
    latents, ref, motion = _inputs()
    rec = _Recorder(model)
    denoise_7b(rec, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=joint_mean,
               generator=torch.Generator().manual_seed(0))
    assert len(rec.calls) == 2
    batch, tokens, timestep = rec.calls[0]
    assert batch == 2 and timestep.tolist() == [999, 999]
    assert torch.equal(tokens[0], model.unconditional_motion_token.detach())
    assert torch.equal(tokens[1], motion[0])


def test_guidance_one_runs_only_the_motion_half(model, joint_mean):
    latents, ref, motion = _inputs(frames=3)  # any length works without CFG
    rec = _Recorder(model)
    out = denoise_7b(rec, latents, ref, motion, num_steps=2, guidance=1.0, joint_mean_mm=joint_mean,
                     generator=torch.Generator().manual_seed(0))
    assert [c[0] for c in rec.calls] == [1, 1] and out.shape == latents.shape


def test_guidance_changes_the_result(model, joint_mean):
    latents, ref, motion = _inputs()
    outs = [denoise_7b(model, latents, ref, motion, num_steps=2, guidance=g, joint_mean_mm=joint_mean,
                       generator=torch.Generator().manual_seed(0)) for g in (1.0, 3.0)]
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)


def test_cfg_needs_the_unconditional_token_length(model, joint_mean):
    latents, ref, motion = _inputs(frames=3)
    with pytest.raises(ValueError, match="unconditional tokens.*13 latent frames"):
        denoise_7b(model, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=joint_mean)


def test_known_frames_are_carried_and_end_clean(model, joint_mean):
    latents, ref, motion = _inputs()
    known = torch.randn(1, 5, 16, H, W, generator=torch.Generator().manual_seed(9))
    rec = _Recorder(model)
    out = denoise_7b(rec, latents, ref, motion, num_steps=3, guidance=3.0, joint_mean_mm=joint_mean,
                     generator=torch.Generator().manual_seed(0), known_latents=known, known_frames=3)
    assert torch.equal(out[:, :3], known[:, :3])  # exactly the clean values after the last step
    # at the second step the model sees the known frames noised to that step's level
    scheduler = make_scheduler_7b()
    scheduler.set_timesteps(3)
    t1 = int(scheduler.timesteps[1])
    assert rec.calls[1][2].tolist() == [t1, t1]
    alpha = scheduler.alphas_cumprod[t1]
    seen = rec.inputs[1][0, :3, :16]
    noise = (seen - alpha.sqrt() * known[0, :3]) / (1 - alpha).sqrt()
    assert abs(float(noise.mean())) < 0.15 and 0.85 < float(noise.std()) < 1.15
    plain = denoise_7b(model, latents, ref, motion, num_steps=3, guidance=3.0, joint_mean_mm=joint_mean,
                       generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out[:, 3:], plain[:, 3:], atol=1e-4)  # the carried frames steer the rest


def test_known_frames_zero_is_a_no_op(model, joint_mean):
    latents, ref, motion = _inputs()
    known = torch.randn(1, 2, 16, H, W)
    kwargs = dict(num_steps=2, guidance=3.0, joint_mean_mm=joint_mean)
    a = denoise_7b(model, latents, ref, motion, generator=torch.Generator().manual_seed(0), **kwargs)
    b = denoise_7b(model, latents, ref, motion, generator=torch.Generator().manual_seed(0),
                   known_latents=known, known_frames=0, **kwargs)
    assert torch.equal(a, b)


def test_callback_and_preview(model, joint_mean):
    latents, ref, motion = _inputs()
    seen = []
    denoise_7b(model, latents, ref, motion, num_steps=3, guidance=3.0, joint_mean_mm=joint_mean,
               callback=lambda step, total, preview: seen.append((step, total, preview)),
               preview=lambda x0: np.full((2, 2, 3), x0.shape[1] / 100, dtype=np.float32))
    assert [(s, t) for s, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(p.shape == (2, 2, 3) and p[0, 0, 0] == pytest.approx(0.13) for _, _, p in seen)


def test_callback_raising_cancels(model, joint_mean):
    latents, ref, motion = _inputs()

    def cancel(step, total, preview):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        denoise_7b(model, latents, ref, motion, num_steps=3, joint_mean_mm=joint_mean, callback=cancel)


def test_input_checks(model, joint_mean):
    latents, ref, motion = _inputs()
    with pytest.raises(ValueError, match="ref_latents"):
        denoise_7b(model, latents, ref[:, :5], motion, joint_mean_mm=joint_mean)
    with pytest.raises(ValueError, match="motion_tokens"):
        denoise_7b(model, latents, ref, motion[:, :100], joint_mean_mm=joint_mean)
    with pytest.raises(ValueError, match="channels"):
        denoise_7b(model, latents, ref, motion[..., :64], joint_mean_mm=joint_mean)
