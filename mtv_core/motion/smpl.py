"""SMPL parameter sequences -> 24 joints in the pack's camera frame, through ``smplx``.

The SMPL model file is supplied by the user (it is licensed, never shipped): an ``SMPL_*.pkl``
(read with the restricted unpickler; scipy sparse matrices and chumpy ``Ch`` values are reduced to
plain arrays, nothing of theirs is executed) or an ``.npz`` with the same keys. The arrays are
handed to ``smplx.SMPL`` via ``data_struct``, so smplx never unpickles anything itself.

Two parameter conventions:

* **camera** (NLF-style ``pose``/``betas``/``trans``): parameters fitted in the OpenCV camera frame
  (x right, y down, z forward), ``trans`` in metres. Joints are only converted to millimetres.
* **amass** (AMASS-style ``poses``/``betas``/``trans``): a z-up world in metres. Joints are rotated
  into the camera frame by ``AMASS_TO_CAMERA`` (camera x = world x, camera y = -world z,
  camera z = world y; a proper rotation, det +1): the camera looks horizontally along world +y, so a
  body in AMASS's default heading (facing -y) faces the camera, its left side at +x. The sequence is
  then translated (not rotated or scaled) so its mean pelvis lands on the tokenizer's dataset-mean
  pelvis (0.8, 202, 1822) mm, i.e. about 1.8 m in front of the camera, as in the training data.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, reading
from ..limits import MAX_FRAMES, MAX_MOTION_FILE_BYTES, Budget, check_file_size, check_limit, real_array
from .arrays import NpzArchive
from .safe_pickle import densify, safe_load_pickle

logger = logging.getLogger(__name__)

# Rows: camera axes expressed in AMASS world axes (x right, y down = -z_world, z forward = +y_world).
AMASS_TO_CAMERA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

_MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights", "f")


def load_smpl_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an SMPL model file (.pkl or .npz) into plain numpy arrays (keys: ``_MODEL_KEYS``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMPL model file not found: {path}")
    with reading(path, "SMPL model file"):
        check_file_size(path, MAX_MOTION_FILE_BYTES, "SMPL model file")
        budget = Budget.for_file(path)
        if path.suffix.lower() == ".npz":
            with NpzArchive(path, budget) as data:
                raw = {k: data.read(k) for k in _MODEL_KEYS if k in data}
        else:
            raw = safe_load_pickle(path, allow_body_model=True, budget=budget)
            if not isinstance(raw, dict):
                raise InputError(f"{path}: an SMPL model file must hold a dict, found {type(raw).__name__}")
        missing = [k for k in _MODEL_KEYS if k not in raw]
        if missing:
            raise InputError(f"{path}: not an SMPL model file (missing {', '.join(missing)})")
        model = {k: np.asarray(densify(raw[k], budget)) for k in _MODEL_KEYS}
        for key, array in model.items():
            if array.dtype.kind not in "iuf":
                raise InputError(f"{path}: '{key}' must hold numbers, got dtype {array.dtype}")
        _check_model_shapes(model, path)
    return model


def _check_model_shapes(model: dict[str, np.ndarray], path: Path) -> None:
    """The array shapes smplx's SMPL layer needs (V vertices, B shape coefficients, F faces)."""
    vertices = model["v_template"].shape[0] if model["v_template"].ndim == 2 else -1
    expected = {
        "v_template": (vertices, 3), "J_regressor": (24, vertices), "weights": (vertices, 24),
        "kintree_table": (2, 24),
    }  # fmt: skip
    for key, shape in expected.items():
        if vertices < 1 or model[key].shape != shape:
            raise InputError(f"{path}: '{key}' has shape {model[key].shape}, an SMPL model needs {shape}")
    if model["shapedirs"].ndim != 3 or model["shapedirs"].shape[:2] != (vertices, 3) or model["shapedirs"].shape[2] < 1:
        raise InputError(f"{path}: 'shapedirs' has shape {model['shapedirs'].shape}, expected ({vertices}, 3, B)")
    if model["posedirs"].shape not in ((vertices, 3, 207), (vertices * 3, 207)):
        raise InputError(f"{path}: 'posedirs' has shape {model['posedirs'].shape}, expected ({vertices}, 3, 207)")
    if model["f"].ndim != 2 or model["f"].shape[1] != 3:
        raise InputError(f"{path}: 'f' has shape {model['f'].shape}, expected (F, 3)")
    parents = model["kintree_table"][0, 1:]
    if model["kintree_table"].dtype.kind not in "iu" or (parents >= np.arange(1, 24)).any():
        raise InputError(f"{path}: 'kintree_table' is not an SMPL kinematic tree (parents must precede children)")


