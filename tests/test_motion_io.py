"""Motion file loading/saving: upstream pickles, raw NLF pickles, our npz, the restricted unpickler."""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.motion import JointSequence, load_motion, load_motions, save_motion
from mtv_pack.mtv_core.motion.io import MotionFormatError, pick_people
from mtv_pack.mtv_core.motion.safe_pickle import UnsafePickleError, safe_load_pickle

REFERENCE_LENGTHS = (127, 299, 584, 653, 179)


def _reference_items(reference):
    # Tests may read the trusted reference file with plain pickle to build expected values.
    with open(reference / "motion" / "sampled_data.pkl", "rb") as f:
        return pickle.load(f)


def test_all_reference_sequences_load_exactly(reference):
    path = reference / "motion" / "sampled_data.pkl"
    expected = _reference_items(reference)
    sequences = load_motions(path)
    assert [s.num_frames for s in sequences] == list(REFERENCE_LENGTHS)
    for i, (seq, item) in enumerate(zip(sequences, expected)):
        assert seq.joints_mm.dtype == np.float32 and seq.joints_mm.shape == (REFERENCE_LENGTHS[i], 24, 3)
        assert np.array_equal(seq.joints_mm, item["pose"])  # bit-exact
        assert seq.valid.all() and seq.fps == 20.0
        assert seq.meta["video_path"] == item["video_path"]
        assert seq.meta["video_height"] == item["video_height"] and seq.meta["video_width"] == item["video_width"]
        assert seq.meta["index"] == i and seq.meta["source"] == "sampled_data.pkl"
        json.dumps(seq.meta)  # metadata stays JSON-serialisable
    third = load_motion(path, index=3, fps=30)
    assert np.array_equal(third.joints_mm, expected[3]["pose"]) and third.fps == 30.0


def test_index_out_of_range_names_file_and_count(reference):
    with pytest.raises(IndexError, match=r"sampled_data\.pkl.*index 5.*holds 5"):
        load_motion(reference / "motion" / "sampled_data.pkl", index=5)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.skipif(sys.platform == "win32", reason="uses the POSIX touch command")
def test_malicious_pickle_is_rejected_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([{"pose": np.zeros((2, 24, 3), np.float32), "x": _Exploit(marker)}]))
    with pytest.raises(UnsafePickleError) as info:
        load_motions(evil)
    assert str(evil) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()
    for flags in ({}, {"allow_torch": True}, {"allow_body_model": True}):
        with pytest.raises(UnsafePickleError):
            safe_load_pickle(evil, **flags)
        assert not marker.exists()
    # Control: the payload is live, a plain pickle.load would have run it.
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_pickle_naming_other_globals_is_rejected(tmp_path):
    path = tmp_path / "dict_subclass.pkl"
    path.write_bytes(pickle.dumps({"pose": np.zeros((3, 24, 3), np.float32), "cfg": __import__("argparse").Namespace()}))
    with pytest.raises(UnsafePickleError, match=r"argparse\.Namespace"):
        load_motion(path)


def _nlf_pickle(path, per_frame, monkeypatch=None):
    data = {"video_path": "clip.mp4", "video_length": len(per_frame), "video_width": 64, "video_height": 48,
            "pose": {"joints3d_nonparam": [[torch.from_numpy(np.asarray(p, np.float32))] for p in per_frame]}}
    if monkeypatch is not None:
        # Make the storages claim to live on CUDA, as in upstream process_nlf output.
        monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    blob = pickle.dumps(data)
    if monkeypatch is not None:
        monkeypatch.undo()
    path.write_bytes(blob)
    return path


def _person(offset_x, frames=1):
    base = np.arange(72, dtype=np.float32).reshape(24, 3) + np.array([offset_x, 0, 2000], np.float32)
    return base


