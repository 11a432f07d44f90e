"""``python -m mtv_core demo`` writes a decodable skeleton mp4 and a loadable motion file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from mtv_pack.mtv_core import cli
from mtv_pack.mtv_core.motion import load_motion

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _decoded_frames(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_demo_command_line_writes_video_and_motion(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "mtv_core", "demo", "--out", str(out), "--frames", "17", "--width", "96",
         "--height", "64", "--motion", "walk"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    frames, fps = _decoded_frames(out / "demo_walk_skeleton.mp4")
    assert len(frames) == 17 and frames[0].shape == (64, 96, 3) and fps == 20
    assert max(f.max() for f in frames) > 100  # a skeleton was drawn
    motion = load_motion(out / "demo_walk_motion.npz")
    assert motion.num_frames == 17 and motion.fps == 20 and motion.meta["motion"] == "walk"


def test_demo_defaults_through_cli_main(tmp_path, monkeypatch):
    monkeypatch.delenv("MTV_MODELS_DIR", raising=False)  # the tiny models, never released weights from the env
    assert cli.main(["demo", "--out", str(tmp_path), "--width", "64", "--height", "64", "--fps", "25"]) == 0
    frames, fps = _decoded_frames(tmp_path / "demo_dance_skeleton.mp4")
    assert len(frames) == 49 and fps == 25
    motion = load_motion(tmp_path / "demo_dance_motion.npz")
    assert motion.joints_mm.shape == (49, 24, 3) and motion.joints_mm.dtype == np.float32


@pytest.mark.parametrize("bad", [["--frames", "0"], ["--fps", "0"], ["--motion", "moonwalk"], ["--width", "-3"]])
def test_demo_rejects_bad_options_and_writes_nothing(tmp_path, bad):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--out", str(out), *bad])
    assert info.value.code == 2
    assert not out.exists()


def test_demo_leaves_nothing_when_a_step_fails(tmp_path, monkeypatch):
    from mtv_pack.mtv_core.commands import demo

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(demo, "save_motion", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["demo", "--out", str(tmp_path), "--frames", "5", "--width", "32", "--height", "32"])
    assert list(tmp_path.iterdir()) == []
