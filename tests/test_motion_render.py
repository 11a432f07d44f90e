"""Skeleton rendering (upstream FOV-55 projection) and procedural demo motions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtv_pack.mtv_core.motion import JointSequence, procedural_motion, project, render_skeleton
from mtv_pack.mtv_core.motion.edit import body_height_m, mirror
from mtv_pack.mtv_core.motion.procedural import MOTIONS
from mtv_pack.mtv_core.motion.render import LIMBS, focal_length_px, intrinsics


def test_projection_follows_upstream_convention():
    f = focal_length_px(480, 640)
    assert math.isclose(f, 640 / (2 * math.tan(math.radians(27.5))))
    assert math.isclose(focal_length_px(640, 480), f)  # FOV on the larger side, either orientation
    k = intrinsics(480, 640)
    assert k[0, 2] == 320 and k[1, 2] == 240 and k[0, 0] == k[1, 1] == f
    points = np.array([[0, 0, 2000], [1000, -500, 2000], [0, 0, -100], [5, 5, 0]], np.float64)
    pixels, visible = project(points, 480, 640)
    np.testing.assert_allclose(pixels[0], (320, 240))
    np.testing.assert_allclose(pixels[1], (320 + f * 0.5, 240 - f * 0.25))  # x right, y down
    assert visible.tolist() == [True, True, False, False]
    assert len(LIMBS) == 21


def _single_limb_sequence():
    joints = np.zeros((2, 24, 3), np.float32)
    joints[..., 2] = 2000  # everything on the optical axis ...
    joints[:, 16] = (-400, 0, 2000)  # ... except the left shoulder, out to the image's left
    return JointSequence(joints, valid=np.array([True, False]))


def test_render_blank_and_dimmed_invalid_frames():
    frames = render_skeleton(_single_limb_sequence(), width=96, height=64, line_width=3, point_radius=2)
    assert frames.shape == (2, 64, 96, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    row = frames[0, 32]
    assert row[10:40].max() > 0.5  # the neck-shoulder limb is drawn on the left half
    assert frames[0, 5:25, 60:90].max() == 0  # empty elsewhere
    # invalid frame: same skeleton, dimmer, plus a grey border
    assert frames[1, 32, 10:40].max() < 0.5 * frames[0, 32, 10:40].max() + 1e-6
    assert frames[1, 0, 48].max() > 0 and frames[0, 0, 48].max() == 0


def test_left_right_colours_differ_and_mirror_swaps_them():
    seq = procedural_motion("wave", frames=1)
    frame = render_skeleton(seq, 128, 128, line_width=3, point_radius=0)[0]
    swapped = render_skeleton(mirror(seq, "camera"), 128, 128, line_width=3, point_radius=0)[0]
    # left limbs are red-dominant and appear on the image's right (the subject faces the camera)
    right_half, left_half = frame[:, 64:], frame[:, :64]
    assert (right_half[..., 0] > right_half[..., 2] + 0.3).sum() > 20
    assert (left_half[..., 2] > left_half[..., 0] + 0.3).sum() > 20
    np.testing.assert_allclose(swapped[:, ::-1].mean(), frame.mean(), rtol=0.1)


def test_render_over_background_and_behind_camera():
    background = np.full((1, 40, 50, 3), 0.5, np.float32)
    seq = procedural_motion("dance", frames=3)
    frames = render_skeleton(seq, width=999, height=999, background=background)
    assert frames.shape == (3, 40, 50, 3)  # background size wins, last background frame held
    assert np.isclose(frames[:, 0, 0], 0.5, atol=1 / 255).all()
    behind = JointSequence(np.full((1, 24, 3), -1000, np.float32))
    assert render_skeleton(behind, 32, 32).max() == 0  # nothing drawn, no crash
    with pytest.raises(ValueError, match="line_width"):
        render_skeleton(seq, 32, 32, line_width=0)
    with pytest.raises(ValueError, match="background"):
        render_skeleton(seq, background=np.zeros((2, 8, 8)))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_held_background_frame_shows_only_the_current_skeleton(dtype):
    background = np.full((1, 96, 96, 3), 0.5 if dtype == np.float32 else 128, dtype)
    original = background.copy()
    seq = procedural_motion("dance", frames=12)
    frames = render_skeleton(seq, background=background)
    alone = render_skeleton(JointSequence(seq.joints_mm[-1:]), background=background)
    np.testing.assert_array_equal(frames[-1], alone[0])  # no skeletons of earlier frames left on it
    np.testing.assert_array_equal(background, original)  # the caller's frames are not drawn on


@pytest.mark.parametrize("kind", MOTIONS)
def test_procedural_motions_are_deterministic_and_plausible(kind):
    a = procedural_motion(kind, frames=49, fps=20)
    b = procedural_motion(kind, frames=49, fps=20)
    assert np.array_equal(a.joints_mm, b.joints_mm)
    assert a.num_frames == 49 and a.fps == 20 and a.valid.all() and a.meta["motion"] == kind
    assert abs(body_height_m(a) - 1.7) < 0.05  # bone lengths are preserved by the kinematics
    joints = a.joints_mm
    assert (joints[:, 15, 1] < joints[:, 0, 1]).all()  # head above pelvis (y down)
    assert (joints[:, 1, 0] > joints[:, 2, 0]).all()  # facing the camera: left hip at +x
    assert np.ptp(joints, axis=0).max() > 50  # it moves
    pixels, visible = project(joints, 512, 512)
    assert visible.all() and (pixels >= 0).all() and (pixels <= 512).all()  # whole body in frame


def test_procedural_errors():
    with pytest.raises(ValueError, match="unknown procedural motion"):
        procedural_motion("moonwalk")
    with pytest.raises(ValueError, match="frames"):
        procedural_motion("walk", frames=0)
    with pytest.raises(ValueError, match="fps"):
        procedural_motion("walk", fps=0)
