"""Long videos on a tiny MV-DiT-7B + tiny VAE: window layout, carried overlap, assembly, progress, errors."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit import pipeline
from mtv_pack.mtv_core.dit.latents import MTVLatent
from mtv_pack.mtv_core.dit.loading import load_mvdit7b
from mtv_pack.mtv_core.dit.pipeline_7b import decode_7b, sample_7b
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.tiny import write_tiny_mvdit7b
from mtv_pack.mtv_core.dit.vae import load_vae, write_tiny_vae
from mtv_pack.mtv_core.dit.video_vae import frames_to_pixels
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow
from mtv_pack.mtv_core.windows import plan_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
STEPS = 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = load_mvdit7b(write_tiny_mvdit7b(root / "dit.safetensors"), dtype=torch.float32)
    vae = load_vae(write_tiny_vae(root / "vae.safetensors"), dtype=torch.float32)
    return model, vae


def make_motion(num_frames: int, dim: int = 128, seed: int = 0, window: int | None = 49) -> MotionTokens:
    gen = torch.Generator().manual_seed(seed)
    joints = JointSequence(np.zeros((num_frames, 24, 3), np.float32), fps=25.0)
    if window is None:  # a single window covering the whole sequence
        lf = (num_frames - 1) // 4 + 1
        tokens = torch.randn(1, lf * 24, dim, generator=gen)
        return MotionTokens([TokenWindow(0, num_frames, tokens, torch.zeros(1, lf * 24, dtype=torch.long))], joints)
    plan = plan_windows(num_frames, window=window)
    windows = [
        TokenWindow(s, window, torch.randn(1, 13 * 24, dim, generator=gen), torch.zeros(1, 13 * 24, dtype=torch.long))
        for s in plan.starts
    ]
    return MotionTokens(windows, joints, plan)


REFERENCE = (np.random.default_rng(0).random((80, 96, 3)) * 255).astype(np.uint8)


class Spy:
    """Wraps denoise_7b and records its inputs and outputs."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, latents, ref_latents, tokens, **kwargs):
        out = denoise_7b(model, latents, ref_latents, tokens, **kwargs)
        self.calls.append(dict(kwargs, latents=latents, ref_latents=ref_latents, tokens=tokens, out=out))
        return out