def test_raw_nlf_pickle_saved_from_cuda_loads_on_cpu(tmp_path, monkeypatch):
    a, b = _person(0.0), _person(900.0)
    frames = [np.stack([a, b]), np.stack([b + 5, a + 5]), np.zeros((0, 24, 3)), np.stack([a + 20]), np.stack([a + 30])]
    path = _nlf_pickle(tmp_path / "clip.pkl", frames, monkeypatch)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # the emulation is real: torch itself cannot load it here
            pickle.loads(path.read_bytes())
    seq = load_motion(path)
    assert seq.num_frames == 5 and seq.joints_mm.dtype == np.float32
    assert seq.valid.tolist() == [True, True, False, True, True]
    assert np.array_equal(seq.joints_mm[0], a)
    assert np.array_equal(seq.joints_mm[1], a + 5)  # nearest pelvis, not detection order
    assert np.allclose(seq.joints_mm[2], a + 12.5)  # interpolated gap
    assert np.array_equal(seq.joints_mm[4], a + 30)
    assert seq.meta["format"] == "nlf_pickle" and seq.meta["video_width"] == 64
    # Tensors are only admitted through the torch-enabled unpickler.
    with pytest.raises(UnsafePickleError, match="_rebuild_tensor_v2"):
        safe_load_pickle(path)


def test_raw_nlf_pickle_edge_frames_and_all_empty(tmp_path):
    a = _person(0.0)
    seq = load_motion(_nlf_pickle(tmp_path / "edges.pkl", [np.zeros((0, 24, 3)), a[None], np.zeros((0, 24, 3))]))
    assert seq.valid.tolist() == [False, True, False]
    assert np.array_equal(seq.joints_mm[0], a) and np.array_equal(seq.joints_mm[2], a)
    empty = _nlf_pickle(tmp_path / "nobody.pkl", [np.zeros((0, 24, 3))] * 3)
    with pytest.raises(MotionFormatError, match=r"nobody\.pkl.*nobody was detected"):
        load_motion(empty)


def test_pick_people_is_a_pure_function():
    a = _person(0.0)
    joints, valid = pick_people([a[None], np.zeros((0, 24, 3), np.float32), (a + 10)[None]])
    assert valid.tolist() == [True, False, True]
    assert np.allclose(joints[1], a + 5)


def test_npz_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    joints = rng.normal(0, 500, (33, 24, 3)).astype(np.float32) + np.float32(2000)
    valid = rng.random(33) > 0.2
    seq = JointSequence(joints, fps=29.97, valid=valid, meta={"source": "unit", "note": "ü", "edits": ["trim(0,33)"]})
    path = save_motion(seq, tmp_path / "sub" / "motion")
    assert path.name == "motion.npz" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["motion.npz"]  # no temporary file left
    back = load_motion(path)
    assert back.joints_mm.tobytes() == seq.joints_mm.tobytes()
    assert back.fps == 29.97 and np.array_equal(back.valid, valid) and back.meta == seq.meta
    with np.load(path, allow_pickle=False) as raw:  # plain numpy can read it without pickle
        assert set(raw.files) >= {"joints_mm", "fps", "valid", "meta"}


def test_save_failure_leaves_nothing(tmp_path, monkeypatch):
    seq = JointSequence(np.ones((4, 24, 3), np.float32) * 1000)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_motion(seq, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_bare_npy_and_fps_override(tmp_path):
    joints = np.full((5, 24, 3), 1500, np.float32)
    np.save(tmp_path / "j.npy", joints)
    seq = load_motion(tmp_path / "j.npy", fps=12.5)
    assert seq.fps == 12.5 and np.array_equal(seq.joints_mm, joints)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda p: None, r"motion file not found: .*bad"),
        (lambda p: p.write_text("hello"), r"bad.*unknown motion format"),
        (lambda p: np.savez(open(p, "wb"), other=np.zeros(3)), r"bad.*unknown motion format"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.zeros((0, 24, 3)), fps=20.0), r"bad.*empty"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.full((3, 24, 3), np.nan), fps=20.0), r"bad.*NaN or inf"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.zeros((3, 17, 3)), fps=20.0), r"bad.*24 joints"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.zeros((3, 24, 3)), fps=0.0), r"bad.*fps must be a positive"),
        (lambda p: p.write_bytes(pickle.dumps([])), r"bad.*empty"),
        (lambda p: p.write_bytes(pickle.dumps([{"pose": np.zeros((4, 24, 2), np.float32)}])), r"bad.*24 joints"),
        (lambda p: p.write_bytes(pickle.dumps({"x": 1})), r"bad.*unknown motion format"),
        (lambda p: p.write_bytes(b"PK\x03\x04 not a zip"), r"bad.*not a readable \.npz"),
        (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00"), r"bad.*not a readable \.npy"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.zeros((3, 24, 3)), meta=np.array("[1]")),
         r"bad.*'meta' must be a JSON object"),
        (lambda p: np.savez(open(p, "wb"), joints_mm=np.zeros((3, 24, 3)), fps=np.array([20.0, 30.0])),
         r"bad.*'fps' must be one number"),
    ],
)
def test_bad_input_gives_one_clear_error_naming_the_file(tmp_path, make, pattern):
    path = tmp_path / "bad"
    make(path)
    with pytest.raises((FileNotFoundError, ValueError)) as info:
        load_motion(path)
    assert str(path) in str(info.value)
    assert __import__("re").search(pattern, str(info.value)), str(info.value)


