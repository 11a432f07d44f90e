"""SMPL-parameter files -> joints via smplx, on a synthetic SMPL-format model generated here."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest

from mtv_pack.mtv_core.motion import load_motion, load_stats
from mtv_pack.mtv_core.motion.io import MotionFormatError
from mtv_pack.mtv_core.motion.smpl import AMASS_TO_CAMERA, load_smpl_model
from mtv_pack.mtv_core.motion.safe_pickle import UnsafePickleError

PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# A rough SMPL T-pose in its canonical frame (metres, y up, facing +z, left = +x).
T_POSE = np.array([
    [0, 0.9, 0], [0.09, 0.82, 0], [-0.09, 0.82, 0], [0, 1.0, 0], [0.1, 0.45, 0], [-0.1, 0.45, 0],
    [0, 1.12, 0], [0.1, 0.08, 0], [-0.1, 0.08, 0], [0, 1.2, 0], [0.1, 0.02, 0.1], [-0.1, 0.02, 0.1],
    [0, 1.42, 0], [0.07, 1.36, 0], [-0.07, 1.36, 0], [0, 1.55, 0.02], [0.18, 1.38, 0], [-0.18, 1.38, 0],
    [0.45, 1.38, 0], [-0.45, 1.38, 0], [0.7, 1.38, 0], [-0.7, 1.38, 0], [0.78, 1.38, 0], [-0.78, 1.38, 0],
])  # fmt: skip
VERTS_PER_JOINT = 4


def _synthetic_model(seed=0):
    rng = np.random.default_rng(seed)
    offsets = np.array([[0.01, 0, 0], [-0.01, 0, 0], [0, 0.01, 0], [0, -0.01, 0]])
    v_template = (T_POSE[:, None, :] + offsets[None]).reshape(-1, 3)
    n = v_template.shape[0]
    owner = np.repeat(np.arange(24), VERTS_PER_JOINT)
    regressor = np.zeros((24, n))
    regressor[owner, np.arange(n)] = 1.0 / VERTS_PER_JOINT
    weights = np.zeros((n, 24))
    weights[np.arange(n), owner] = 1.0
    kintree = np.array([[4294967295] + PARENTS[1:], list(range(24))], dtype=np.int64)
    return {
        "v_template": v_template, "shapedirs": rng.normal(0, 1e-2, (n, 3, 10)),
        "posedirs": rng.normal(0, 1e-4, (n, 3, 207)), "J_regressor": regressor, "kintree_table": kintree,
        "weights": weights, "f": rng.integers(0, n, (50, 3)).astype(np.uint32), "bs_style": "lbs",
        "bs_type": "lrotmin",
    }  # fmt: skip


def _fake_class(module_name, class_name, monkeypatch):
    """A stand-in class pickled under a foreign module name (scipy / chumpy are not installed)."""
    parts = module_name.split(".")
    for i in range(1, len(parts)):  # parent packages must be importable too
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType(module_name)
    cls = type(class_name, (), {"__module__": module_name})
    setattr(module, class_name, cls)
    monkeypatch.setitem(sys.modules, module_name, module)
    return cls


def _write_model_pickle(path, model, monkeypatch, protocol=2, chumpy=False):
    """Pickle ``model`` like an official SMPL file: sparse J_regressor (scipy layout), optionally chumpy."""
    model = dict(model)
    csc = _fake_class("scipy.sparse._csc", "csc_matrix", monkeypatch)()
    dense = model["J_regressor"]
    rows, cols = np.nonzero(dense.T)  # column-major order
    csc.__dict__.update(data=dense.T[rows, cols], indices=cols.astype(np.int32),
                        indptr=np.searchsorted(rows, np.arange(dense.shape[1] + 1)).astype(np.int32),
                        _shape=dense.shape, maxprint=50)
    model["J_regressor"] = csc
    if chumpy:
        ch_cls = _fake_class("chumpy.ch", "Ch", monkeypatch)
        for key in ("v_template", "shapedirs", "posedirs"):
            ch = ch_cls()
            ch.__dict__.update(x=model[key])
            model[key] = ch
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    monkeypatch.undo()
    return path


def _rodrigues(v):
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _numpy_fk(model, pose72, betas, trans):
    """Independent SMPL joint forward kinematics (joints do not depend on posedirs)."""
    shaped = model["v_template"] + model["shapedirs"][:, :, : len(betas)] @ betas
    rest = model["J_regressor"] @ shaped
    out = np.zeros((24, 3))
    glob = [None] * 24
    for j in range(24):
        rot = _rodrigues(pose72[3 * j: 3 * j + 3])
        if j == 0:
            glob[j], out[j] = rot, rest[0]
        else:
            p = PARENTS[j]
            glob[j] = glob[p] @ rot
            out[j] = out[p] + glob[p] @ (rest[j] - rest[p])
    return out + trans


@pytest.fixture(scope="module")
def model():
    return _synthetic_model()


@pytest.fixture
def model_pkl(tmp_path, model, monkeypatch):
    return _write_model_pickle(tmp_path / "SMPL_NEUTRAL.pkl", model, monkeypatch)


def test_model_pickle_loads_through_restricted_unpickler(tmp_path, model, monkeypatch):
    for protocol in (1, 2):
        for chumpy in (False, True):
            path = _write_model_pickle(tmp_path / f"m{protocol}{chumpy}.pkl", model, monkeypatch, protocol, chumpy)
            arrays = load_smpl_model(path)
            for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
                assert np.array_equal(arrays[key], model[key]), (protocol, chumpy, key)


def test_model_pickle_with_other_classes_is_rejected(tmp_path, model, monkeypatch):
    evil = dict(model, extra=_fake_class("scipy.linalg", "anything", monkeypatch)())
    path = tmp_path / "evil_model.pkl"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    monkeypatch.undo()
    with pytest.raises(UnsafePickleError, match=r"evil_model\.pkl.*scipy\.linalg\.anything"):
        load_smpl_model(path)


def test_camera_frame_params_match_independent_fk(tmp_path, model, model_pkl):
    rng = np.random.default_rng(1)
    frames = 5
    pose = rng.normal(0, 0.3, (frames, 72)).astype(np.float32)
    betas = rng.normal(0, 1, 10).astype(np.float32)
    trans = (rng.normal(0, 0.2, (frames, 3)) + [0, 0, 3.0]).astype(np.float32)
    path = tmp_path / "nlf_params.npz"
    np.savez(path, pose=pose, betas=betas, trans=trans, fps=25.0)
    seq = load_motion(path, smpl_model=model_pkl)
    assert seq.num_frames == frames and seq.fps == 25.0 and seq.meta["format"] == "smpl_camera"
    expected = np.stack([_numpy_fk(model, pose[t].astype(np.float64), betas.astype(np.float64), trans[t])
                         for t in range(frames)]) * 1000.0
    np.testing.assert_allclose(seq.joints_mm, expected, atol=0.05)  # mm


def test_amass_params_go_to_camera_frame_upright_facing_camera(tmp_path, model, model_pkl):
    frames = 4
    poses = np.zeros((frames, 156), np.float32)
    poses[:, 0] = np.pi / 2  # AMASS's usual root orientation: SMPL's y-up body stood up in a z-up world
    poses[:, 3 * 4] = np.linspace(0, 0.8, frames)  # bend the left knee over time
    trans = np.stack([np.linspace(0, 1, frames), np.linspace(0, 2, frames), np.full(frames, 0.9)], 1)
    path = tmp_path / "amass.npz"
    np.savez(path, poses=poses, betas=np.zeros(16), trans=trans.astype(np.float32), mocap_framerate=60.0)
    seq = load_motion(path, smpl_model=model_pkl)
    assert seq.fps == 60.0 and seq.meta["format"] == "amass_smpl"
    joints = seq.joints_mm
    np.testing.assert_allclose(joints[:, 0].mean(0), load_stats()[0][0], atol=1e-2)  # placed at the mean pelvis
    assert (joints[:, 15, 1] < joints[:, 0, 1] - 400).all()  # head above pelvis (y down)
    assert (joints[:, 1, 0] > joints[:, 2, 0]).all()  # left hip at +x: facing the camera
    # world +y travel becomes depth, world +x stays x
    np.testing.assert_allclose(np.diff(joints[:, 0, 2]), 2000 / 3, atol=0.5)
    np.testing.assert_allclose(np.diff(joints[:, 0, 0]), 1000 / 3, atol=0.5)
    # geometry equals the rotated independent FK
    pose72 = np.concatenate([poses[:, :66], np.zeros((frames, 6))], 1).astype(np.float64)
    world = np.stack([_numpy_fk(model, pose72[t], np.zeros(10), trans[t]) for t in range(frames)]) * 1000.0
    camera = world @ AMASS_TO_CAMERA.T
    np.testing.assert_allclose(joints - joints[:, :1], camera - camera[:, :1], atol=0.05)
    assert np.isclose(np.linalg.det(AMASS_TO_CAMERA), 1.0)


def test_smpl_model_npz_and_bad_params(tmp_path, model):
    npz_model = tmp_path / "SMPL_NEUTRAL.npz"
    np.savez(npz_model, **{k: v for k, v in model.items() if not isinstance(v, str)})
    params = tmp_path / "p.npz"
    np.savez(params, pose=np.zeros((2, 72)), betas=np.zeros(10), trans=np.zeros((3, 3)))
    with pytest.raises(MotionFormatError, match=r"p\.npz.*'trans' has shape"):
        load_motion(params, smpl_model=npz_model)
    np.savez(params, pose=np.full((2, 72), np.nan), betas=np.zeros(10), trans=np.zeros((2, 3)))
    with pytest.raises(MotionFormatError, match=r"p\.npz.*NaN"):
        load_motion(params, smpl_model=npz_model)
    with pytest.raises(FileNotFoundError, match="SMPL model file not found"):
        load_motion(params, smpl_model=tmp_path / "missing.pkl")
