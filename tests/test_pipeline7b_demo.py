"""The demo's generation step (tokens -> MV-DiT-7B -> VAE) on tiny random weights: labelled output, all or nothing."""

from __future__ import annotations

import logging

import pytest

from mtv_pack.mtv_core import cli
from mtv_pack.mtv_core.commands import animate, demo
from mtv_pack.mtv_core.video import read_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_demo_generates_a_labelled_random_weight_video(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("MTV_MODELS_DIR", raising=False)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["demo", "--out", str(tmp_path), "--width", "64", "--height", "64", "--steps", "3",
                         "--device", "cpu"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["demo_dance_generated_RANDOM_WEIGHTS.mp4", "demo_dance_motion.npz", "demo_dance_skeleton.mp4"]
    frames, fps = read_video(tmp_path / "demo_dance_generated_RANDOM_WEIGHTS.mp4")
    assert frames.shape == (49, 64, 64, 3) and fps == pytest.approx(20.0)
    assert "RANDOM" in caplog.text


def test_demo_uses_configured_models(tmp_path, monkeypatch):
    paths = animate.write_tiny_models(tmp_path / "models")
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path / "models"))
    seen = {}

    def spy(joints, reference, model_paths, **kwargs):
        seen.update(paths=model_paths, **kwargs)
        return real(joints, reference, model_paths, **kwargs)

    real = animate.animate_frames
    monkeypatch.setattr(animate, "animate_frames", spy)
    out = tmp_path / "out"
    assert cli.main(["demo", "--out", str(out), "--width", "64", "--height", "64", "--steps", "2"]) == 0
    assert seen["paths"] == paths and (seen["width"], seen["height"]) == (64, 64)
    assert (out / "demo_dance_generated.mp4").is_file()


def test_demo_short_motion_or_no_generate_skips_the_dit(tmp_path, monkeypatch):
    monkeypatch.setattr(animate, "animate_frames", lambda *a, **k: pytest.fail("the DiT step must be skipped"))
    assert cli.main(["demo", "--out", str(tmp_path / "a"), "--frames", "17", "--width", "64", "--height", "64"]) == 0
    assert cli.main(["demo", "--out", str(tmp_path / "b"), "--no-generate", "--width", "64", "--height", "64"]) == 0
    for sub in ("a", "b"):
        assert not list((tmp_path / sub).glob("*generated*"))


def test_demo_failure_in_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("checkpoint of the wrong variant")

    monkeypatch.setattr(animate, "animate_frames", broken)
    out = tmp_path / "out"
    assert cli.main(["demo", "--out", str(out), "--width", "64", "--height", "64"]) == 2
    assert not out.exists() or not list(out.iterdir())

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(animate, "animate_frames", lambda *a, **k: (__import__("torch").zeros(49, 64, 64, 3), 20.0))
    monkeypatch.setattr(demo, "save_generated", broken_write)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["demo", "--out", str(out), "--width", "64", "--height", "64"])
    assert not list(out.iterdir())


def test_demo_explicit_missing_models_is_an_error(tmp_path):
    assert cli.main(["demo", "--out", str(tmp_path / "o"), "--models", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "o").exists()