@pytest.mark.parametrize("num_frames, expected_starts", [(49, (0,)), (89, (0, 40)), (97, (0, 40, 48))])
def test_window_boundaries(models, num_frames, expected_starts):
    model, vae = models
    motion = make_motion(num_frames)
    spy, progress = Spy(), []
    sampled = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, seed=1,
                        callback=lambda s, t, p: progress.append((s, t, p)), keep_frames=True, denoise=spy)
    frames = sampled.frames
    assert isinstance(sampled, MTVLatent) and sampled.variant == "7b" and sampled.latent_format == vae.latent_format
    assert sampled.starts == expected_starts and sampled.num_frames == num_frames
    assert frames.shape == (num_frames, SIZE, SIZE, 3) and sampled.fps == 25.0
    assert sampled.samples.shape == (len(expected_starts), 13, 16, SIZE // 8, SIZE // 8)
    n = len(expected_starts)
    assert [s for s, _, _ in progress] == list(range(1, n * STEPS + 1))
    assert {t for _, t, _ in progress} == {n * STEPS}

    decoded = [vae.decode_frames(call["out"]) for call in spy.calls]
    # the reference latents are shared by every window; every window used its own tokens
    for k, call in enumerate(spy.calls):
        assert torch.equal(call["ref_latents"], spy.calls[0]["ref_latents"])
        assert torch.equal(call["tokens"], motion.windows[k].tokens)
    assert spy.calls[0]["known_latents"] is None and spy.calls[0]["known_frames"] == 0
    for k in range(1, n):
        overlap = expected_starts[k - 1] + 49 - expected_starts[k]
        known_frames = (overlap - 1) // 4 + 1
        call = spy.calls[k]
        assert call["known_frames"] == known_frames
        # the carried latents are the previous window's last `overlap` decoded frames, re-encoded and scaled
        carry = frames_to_pixels(decoded[k - 1][-overlap:])
        expected = vae.encode(carry, sample=False) * 0.7
        assert torch.allclose(call["known_latents"][:, :known_frames], expected, atol=1e-6)
        # and the new window starts exactly on them
        assert torch.equal(call["out"][:, :known_frames], call["known_latents"][:, :known_frames])
    # assembly: earlier windows up to the next start, the last window entirely
    for k in range(n):
        end = expected_starts[k + 1] if k + 1 < n else num_frames
        assert torch.equal(frames[expected_starts[k]:end], decoded[k][: end - expected_starts[k]])
    # the node path (decode afterwards) gives the same frames as the CLI path
    without = dataclasses.replace(sampled, frames=None, decoded_by=None)
    assert torch.equal(decode_7b(vae, without), frames)


def test_seed_determinism_and_preview(models):
    model, vae = models
    motion = make_motion(49, seed=3)
    previews = []
    a = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, seed=7, preview=True,
                  callback=lambda s, t, p: previews.append(p))
    b = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, seed=7)
    c = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, seed=8)
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert len(previews) == STEPS and all(p.shape == (SIZE // 8, SIZE // 8, 3) for p in previews)
    assert all(0 <= p.min() and p.max() <= 1 for p in previews)


def test_guidance_changes_output_and_short_single_window_disables_it(models, caplog):
    model, vae = models
    motion = make_motion(49, seed=4)
    g1 = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, guidance=1.0)
    g3 = sample_7b(model, vae, REFERENCE, motion, width=SIZE, height=SIZE, num_steps=STEPS, guidance=3.0)
    assert not torch.allclose(g1.samples, g3.samples)
    short = make_motion(33, window=None)
    with caplog.at_level(logging.WARNING):
        out = sample_7b(model, vae, REFERENCE, short, width=SIZE, height=SIZE, num_steps=1, guidance=3.0,
                        keep_frames=True)
    assert "motion guidance is disabled" in caplog.text
    assert out.frames.shape[0] == 33


def test_size_rounding_and_errors(models, caplog):
    model, vae = models
    motion = make_motion(49)
    with caplog.at_level(logging.WARNING):
        out = sample_7b(model, vae, REFERENCE, motion, width=72, height=66, num_steps=1, keep_frames=True)
    assert (out.width, out.height) == (80, 64) and out.frames.shape == (49, 64, 80, 3) and "not a multiple of 16" in caplog.text
    with pytest.raises(ValueError, match="does not belong to this model"):
        sample_7b(model, vae, REFERENCE, make_motion(49, dim=48), width=SIZE, height=SIZE, num_steps=1)
    with pytest.raises(ValueError, match="at least 64 px"):
        sample_7b(model, vae, np.zeros((32, 32, 3), np.uint8), motion, width=SIZE, height=SIZE, num_steps=1)
    with pytest.raises(ValueError, match="shorter than one window"):
        make_motion(40)
    with pytest.raises(ValueError, match="at least one window"):
        sample_7b(model, vae, REFERENCE, MotionTokens([], motion.joints), width=SIZE, height=SIZE)
    with pytest.raises(ValueError, match="these latents come from MV-DiT-17B, not MV-DiT-7B"):
        decode_7b(vae, dataclasses.replace(out, variant="17b"))
    with pytest.raises(ValueError, match="expected the latents of an MTV sampler"):
        decode_7b(vae, {"samples": torch.zeros(1)})


def test_cancel_stops_between_steps(models):
    model, vae = models
    calls = []

    def cancel(step, total, preview):
        calls.append(step)
        if step == 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        sample_7b(model, vae, REFERENCE, make_motion(89), width=SIZE, height=SIZE, num_steps=STEPS, callback=cancel)
    assert calls == [1, 2, 3]


def test_latent_preview_is_normalised():
    lat = torch.randn(1, 5, 16, 4, 6) * 10
    img = pipeline.latent_preview(lat)
    assert img.shape == (4, 6, 3) and img.min() == 0.0 and img.max() == 1.0


def test_frame_assembler_places_windows_in_one_buffer():
    assembler = pipeline.FrameAssembler((0, 40), 89)
    assembler.add(torch.zeros(49, 2, 3, 3))
    with pytest.raises(RuntimeError, match="1 of 2 windows"):
        assembler.result()
    with pytest.raises(RuntimeError, match="does not fit"):
        assembler.add(torch.ones(45, 2, 3, 3))  # the last window must end at frame 89
    assembler.add(torch.ones(49, 2, 3, 3))
    frames = assembler.result()
    assert frames.shape == (89, 2, 3, 3) and frames[:40].eq(0).all() and frames[40:].eq(1).all()