def test_smpl_params_without_model_name_the_problem(tmp_path):
    path = tmp_path / "amass.npz"
    np.savez(path, poses=np.zeros((3, 156)), betas=np.zeros(16), trans=np.zeros((3, 3)), mocap_framerate=60.0)
    with pytest.raises(MotionFormatError, match=r"amass\.npz.*SMPL model file"):
        load_motion(path)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_of_an_upstream_list_loads(tmp_path, protocol):
    joints = np.random.default_rng(protocol).normal(1000, 300, (6, 24, 3)).astype(np.float32)
    items = [{"pose": joints, "video_length": np.int64(6), "video_height": 512, "video_width": 384,
              "video_path": "v.mp4"}]
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(items, protocol=protocol))
    seq = load_motion(path)
    assert np.array_equal(seq.joints_mm, joints) and seq.meta["video_length"] == 6


def test_npz_object_arrays_are_skipped_not_unpickled(tmp_path):
    path = tmp_path / "with_object.npz"
    np.savez(path, joints_mm=np.full((3, 24, 3), 900, np.float32), fps=10.0,
             extra=np.array([{"a": 1}], dtype=object))
    seq = load_motion(path)
    assert seq.num_frames == 3 and seq.fps == 10.0


def test_nlf_layout_with_all_frames_in_one_entry(tmp_path):
    a = _person(0.0)
    path = tmp_path / "kijai.pkl"
    path.write_bytes(pickle.dumps({"joints3d_nonparam": [[torch.from_numpy(a[None] + i) for i in range(4)]]}))
    seq = load_motion(path)
    assert seq.num_frames == 4 and np.array_equal(seq.joints_mm[3], a + 3)


def test_tensor_views_outside_their_storage_are_rejected():
    from mtv_pack.mtv_core.motion.safe_pickle import _rebuild_tensor_as_numpy, _TensorStorage

    storage = _TensorStorage(np.arange(6, dtype=np.float32))
    assert np.array_equal(_rebuild_tensor_as_numpy(storage, 2, (2, 2), (1, 2)), [[2, 4], [3, 5]])
    for offset, size, stride in ((0, (7,), (1,)), (4, (2,), (2,)), (5, (2,), (-3,)), (0, (2,), (1, 1))):
        with pytest.raises(UnsafePickleError):
            _rebuild_tensor_as_numpy(storage, offset, size, stride)


def test_truncated_pickles_give_a_clear_error(reference, tmp_path, monkeypatch):
    data = (reference / "motion" / "sampled_data.pkl").read_bytes()
    nlf = _nlf_pickle(tmp_path / "n.pkl", [_person(0.0)[None]] * 3, monkeypatch).read_bytes()
    for blob in (data, nlf):
        for cut in (3, len(blob) // 3, len(blob) - 2):
            path = tmp_path / "cut.pkl"
            path.write_bytes(blob[:cut])
            with pytest.raises(ValueError, match=r"cut\.pkl"):
                load_motions(path)
