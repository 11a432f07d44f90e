"""NLF extraction core against a fake NLF TorchScript module scripted at test time (CPU)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from _nlf_fake import expected_root, frames_for, make_fake_file, person_row, scenario

from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.nlf import (
    NLFDeviceError,
    NLFModelFormatError,
    NLFModelNotFoundError,
    NoPersonDetectedError,
    detect_people,
    extract_smpl_motion,
    fill_gaps,
    frames_to_nchw,
    jit_script_patch,
    load_nlf_model,
    profiling_executor,
    track_people,
)


def load_fake(tmp_path, table, name="nlf_l_multi_fake.torchscript"):
    return load_nlf_model(make_fake_file(tmp_path / name, table), device="cpu", requires_cuda=False)


def walker(num_frames, x0=10.0, dx=4.0, z=3000.0, score=0.9, pid=1, w=20.0, h=40.0, missing=()):
    """One person walking right; frames in ``missing`` are empty."""
    rows = []
    for f in range(num_frames):
        x = x0 + dx * f
        rows.append([] if f in missing else [person_row(x, 5, w, h, score, (x * 10.0, 100.0, z), pid)])
    return rows


# ---------------------------------------------------------------- loading


def test_nlf_load_fake_finds_exported_method(tmp_path):
    model = load_fake(tmp_path, scenario(walker(3)))
    assert model.method == "detect_smpl_batched"
    assert model.name == "nlf_l_multi_fake.torchscript"
    assert all(p.device.type == "cpu" for p in model.module.buffers())


def test_nlf_missing_file_error_names_file_folder_release_and_licence(tmp_path):
    with pytest.raises(NLFModelNotFoundError) as info:
        load_nlf_model(tmp_path / "nlf_l_multi_0.3.2.torchscript", device="cpu")
    msg = str(info.value)
    assert "nlf_l_multi_0.3.2.torchscript" in msg
    assert str(tmp_path) in msg
    assert "https://github.com/isarandi/nlf/releases" in msg
    assert "non-commercial" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_nlf_not_a_torchscript_file(tmp_path):
    bad = tmp_path / "nlf_bad.torchscript"
    bad.write_bytes(b"not a zip")
    with pytest.raises(NLFModelFormatError, match="nlf_bad.torchscript"):
        load_nlf_model(bad, device="cpu", requires_cuda=False)


def test_nlf_torchscript_without_detect_method(tmp_path):
    class Other(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    path = tmp_path / "other.torchscript"
    torch.jit.script(Other()).save(str(path))
    with pytest.raises(NLFModelFormatError, match="detect_smpl_batched"):
        load_nlf_model(path, device="cpu", requires_cuda=False)


def test_nlf_jit_script_patch_detected_and_warned(tmp_path, monkeypatch, caplog):
    assert jit_script_patch() is None
    original = torch.jit.script

    def script(obj, *args, **kwargs):  # what a patching pack might install
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "script", script)
    assert "test_nlf_jit_script_patch_detected_and_warned" in jit_script_patch()
    monkeypatch.setattr(torch.jit, "script", original)
    path = make_fake_file(tmp_path / "f.torchscript", scenario(walker(2)))
    monkeypatch.setattr(torch.jit, "script", script)
    with caplog.at_level(logging.WARNING, logger="mtv_pack.mtv_core.nlf.model"):
        load_nlf_model(path, device="cpu", requires_cuda=False)
    assert any("torch.jit.script has been replaced" in r.getMessage() for r in caplog.records)


def test_nlf_jit_script_functools_wraps_patch_detected(monkeypatch):
    import functools

    original = torch.jit.script

    @functools.wraps(original)
    def script(*args, **kwargs):
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "script", script)
    assert jit_script_patch() is not None


def test_nlf_profiling_executor_setting_restored():
    previous = torch._C._jit_set_profiling_executor(False)
    try:
        with profiling_executor(True):
            assert torch._C._jit_set_profiling_executor(True) is True
        assert torch._C._jit_set_profiling_executor(False) is False
    finally:
        torch._C._jit_set_profiling_executor(previous)


# ---------------------------------------------------------------- device


def test_nlf_real_model_refuses_cpu_before_any_work(tmp_path):
    path = make_fake_file(tmp_path / "nlf_l_multi.torchscript", scenario(walker(4)))
    model = load_nlf_model(path, device="cpu")  # loading works; a real NLF file requires CUDA to run
    assert model.requires_cuda
    calls = []
    with pytest.raises(NLFDeviceError, match="CUDA") as info:
        detect_people(model, frames_for(4), device="cpu", callback=lambda *a: calls.append(a))
    assert "43" in str(info.value)
    assert calls == []
    assert int(model.module.num_calls) == 0


def test_nlf_double_declaring_cpu_support_runs_on_cpu(tmp_path):
    path = make_fake_file(tmp_path / "nlf_l_multi.torchscript", scenario(walker(4)), cpu_capable=True)
    model = load_nlf_model(path, device="cpu")
    assert not model.requires_cuda
    people = detect_people(model, frames_for(4), device="cpu")
    assert int(model.module.num_calls) >= 1 and len(people.joints_mm) == 4


def test_nlf_model_back_on_offload_device_after_error(tmp_path):
    model = load_fake(tmp_path, scenario(walker(4)))
    moves = []
    original_to = model.module.to

    def spy(device):
        moves.append(str(device))
        return original_to(device)

    model.module.to = spy

    def cancel(step, total, preview):
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        detect_people(model, frames_for(4), batch_size=2, device="cpu", offload_device="meta", callback=cancel)
    assert moves[-1] == "meta"  # parked on the offload device even when cancelled


# ---------------------------------------------------------------- extraction


def test_nlf_detect_shapes_units_and_fov(tmp_path):
    rows = walker(5, missing={2})
    model = load_fake(tmp_path, scenario(rows))
    det = detect_people(model, frames_for(5), device="cpu", fov_degrees=40.0, keep_smpl_params=True)
    assert det.num_frames == 5 and det.image_size == (48, 64)
    assert list(det.people_per_frame) == [1, 1, 0, 1, 1]
    assert det.boxes[0].shape == (1, 5) and det.boxes[2].shape == (0, 5)
    assert det.joints_mm[0].shape == (1, 24, 3) and det.joints_mm[0].dtype == np.float32
    np.testing.assert_allclose(det.joints_mm[3][0, 0], expected_root(rows[3][0], fov=40.0) + [-30, 200, 0], rtol=1e-5)
    np.testing.assert_allclose(det.boxes[1][0], [14, 5, 20, 40, 0.9], rtol=1e-6)
    assert det.smpl["pose"][0].shape == (1, 72) and det.smpl["pose"][2].shape == (0, 72)
    assert det.smpl["betas"][2].shape == (0, 10) and det.smpl["trans"][0].shape == (1, 3)


def test_nlf_all_empty_batch_pose_quirk_handled(tmp_path):
    model = load_fake(tmp_path, scenario(walker(6, missing={2, 3})))
    det = detect_people(model, frames_for(6), batch_size=2, device="cpu", keep_smpl_params=True)
    assert [p.shape for p in det.smpl["pose"]] == [(1, 72), (1, 72), (0, 72), (0, 72), (1, 72), (1, 72)]
    tracks = track_people(det)
    assert tracks[0].smpl["pose"].shape == (6, 72)


def test_nlf_batch_splitting_matches_single_batch(tmp_path):
    rows = [[person_row(5 + f, 5, 20, 40, 0.9, (f, 0, 3000), 1), person_row(40 - f, 8, 10, 20, 0.6, (-f, 0, 5000), 2)]
            for f in range(7)]
    rows[4] = []
    model = load_fake(tmp_path, scenario(rows))
    one = detect_people(model, frames_for(7), batch_size=7, device="cpu", keep_smpl_params=True)
    assert int(model.module.max_batch) == 7
    calls_before = int(model.module.num_calls)
    steps = []
    split = detect_people(model, frames_for(7), batch_size=3, device="cpu", keep_smpl_params=True,
                          callback=lambda s, t, p: steps.append((s, t)))
    assert int(model.module.num_calls) - calls_before == 3
    assert steps == [(3, 7), (6, 7), (7, 7)]
    for a, b in zip(one.joints_mm + one.boxes + one.smpl["pose"], split.joints_mm + split.boxes + split.smpl["pose"]):
        np.testing.assert_array_equal(a, b)


def test_nlf_uint8_and_float_frames_agree(tmp_path):
    model = load_fake(tmp_path, scenario(walker(4)))
    as_float = detect_people(model, frames_for(4), device="cpu")
    as_uint8 = detect_people(model, frames_for(4, dtype=np.uint8), device="cpu")
    as_tensor = detect_people(model, torch.from_numpy(frames_for(4)), device="cpu")
    assert list(as_uint8.people_per_frame) == [1, 1, 1, 1]
    for a, b, c in zip(as_float.joints_mm, as_uint8.joints_mm, as_tensor.joints_mm):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_nlf_frames_to_nchw_layout_and_dtypes():
    frames = torch.from_numpy(frames_for(2))
    frames[0, 1, 2] = torch.tensor([1.5, -0.2, 0.25])
    nchw = frames_to_nchw(frames, "cpu")
    assert nchw.shape == (2, 3, 48, 64) and nchw.dtype == torch.float16
    assert nchw[0, :, 1, 2].tolist() == [1.0, 0.0, 0.25]  # clamped, channels in RGB order
    as_u8 = frames_to_nchw(torch.from_numpy(frames_for(2, dtype=np.uint8)), "cpu")
    assert as_u8.dtype == torch.uint8 and as_u8[1, :, 0, 0].tolist() == [1, 128, 255]


def test_nlf_frames_fed_in_rgb_order(tmp_path):
    model = load_fake(tmp_path, scenario(walker(3)))
    det = detect_people(model, frames_for(3), device="cpu")
    assert list(det.people_per_frame) == [1, 1, 1]
    # the fake sees nobody when channels are swapped: proves the check can fail
    bgr = detect_people(model, frames_for(3)[..., ::-1].copy(), device="cpu")
    assert list(bgr.people_per_frame) == [0, 0, 0]


def test_nlf_rgba_and_out_of_range_float_inputs(tmp_path):
    model = load_fake(tmp_path, scenario(walker(2)))
    rgba = np.concatenate([frames_for(2), np.zeros((2, 48, 64, 1), np.float32)], axis=-1)
    assert list(detect_people(model, rgba, device="cpu").people_per_frame) == [1, 1]
    with pytest.raises(ValueError, match="shape"):
        detect_people(model, np.zeros((2, 48, 64), np.float32)[..., None], device="cpu")
    with pytest.raises(TypeError, match="dtype"):
        detect_people(model, np.zeros((2, 8, 8, 3), np.int32), device="cpu")


def test_nlf_detector_threshold_passed(tmp_path):
    rows = [[person_row(5, 5, 20, 40, 0.9, (0, 0, 3000), 1), person_row(40, 8, 10, 20, 0.4, (9, 0, 4000), 2)]] * 3
    model = load_fake(tmp_path, scenario(rows))
    assert list(detect_people(model, frames_for(3), device="cpu", detector_threshold=0.3).people_per_frame) == [2] * 3
    assert list(detect_people(model, frames_for(3), device="cpu", detector_threshold=0.5).people_per_frame) == [1] * 3


# ---------------------------------------------------------------- selection and tracking


def two_people(num_frames=6):
    """A: big, low score, on the right. B: small, high score, on the left. Both static."""
    a = [person_row(40, 2, 20, 44, 0.5, (400, 0, 3000), 1)]
    b = [person_row(2, 10, 10, 20, 0.95, (-400, 0, 6000), 2)]
    return [b + a for _ in range(num_frames)]


@pytest.mark.parametrize(
    "policy,index,pid",
    [("largest", 0, 1), ("largest", 1, 2), ("highest_score", 0, 2), ("highest_score", 1, 1),
     ("leftmost", 0, 2), ("index", 0, 2), ("index", 1, 1)],
)
def test_nlf_person_policies(tmp_path, policy, index, pid):
    table = scenario(two_people())
    model = load_fake(tmp_path, table)
    motion = extract_smpl_motion(model, frames_for(6), policy=policy, person_index=index, device="cpu")
    seq = motion.sequences[0]
    assert isinstance(seq, JointSequence)
    want = next(row for row in two_people()[0] if row[9] == pid)
    np.testing.assert_allclose(seq.joints_mm[:, 0], np.tile(expected_root(want) + [-30, 200, 0], (6, 1)))
    assert seq.meta["person_policy"] == policy and seq.meta["person_index"] == index


def test_nlf_unknown_policy_and_index_out_of_range(tmp_path):
    model = load_fake(tmp_path, scenario(two_people()))
    with pytest.raises(ValueError, match="unknown person policy"):
        extract_smpl_motion(model, frames_for(6), policy="tallest", device="cpu")
    with pytest.raises(ValueError, match="at most 2 people"):
        extract_smpl_motion(model, frames_for(6), person_index=2, device="cpu")


def crossing(num_frames=11, same_depth=False):
    """A walks right, B walks left; they cross at the middle frame. Scores swap after the crossing."""
    rows = []
    for f in range(num_frames):
        xa, xb = 4.0 + 5.0 * f, 54.0 - 5.0 * f
        late = f > num_frames // 2
        a = person_row(xa, 4, 10, 30, 0.6 if late else 0.9, (xa * 10, 0, 3000), 1)
        zb = 3000 if same_depth else 3600
        b = person_row(xb, 4, 10, 30, 0.95 if late else 0.7, (xb * 10, 0, zb), 2)
        rows.append([a, b])
    return rows


@pytest.mark.parametrize("same_depth", [False, True])
def test_nlf_tracking_follows_person_across_crossing(tmp_path, same_depth):
    rows = crossing(same_depth=same_depth)
    model = load_fake(tmp_path, scenario(rows))
    det = detect_people(model, frames_for(len(rows)), device="cpu")
    # NLF order (score) switches people after the crossing: "index 0" would jump
    assert det.boxes[0][0, 0] < det.boxes[0][1, 0] and det.boxes[-1][0, 0] < det.boxes[-1][1, 0]
    tracks = track_people(det, policy="index", person_index=0, max_people=2)
    a_roots = np.stack([expected_root(r[0]) for r in rows])
    b_roots = np.stack([expected_root(r[1]) for r in rows])
    np.testing.assert_allclose(tracks[0].joints_mm[:, 0] - [-30, 200, 0], a_roots, atol=1e-3)
    np.testing.assert_allclose(tracks[1].joints_mm[:, 0] - [-30, 200, 0], b_roots, atol=1e-3)
    assert tracks[0].valid.all() and tracks[1].valid.all()


def test_nlf_gap_filling_and_valid_mask(tmp_path):
    rows = walker(10, missing={0, 1, 4, 5, 6, 9})
    model = load_fake(tmp_path, scenario(rows))
    motion = extract_smpl_motion(model, frames_for(10), fps=25.0, device="cpu", keep_smpl_params=True)
    seq, boxes = motion.sequences[0], motion.boxes[0]
    assert seq.fps == 25.0 and seq.joints_mm.shape == (10, 24, 3)
    np.testing.assert_array_equal(seq.valid, [f not in {0, 1, 4, 5, 6, 9} for f in range(10)])
    np.testing.assert_array_equal(boxes.valid, seq.valid)
    truth = np.stack([expected_root(walker(10)[f][0]) for f in range(10)])
    root = seq.joints_mm[:, 0] - [-30, 200, 0]
    np.testing.assert_allclose(root[2:9], truth[2:9], atol=1e-3)  # linear walk: interpolation is exact
    np.testing.assert_allclose(root[0], truth[2], atol=1e-3)  # leading gap held
    np.testing.assert_allclose(root[1], truth[2], atol=1e-3)
    np.testing.assert_allclose(root[9], truth[8], atol=1e-3)  # trailing gap held
    np.testing.assert_allclose(boxes.boxes_xywh[5], [30, 5, 20, 40], atol=1e-4)
    assert boxes.scores[5] == 0 and boxes.scores[3] == pytest.approx(0.9)
    assert motion.tracks[0].smpl["trans"].shape == (10, 3)
    assert seq.meta["filled_frames"] == 6 and seq.meta["source"] == "nlf"


def test_nlf_all_frames_empty_is_a_clear_error(tmp_path):
    model = load_fake(tmp_path, scenario([[] for _ in range(4)]))
    with pytest.raises(NoPersonDetectedError, match="no person in any of the 4 frames"):
        extract_smpl_motion(model, frames_for(4), device="cpu")


def test_nlf_person_index_starts_where_that_person_exists(tmp_path):
    rows = walker(6)
    for f in range(3, 6):
        rows[f] = rows[f] + [person_row(50, 5, 5, 10, 0.99, (900, 0, 8000), 7)]
    model = load_fake(tmp_path, scenario(rows))
    motion = extract_smpl_motion(model, frames_for(6), policy="largest", person_index=1, device="cpu")
    seq = motion.sequences[0]
    np.testing.assert_array_equal(seq.valid, [False, False, False, True, True, True])
    np.testing.assert_allclose(seq.joints_mm[:, 0, 0], 900 - 30)


def test_nlf_multi_person_spawns_late_arrival(tmp_path):
    rows = walker(6)
    for f in range(2, 6):
        rows[f] = rows[f] + [person_row(50, 5, 5, 10, 0.5, (900, 0, 8000), 7)]
    model = load_fake(tmp_path, scenario(rows))
    motion = extract_smpl_motion(model, frames_for(6), max_people=3, device="cpu")
    assert len(motion.sequences) == 2
    np.testing.assert_array_equal(motion.sequences[1].valid, [False, False, True, True, True, True])
    np.testing.assert_allclose(motion.sequences[1].joints_mm[:, 0, 0], 900 - 30)
    assert [s.meta["track_id"] for s in motion.sequences] == [0, 1]


def test_nlf_fill_gaps_rejects_never_observed():
    with pytest.raises(NoPersonDetectedError):
        fill_gaps(np.zeros((3, 2)), np.zeros(3, bool))
    filled = fill_gaps(np.array([[0.0], [0.0], [4.0]]), np.array([True, False, True]))
    np.testing.assert_allclose(filled[:, 0], [0, 2, 4])


def test_nlf_track_not_handed_to_another_person_during_a_miss(tmp_path):
    rows = []
    for f in range(8):
        a = [] if f in (3, 4, 5) else [person_row(4 + f, 4, 12, 30, 0.9, (100.0 + 10 * f, 0, 3000), 1)]
        b = [person_row(44, 4, 12, 30, 0.95, (2500.0, 0, 3000), 2)]  # 2.4 m away, boxes apart
        rows.append(a + b)
    model = load_fake(tmp_path, scenario(rows))
    motion = extract_smpl_motion(model, frames_for(8), policy="leftmost", device="cpu")
    seq = motion.sequences[0]
    np.testing.assert_array_equal(seq.valid, [True, True, True, False, False, False, True, True])
    assert (seq.joints_mm[:, 0, 0] < 500).all()