def _as_frames(array: np.ndarray, frames: int, width: int, name: str, source: str) -> np.ndarray:
    array = real_array(array, f"'{name}'", source)
    if array.ndim == 1:
        array = np.broadcast_to(array[None], (frames, array.shape[0]))
    if array.ndim != 2 or array.shape[0] != frames or array.shape[1] < width:
        raise ValueError(f"{source}: '{name}' has shape {array.shape}, expected ({frames}, >={width})")
    return np.ascontiguousarray(array[:, :width])


def smpl_joints_m(model_path: str | os.PathLike, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray,
                  source: str = "SMPL parameters", chunk: int = 1024) -> np.ndarray:
    """SMPL forward kinematics with smplx: (T, 24, 3) joints in metres, in the parameters' own frame.

    ``poses`` (T, >=66) axis-angle, global orientation first (SMPL+H/AMASS 156-wide poses are cut
    to the 22 body joints + zero hand joints); ``betas`` (B,) or (T, B); ``trans`` (T, 3) metres.
    """
    import torch
    import smplx
    from smplx.utils import Struct
    from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

    model = load_smpl_model(model_path)
    poses = real_array(poses, "'poses'", source)
    if poses.ndim != 2 or poses.shape[0] < 1 or poses.shape[1] < 66:
        raise InputError(f"{source}: pose parameters have shape {poses.shape}, expected (T, 72) axis-angle")
    frames = poses.shape[0]
    check_limit(frames, MAX_FRAMES, "the number of frames", source)
    body = poses[:, :72] if poses.shape[1] == 72 else np.concatenate([poses[:, :66], np.zeros((frames, 6), np.float32)], 1)
    trans = _as_frames(trans, frames, 3, "trans", source)
    betas = real_array(betas, "'betas'", source)
    if betas.ndim not in (1, 2) or model["shapedirs"].ndim != 3:
        raise InputError(f"{source}: 'betas' has shape {betas.shape}, expected (B,) or (T, B)")
    num_betas = int(min(model["shapedirs"].shape[-1], betas.shape[-1]))
    betas = _as_frames(betas, frames, num_betas, "betas", source)
    for name, value in (("poses", body), ("betas", betas), ("trans", trans)):
        if not np.isfinite(value).all():
            raise ValueError(f"{source}: '{name}' contains NaN or inf values")
    # Only the 24 skeleton joints are used; the extra vertex joints all point at vertex 0.
    extra = {name: 0 for name in smplx_vertex_ids["smplh"]}
    with reading(model_path, "SMPL model file"), contextlib.redirect_stdout(io.StringIO()):
        # (smplx prints a note for 10-beta models)
        layer = smplx.SMPL(model_path=str(model_path), data_struct=Struct(**model), num_betas=num_betas,
                           vertex_ids=extra, batch_size=1)
    layer.eval()
    out = []
    with torch.no_grad(), reading(model_path, "SMPL model file"):
        for start in range(0, frames, chunk):
            sl = slice(start, start + chunk)
            result = layer(
                betas=torch.from_numpy(betas[sl]), global_orient=torch.from_numpy(body[sl, :3]),
                body_pose=torch.from_numpy(body[sl, 3:]), transl=torch.from_numpy(trans[sl]),
            )
            out.append(result.joints[:, :24].cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def amass_to_camera_mm(joints_m: np.ndarray) -> np.ndarray:
    """AMASS z-up world joints (T, 24, 3) metres -> camera frame mm, placed at the dataset-mean pelvis."""
    from .stats import load_stats

    joints_mm = np.asarray(joints_m, dtype=np.float64) @ AMASS_TO_CAMERA.T * 1000.0
    mean, _ = load_stats()
    offset = mean[0].astype(np.float64) - joints_mm[:, 0].mean(axis=0)
    return (joints_mm + offset).astype(np.float32)
