"""``python -m mtv_core animate`` on tiny random models: any length, models layout, clear errors, nothing half-written."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from mtv_pack.mtv_core.cli import main
from mtv_pack.mtv_core.commands.animate import find_models, write_tiny_models
from mtv_pack.mtv_core.motion import procedural_motion, save_motion
from mtv_pack.mtv_core.video import read_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate")
    paths = write_tiny_models(root / "models")
    save_motion(procedural_motion("dance", frames=92, fps=20.0), root / "dance.npz")
    save_motion(procedural_motion("dance", frames=30, fps=20.0), root / "short.npz")
    Image.fromarray((np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)).save(root / "ref.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / "tiny_ref.png")
    return root, paths


def _args(root, out, *extra):
    return ["animate", "--variant", "7b", "--ref", str(root / "ref.png"), "--motion", str(root / "dance.npz"),
            "--models", str(root / "models"), "--out", str(out), "--steps", "2", "--width", "64", "--height", "64",
            "--device", "cpu", "--dtype", "fp32", *extra]


def test_animate_writes_mp4_of_every_frame(workspace, tmp_path):
    root, _ = workspace
    out = tmp_path / "result.mp4"
    assert main(_args(root, out)) == 0
    frames, fps = read_video(out)
    assert frames.shape == (89, 64, 64, 3)  # 92 frames -> 4k+1 grid -> 89 = two windows
    assert fps == pytest.approx(20.0)
    assert not list(tmp_path.glob(".*partial*"))


def test_find_models_layout(workspace, tmp_path):
    root, paths = workspace
    found = find_models(root / "models")
    assert found == paths
    assert found.tokenizer.name == "tiny_4dmot.safetensors" and found.dit.name == "CogVideoX"
    explicit = find_models(None, paths.tokenizer, paths.dit, paths.vae)
    assert explicit == paths
    with pytest.raises(FileNotFoundError, match="dit: .*MV-DiT/CogVideoX"):
        find_models(tmp_path)
    with pytest.raises(FileNotFoundError, match="models folder not found"):
        find_models(tmp_path / "nope")


@pytest.mark.parametrize("change, message", [
    (lambda root, p: ["--motion", str(root / "short.npz")], "shorter than one window"),
    (lambda root, p: ["--ref", str(root / "tiny_ref.png")], "at least 64 px"),
    (lambda root, p: ["--ref", str(root / "missing.png")], "reference image not found"),
    (lambda root, p: ["--dit", str(p.tokenizer)], "MV-DiT"),  # wrong variant: a 4DMoT file as the DiT
    (lambda root, p: ["--vae", str(p.tokenizer)], "not a CogVideoX VAE"),
    (lambda root, p: ["--width", "32"], "between 64"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(workspace, tmp_path, caplog, change, message):
    root, paths = workspace
    out = tmp_path / "never.mp4"
    args = _args(root, out)
    extra = change(root, paths)
    flag = extra[0]
    if flag in args:
        args[args.index(flag) + 1] = extra[1]
    else:
        args += extra
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    assert message in caplog.text
    assert not out.exists() and not list(tmp_path.iterdir())


def test_reference_follows_exif_orientation(tmp_path):
    from mtv_pack.mtv_core.commands.animate import load_reference

    image = Image.fromarray(np.zeros((30, 80, 3), np.uint8))  # landscape pixels ...
    exif = image.getexif()
    exif[0x0112] = 6  # ... of a photo the camera held upright (rotate 90 degrees clockwise to view)
    image.save(tmp_path / "phone.jpg", exif=exif)
    assert load_reference(tmp_path / "phone.jpg").shape == (80, 30, 3)
