"""Motion nodes through the pack package with the standalone io stand-in."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.motion import JointSequence, load_motion, procedural_motion
from mtv_pack.nodes import motion as nodes


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    paths = {name: tmp_path / name for name in ("input", "output", "models")}
    for path in paths.values():
        path.mkdir()
    monkeypatch.setenv("MTV_INPUT_DIR", str(paths["input"]))
    monkeypatch.setenv("MTV_OUTPUT_DIR", str(paths["output"]))
    monkeypatch.setenv("MTV_MODELS_DIR", str(paths["models"]))
    return paths


def _run(node, **inputs):
    return node.execute(**inputs)


def test_all_motion_nodes_are_registered_with_tooltips():
    ids = {n.define_schema().node_id for n in nodes.NODES}
    assert ids == {"MTVLoadMotion", "MTVSaveMotion", "MTVTrimMotion", "MTVResampleMotion", "MTVSmoothMotion",
                   "MTVMirrorMotion", "MTVScaleMotion", "MTVRecenterMotion", "MTVRenderSkeleton", "MTVMotionInfo",
                   "MTVProceduralMotion"}
    for node in nodes.NODES:
        schema = node.define_schema()
        assert schema.category == "MTVCrafter/Motion"
        assert all(inp.tooltip for inp in schema.inputs), schema.node_id


def test_load_lists_input_and_registered_motions(dirs, reference):
    assert nodes.motion_file_choices() == [nodes.NO_FILES]
    shutil.copy(reference / "motion" / "sampled_data.pkl", dirs["input"] / "sampled_data.pkl")
    (dirs["input"] / "notes.txt").write_text("not a motion")
    registered = dirs["models"] / "mtvcrafter" / "motions"
    registered.mkdir(parents=True)
    procedural_seq = procedural_motion("walk", frames=9)
    from mtv_pack.mtv_core.motion import save_motion

    save_motion(procedural_seq, registered / "walk.npz")
    (dirs["models"] / "mtvcrafter" / "other.npz").write_bytes(b"")  # outside motions/: not offered
    assert nodes.motion_file_choices() == ["sampled_data.pkl", "motions/walk.npz"]
    schema = nodes.MTVLoadMotion.define_schema()
    assert schema.inputs[0].options["options"] == ["sampled_data.pkl", "motions/walk.npz"]

    seq = _run(nodes.MTVLoadMotion, motion_file="sampled_data.pkl", index=4, fps=0.0).args[0]
    assert isinstance(seq, JointSequence) and seq.num_frames == 179 and seq.fps == 20
    fast = _run(nodes.MTVLoadMotion, motion_file="sampled_data.pkl", index=0, fps=30.0).args[0]
    assert fast.fps == 30 and fast.num_frames == 127
    walk = _run(nodes.MTVLoadMotion, motion_file="motions/walk.npz", index=0, fps=0.0).args[0]
    assert np.array_equal(walk.joints_mm, procedural_seq.joints_mm)
    with pytest.raises(IndexError, match="holds 5"):
        _run(nodes.MTVLoadMotion, motion_file="sampled_data.pkl", index=7, fps=0.0)
    with pytest.raises(FileNotFoundError, match="missing.npz") as info:
        _run(nodes.MTVLoadMotion, motion_file="missing.npz", index=0, fps=0.0)
    assert str(registered.parent) in str(info.value)  # names the folders searched
    save_motion(procedural_seq, dirs["models"] / "escape.npz")  # outside every allowed folder
    with pytest.raises(ValueError, match="inside the model folders"):
        _run(nodes.MTVLoadMotion, motion_file="../escape.npz", index=0, fps=0.0)
    with pytest.raises(FileNotFoundError, match="no motion file selected"):
        _run(nodes.MTVLoadMotion, motion_file=nodes.NO_FILES, index=0, fps=0.0)
    first = nodes.MTVLoadMotion.fingerprint_inputs("sampled_data.pkl", 0, 0.0)
    assert first == nodes.MTVLoadMotion.fingerprint_inputs("sampled_data.pkl", 0, 0.0)
    assert first != nodes.MTVLoadMotion.fingerprint_inputs("sampled_data.pkl", 1, 0.0)


def test_save_motion_counts_up_and_stays_in_output(dirs):
    seq = procedural_motion("wave", frames=5)
    out1 = _run(nodes.MTVSaveMotion, joints=seq, filename_prefix="mtvcrafter/motion")
    out2 = _run(nodes.MTVSaveMotion, joints=seq, filename_prefix="mtvcrafter/motion")
    assert out1.args[0].endswith("motion_00001.npz") and out2.args[0].endswith("motion_00002.npz")
    assert "5 frames" in str(out1.ui)
    assert np.array_equal(load_motion(out2.args[0]).joints_mm, seq.joints_mm)
    with pytest.raises(ValueError, match="outside the output folder"):
        _run(nodes.MTVSaveMotion, joints=seq, filename_prefix="../escape")
    assert not (dirs["output"].parent / "escape_00001.npz").exists()
    assert sorted(p.name for p in (dirs["output"] / "mtvcrafter").iterdir()) == ["motion_00001.npz", "motion_00002.npz"]
    # glob characters in the prefix still count up (never overwrite an earlier save)
    first = _run(nodes.MTVSaveMotion, joints=seq, filename_prefix="take[1]").args[0]
    second = _run(nodes.MTVSaveMotion, joints=seq, filename_prefix="take[1]").args[0]
    assert first.endswith("take[1]_00001.npz") and second.endswith("take[1]_00002.npz")


def test_edit_nodes_chain(dirs):
    seq = procedural_motion("dance", frames=49, fps=20)
    trimmed = _run(nodes.MTVTrimMotion, joints=seq, start_frame=4, frame_count=20).args[0]
    assert trimmed.num_frames == 20 and np.array_equal(trimmed.joints_mm, seq.joints_mm[4:24])
    assert _run(nodes.MTVTrimMotion, joints=seq, start_frame=4, frame_count=0).args[0].num_frames == 45
    with pytest.raises(ValueError, match="bad frame range"):
        _run(nodes.MTVTrimMotion, joints=seq, start_frame=40, frame_count=20)
    resampled = _run(nodes.MTVResampleMotion, joints=trimmed, fps=40.0).args[0]
    assert resampled.num_frames == 39 and resampled.fps == 40
    smoothed = _run(nodes.MTVSmoothMotion, joints=resampled, sigma_frames=1.5).args[0]
    mirrored = _run(nodes.MTVMirrorMotion, joints=smoothed, about="center").args[0]
    back = _run(nodes.MTVMirrorMotion, joints=mirrored, about="center").args[0]
    np.testing.assert_allclose(back.joints_mm, smoothed.joints_mm, atol=1e-3)
    scaled = _run(nodes.MTVScaleMotion, joints=mirrored, height_m=1.5, anchor="feet").args[0]
    from mtv_pack.mtv_core.motion import body_height_m

    assert abs(body_height_m(scaled) - 1.5) < 1e-3
    centred = _run(nodes.MTVRecenterMotion, joints=scaled, x_mm=0.0, y_mm=0.0, z_mm=2500.0, reference="mean").args[0]
    np.testing.assert_allclose(centred.joints_mm[:, 0].mean(0), (0, 0, 2500), atol=1e-2)
    assert centred.meta["edits"][0] == "trim(4,24)" and len(centred.meta["edits"]) == 6


def test_render_and_info_nodes(dirs):
    seq = procedural_motion("walk", frames=6)
    images = _run(nodes.MTVRenderSkeleton, joints=seq, width=64, height=48, line_width=2, point_radius=1).args[0]
    assert isinstance(images, torch.Tensor) and images.shape == (6, 48, 64, 3) and images.dtype == torch.float32
    assert 0 <= float(images.min()) and float(images.max()) <= 1 and float(images.max()) > 0.5
    background = torch.full((6, 40, 40, 3), 0.25)
    over = _run(nodes.MTVRenderSkeleton, joints=seq, width=64, height=48, line_width=2, point_radius=1,
                background=background).args[0]
    assert over.shape == (6, 40, 40, 3) and abs(float(over[0, 0, 0, 0]) - 0.25) < 1 / 255
    out = _run(nodes.MTVMotionInfo, joints=seq)
    text, fps = out.args
    assert fps == 20.0 and isinstance(fps, float)
    assert "frames: 6" in text and "fps: 20" in text and "valid: 100.0%" in text and "extent (m)" in text
    assert out.ui == {"text": [text]}


def test_procedural_node():
    seq = _run(nodes.MTVProceduralMotion, motion="squat", frames=17, fps=25.0, height_m=1.6, speed=1.0).args[0]
    assert seq.num_frames == 17 and seq.fps == 25 and seq.meta["motion"] == "squat"
