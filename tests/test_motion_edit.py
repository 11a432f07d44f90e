"""Motion edits: shapes/units kept, property tests, mask handling, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from mtv_pack.mtv_core.motion import JointSequence, load_motion, procedural_motion
from mtv_pack.mtv_core.motion import edit
from mtv_pack.mtv_core.motion.stats import load_stats


@pytest.fixture(scope="module")
def real(reference):
    return load_motion(reference / "motion" / "sampled_data.pkl", index=0)


def _assert_layout(seq, frames=None):
    assert seq.joints_mm.dtype == np.float32 and seq.joints_mm.shape[1:] == (24, 3)
    assert seq.valid.shape == (seq.num_frames,)
    if frames is not None:
        assert seq.num_frames == frames


def test_trim_keeps_units_and_metadata(real):
    out = edit.trim(real, 10, 59)
    _assert_layout(out, 49)
    assert np.array_equal(out.joints_mm, real.joints_mm[10:59])  # same mm values, no rescaling
    assert out.meta["video_path"] == real.meta["video_path"] and out.meta["edits"] == ["trim(10,59)"]
    assert "edits" not in real.meta  # input untouched
    assert edit.trim(real, 5).num_frames == real.num_frames - 5


@pytest.mark.parametrize(("start", "stop"), [(-1, 5), (5, 5), (10, 3), (0, 128), (127, None)])
def test_trim_bad_ranges(real, start, stop):
    with pytest.raises(ValueError, match=r"bad frame range .* 127 frames"):
        edit.trim(real, start, stop)


def test_resample_same_fps_is_identity(real):
    out = edit.resample(real, real.fps)
    assert np.array_equal(out.joints_mm, real.joints_mm) and np.array_equal(out.valid, real.valid)


def test_resample_up_then_down_returns_input(real):
    up = edit.resample(real, real.fps * 3)
    _assert_layout(up, (real.num_frames - 1) * 3 + 1)
    assert up.fps == real.fps * 3
    assert np.array_equal(up.joints_mm[::3], real.joints_mm)  # original samples kept
    down = edit.resample(up, real.fps)
    np.testing.assert_allclose(down.joints_mm, real.joints_mm, atol=1e-3)


def test_resample_duration_and_linear_values():
    joints = np.zeros((21, 24, 3), np.float32)
    joints[..., 2] = 1000 + np.arange(21, dtype=np.float32)[:, None] * 10  # 10 mm per frame at 20 fps
    seq = JointSequence(joints, fps=20)
    out = edit.resample(seq, 30)
    assert out.num_frames == 31  # 1 s at 30 fps, both ends included
    np.testing.assert_allclose(out.joints_mm[:, 0, 2], 1000 + np.arange(31) * 200 / 30, atol=1e-3)


def test_resample_respects_mask():
    joints = np.full((5, 24, 3), 1000, np.float32)
    joints[2] = 99999  # a garbage filled-in frame
    valid = np.array([True, True, False, True, True])
    out = edit.resample(JointSequence(joints, fps=10, valid=valid), 20)
    assert np.allclose(out.joints_mm, 1000)  # the invalid frame contributes nothing
    assert out.valid.tolist() == [True, True, True, False, False, False, True, True, True]


def test_smooth_zero_is_identity_and_constant_is_fixed(real):
    assert np.array_equal(edit.smooth(real, 0).joints_mm, real.joints_mm)
    const = JointSequence(np.full((30, 24, 3), 1234.5, np.float32))
    np.testing.assert_allclose(edit.smooth(const, 3).joints_mm, 1234.5, atol=1e-3)


def test_smooth_reduces_jitter_and_ignores_invalid_frames():
    clean = procedural_motion("walk", frames=80, fps=30)
    rng = np.random.default_rng(0)
    noisy = JointSequence(clean.joints_mm + rng.normal(0, 20, clean.joints_mm.shape).astype(np.float32), fps=30)
    out = edit.smooth(noisy, 2.0)
    assert np.abs(out.joints_mm - clean.joints_mm).mean() < 0.5 * np.abs(noisy.joints_mm - clean.joints_mm).mean()
    joints = np.full((9, 24, 3), 1000, np.float32)
    joints[4] = 50000
    valid = np.ones(9, bool)
    valid[4] = False
    out = edit.smooth(JointSequence(joints, valid=valid), 2.0)
    assert np.allclose(out.joints_mm, 1000) and out.valid.tolist() == valid.tolist()


def test_mirror_twice_is_identity_and_swaps_sides(real):
    for about in ("center", "camera"):
        once = edit.mirror(real, about)
        twice = edit.mirror(once, about)
        np.testing.assert_allclose(twice.joints_mm, real.joints_mm, atol=1e-3)
        # the left wrist of the mirrored body is the reflected right wrist
        axis = real.joints_mm[:, 0, 0].mean() if about == "center" else 0.0
        np.testing.assert_allclose(once.joints_mm[:, 20, 0], 2 * axis - real.joints_mm[:, 21, 0], atol=1e-3)
        np.testing.assert_allclose(once.joints_mm[:, 20, 1:], real.joints_mm[:, 21, 1:])
    centred = edit.mirror(real, "center")
    np.testing.assert_allclose(centred.joints_mm[:, 0, 0].mean(), real.joints_mm[:, 0, 0].mean(), atol=1e-2)
    assert sorted(edit.SMPL_MIRROR_PERMUTATION) == list(range(24))
    assert all(edit.SMPL_MIRROR_PERMUTATION[edit.SMPL_MIRROR_PERMUTATION[j]] == j for j in range(24))


def test_scale_to_height(real):
    out = edit.scale_to_height(real, 1.9)
    _assert_layout(out, real.num_frames)
    assert abs(edit.body_height_m(out) - 1.9) < 1e-3
    np.testing.assert_allclose(out.joints_mm[:, 0, [0, 2]], real.joints_mm[:, 0, [0, 2]], atol=1e-2)  # depth kept

    def ground(seq):
        return np.median(seq.joints_mm[:, list(edit.FOOT_JOINTS), 1].max(axis=1))

    assert abs(ground(out) - ground(real)) < 1e-2  # same floor
    rooted = edit.scale_to_height(real, 1.9, anchor="root")
    np.testing.assert_allclose(rooted.joints_mm[:, 0], real.joints_mm[:, 0], atol=1e-2)
    back = edit.scale_to_height(rooted, edit.body_height_m(real), anchor="root")
    np.testing.assert_allclose(back.joints_mm, real.joints_mm, atol=1e-2)


def test_recenter(real):
    out = edit.recenter(real, (0, 0, 3000))
    np.testing.assert_allclose(out.joints_mm[:, 0].mean(0), (0, 0, 3000), atol=1e-2)
    np.testing.assert_allclose(out.joints_mm - out.joints_mm[:, :1], real.joints_mm - real.joints_mm[:, :1], atol=1e-2)
    first = edit.recenter(real, (10, 20, 2000), reference="first")
    np.testing.assert_allclose(first.joints_mm[0, 0], (10, 20, 2000), atol=1e-2)
    default = edit.recenter(real)
    np.testing.assert_allclose(default.joints_mm[:, 0].mean(0), load_stats()[0][0], atol=1e-2)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda s: edit.resample(s, 0), "fps must be a positive"),
        (lambda s: edit.resample(s, float("nan")), "fps must be a positive"),
        (lambda s: edit.smooth(s, -1), "sigma"),
        (lambda s: edit.mirror(s, "left"), "'center' or 'camera'"),
        (lambda s: edit.scale_to_height(s, 0), "positive number of metres"),
        (lambda s: edit.scale_to_height(s, 1.7, anchor="head"), "'feet' or 'root'"),
        (lambda s: edit.recenter(s, (0, 0, -5)), "in front of the camera"),
        (lambda s: edit.recenter(s, (0, float("inf"), 5)), "3 finite numbers"),
        (lambda s: edit.recenter(s, reference="last"), "'mean' or 'first'"),
    ],
)
def test_edit_errors(call, pattern):
    seq = procedural_motion("walk", frames=9)
    before = seq.joints_mm.copy()
    with pytest.raises(ValueError, match=pattern):
        call(seq)
    assert np.array_equal(seq.joints_mm, before)


def test_sequence_validation_errors():
    with pytest.raises(ValueError, match="empty"):
        JointSequence(np.zeros((0, 24, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        JointSequence(np.full((2, 24, 3), np.inf))
    with pytest.raises(ValueError, match=r"\(T, 24, 3\)"):
        JointSequence(np.zeros((2, 25, 3)))
    with pytest.raises(ValueError, match="fps must be a positive"):
        JointSequence(np.zeros((2, 24, 3)), fps=0)


def test_edits_of_a_sequence_with_no_valid_frame_use_all_frames():
    walk = procedural_motion("walk", frames=21, fps=20.0)
    none_valid = JointSequence(walk.joints_mm, fps=walk.fps, valid=np.zeros(21, bool))
    for out in (edit.resample(none_valid, 30.0), edit.smooth(none_valid, 1.5), edit.mirror(none_valid),
                edit.scale_to_height(none_valid, 1.6), edit.recenter(none_valid), edit.trim(none_valid, 2, 9)):
        _assert_layout(out)
        assert not out.valid.any()  # still all invalid
    # the same values as for the all-valid sequence: all frames are the sources
    np.testing.assert_array_equal(edit.resample(none_valid, 30.0).joints_mm, edit.resample(walk, 30.0).joints_mm)
    np.testing.assert_array_equal(edit.smooth(none_valid, 1.5).joints_mm, edit.smooth(walk, 1.5).joints_mm)


@pytest.mark.parametrize("frames", [1, 2, 3, 7])
def test_smooth_sequences_shorter_than_the_kernel(frames):
    walk = procedural_motion("walk", frames=frames)
    wide = edit.smooth(walk, 5.0)  # kernel radius 15 frames, longer than the sequence
    _assert_layout(wide, frames)
    # by definition: each frame is the Gaussian-weighted mean of all frames (weights renormalised)
    t = np.arange(frames)
    weights = np.exp(-0.5 * ((t[:, None] - t[None, :]) / 5.0) ** 2)
    expected = np.einsum("tk,kjc->tjc", weights / weights.sum(1, keepdims=True), walk.joints_mm.astype(np.float64))
    np.testing.assert_allclose(wide.joints_mm, expected, atol=1e-3)
