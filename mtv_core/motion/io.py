"""Motion files: one loader that recognises the format by content, and the ``.npz`` save format.

Formats read by ``load_motions`` / ``load_motion``:

* **upstream MTVCrafter pickle** (``.pkl``): a list of dicts (or one dict) with ``pose`` (T, 24, 3)
  mm and ``video_path``/``video_length``/``video_height``/``video_width``;
* **raw NLF extraction pickle** (upstream ``process_nlf.py``): ``pose["joints3d_nonparam"]`` is a
  per-frame list of ``[tensor(n_people, 24, 3)]``, saved from CUDA. Tensors are rebuilt as CPU numpy
  arrays by the restricted unpickler. One person per frame: the first detection in the first frame
  that has one, then whoever's pelvis is nearest the previous pick. Empty frames are filled by
  linear interpolation (held at the ends) and marked ``valid=False``;
* **our ``.npz``** (``joints_mm`` (T,24,3) float32, ``fps``, ``valid`` (T,) bool, ``meta`` JSON
  string, ``format`` = "mtv_joints", ``version``), read with ``allow_pickle=False``;
* **SMPL parameters** (``.npz``/``.pkl``): AMASS-style ``poses``/``betas``/``trans`` (z-up world,
  ``mocap_framerate``) or NLF-style ``pose``/``betas``/``trans`` (camera frame), turned into joints
  with a user-supplied SMPL model (see ``smpl.py`` for the frame transform);
* a bare ``.npy`` array (T, 24, 3) in camera-frame millimetres.

Pickles are never read with a plain ``pickle.load`` (see ``safe_pickle.py``); ``.npy``/``.npz`` are read
without pickle, their headers checked before any data is (``arrays.py``). Every file is held to the
budgets of ``mtv_core.limits`` (file size, decoded bytes, frames, people per frame, metadata depth), and
whatever is wrong with it is one ``MotionFormatError`` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, reading
from ..files import atomic_output
from ..limits import (
    MAX_ABS_MM,
    MAX_FRAMES,
    MAX_MOTION_FILE_BYTES,
    MAX_MOTION_META_CHARS,
    MAX_PEOPLE_PER_FRAME,
    MAX_SEQUENCES,
    REAL_KINDS,
    Budget,
    check_file_size,
    check_fps,
    check_limit,
    parse_json,
)
from .arrays import NpzArchive, read_npy
from .safe_pickle import safe_load_pickle
from .sequence import NUM_JOINTS, JointSequence

logger = logging.getLogger(__name__)

MOTION_EXTENSIONS = (".npz", ".pkl", ".pickle", ".npy")
DEFAULT_FPS = 20.0  # upstream pickles carry no frame rate; MTVCrafter renders at 20 fps
FORMAT_NAME = "mtv_joints"
FORMAT_VERSION = 1


class MotionFormatError(InputError):
    """The file exists but is not a motion file we understand (or its content is invalid)."""


_META_DEPTH = 3  # nested lists kept in metadata taken from pickles
_META_ITEMS = 16


def _plain(value: Any, depth: int = 0) -> Any:
    """Make metadata JSON-friendly (numpy scalars -> Python); large or deep values are dropped (None)."""
    if isinstance(value, np.generic):
        return value.item() if value.dtype.kind in "biufSU" else None
    if isinstance(value, str):
        return value if len(value) <= 4096 else None
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if depth >= _META_DEPTH:
        return None
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufSU" and value.size <= _META_ITEMS \
            and value.ndim <= _META_DEPTH and max(value.shape, default=0) <= _META_ITEMS:
        return value.tolist()  # (an empty array of shape (2000, 2000, 0) would be 4 million empty lists)
    if isinstance(value, (list, tuple)) and len(value) <= _META_ITEMS:
        return [_plain(v, depth + 1) for v in value]
    return None


def _sequence(path: Path, joints: Any, fps: float, valid: Any = None, meta: dict | None = None,
              what: str = "") -> JointSequence:
    where = f"{path}{what}"
    if meta:  # only what our own .npz can hold and read back (Save Motion of a loaded file must round-trip)
        check_limit(len(json.dumps(meta, ensure_ascii=False, default=_plain)), MAX_MOTION_META_CHARS,
                    "the size of its metadata (JSON characters)", where)
    try:
        joints = np.asarray(joints)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MotionFormatError(f"{where}: joints are not a regular numeric array ({exc})") from None
    if joints.dtype.kind not in REAL_KINDS:
        raise MotionFormatError(f"{where}: joints must be real numbers, got dtype {joints.dtype}")
    if joints.ndim == 3 and joints.shape[1:] != (NUM_JOINTS, 3):
        raise MotionFormatError(f"{where}: expected {NUM_JOINTS} joints x 3 coordinates per frame, "
                                f"got shape {tuple(joints.shape)}")
    try:
        return JointSequence(joints, fps=fps, valid=valid, meta=meta or {})
    except InputError as exc:
        raise MotionFormatError(f"{where}: {exc}") from None


# --- pickles ------------------------------------------------------------------------------------


def _frame_people(entry: Any) -> np.ndarray:
    """One NLF frame entry ([tensor(n,24,3)] or the array itself) -> (n, 24, 3) float32.

    Detections with coordinates beyond ``MAX_ABS_MM`` become NaN, so ``pick_people`` drops them like
    any other non-finite detection.
    """
    if isinstance(entry, (list, tuple)):
        entry = entry[0] if len(entry) else np.zeros((0, NUM_JOINTS, 3), np.float32)
    try:
        people = np.asarray(entry)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"a frame holds no regular joint array ({exc})") from None
    if people.dtype.kind not in REAL_KINDS:
        raise ValueError(f"a frame holds joints of dtype {people.dtype}, expected real numbers")
    if people.ndim == 2:
        people = people[None]
    if people.ndim != 3 or people.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(f"a frame holds joints of shape {people.shape}, expected (n_people, 24, 3)")
    if len(people) > MAX_PEOPLE_PER_FRAME:
        raise ValueError(f"a frame holds {len(people)} people, over the limit of {MAX_PEOPLE_PER_FRAME}")
    people = people.astype(np.float64)
    people[np.abs(people) > MAX_ABS_MM] = np.nan
    return people.astype(np.float32)


def pick_people(frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (n_i, 24, 3) detections -> one track (T, 24, 3) and its validity mask.

    Rule: the first detection (NLF orders by detector score) of the first non-empty frame, then in
    each frame the person whose pelvis is nearest the last picked pelvis. Empty frames are filled by
    linear interpolation between their valid neighbours (held at the ends) and marked invalid.
    """
    count = len(frames)
    joints = np.zeros((count, NUM_JOINTS, 3), np.float32)
    valid = np.zeros(count, bool)
    last_pelvis = None
    for t, people in enumerate(frames):
        people = people[np.isfinite(people).all(axis=(1, 2))] if len(people) else people
        if len(people) == 0:
            continue
        k = 0 if last_pelvis is None else int(np.argmin(np.linalg.norm(people[:, 0] - last_pelvis, axis=-1)))
        joints[t], valid[t] = people[k], True
        last_pelvis = people[k, 0]
    if valid.any() and not valid.all():
        joints = fill_invalid(joints, valid)
    return joints, valid


def fill_invalid(joints: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over time (axis 0) of invalid frames (held at the ends); valid frames are untouched.

    ``joints`` may have any trailing shape ((T, 24, 3) joints, (T, 4) boxes, ...); returns float32.
    """
    known = np.flatnonzero(valid)
    if known.size == 0:
        raise ValueError("no valid frame to interpolate from")
    if known.size == len(joints):
        return np.array(joints, dtype=np.float32, copy=True)
    t = np.arange(len(joints))
    flat = joints.reshape(len(joints), -1).astype(np.float64)
    filled = np.empty_like(flat)
    for c in range(flat.shape[1]):
        filled[:, c] = np.interp(t, known, flat[known, c])
    out = filled.reshape(joints.shape).astype(np.float32)
    out[valid] = joints[valid]
    return out


def _nlf_frames(data: Any) -> Any:
    """The per-frame ``joints3d_nonparam`` entries of a raw NLF pickle (under ``pose`` or at the top), else None."""
    if not isinstance(data, dict):
        return None
    pose = data.get("pose")
    if isinstance(pose, dict) and "joints3d_nonparam" in pose:
        return pose["joints3d_nonparam"]
    return data.get("joints3d_nonparam")


def _from_nlf_raw(path: Path, data: dict, per_frame: Any, fps: float) -> JointSequence:
    if not isinstance(per_frame, (list, tuple)) or len(per_frame) == 0:
        raise MotionFormatError(f"{path}: NLF pickle holds no frames (joint sequence is empty)")
    if len(per_frame) == 1 and isinstance(per_frame[0], (list, tuple)) and len(per_frame[0]) > 1:
        per_frame = per_frame[0]  # one outer entry holding all frames (kijai's NLFPRED layout)
    check_limit(len(per_frame), MAX_FRAMES, "the number of frames", path)
    try:
        frames = [_frame_people(entry) for entry in per_frame]
    except (ValueError, TypeError) as exc:
        raise MotionFormatError(f"{path}: {exc}") from None
    joints, valid = pick_people(frames)
    if not valid.any():
        raise MotionFormatError(f"{path}: nobody was detected in any of the {len(frames)} frames")
    meta = {k: _plain(data.get(k)) for k in ("video_path", "video_length", "video_height", "video_width")
            if k in data}
    meta.update(format="nlf_pickle", person_rule="first detection, then nearest pelvis",
                people_per_frame_max=int(max(len(f) for f in frames)))
    if not valid.all():
        logger.info("%s: %d of %d frames had nobody detected; interpolated", path, int((~valid).sum()), len(valid))
    return _sequence(path, joints, fps, valid, meta)


def _from_upstream_list(path: Path, items: list, fps: float) -> list[JointSequence]:
    check_limit(len(items), MAX_SEQUENCES, "the number of sequences", path)
    sequences = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "pose" not in item:
            raise MotionFormatError(f"{path}: item {i} has no 'pose' array (unknown motion format)")
        meta = {k: _plain(v) for k, v in item.items() if k != "pose" and _plain(v) is not None}
        meta.update(format="mtvcrafter_pickle", index=i)
        sequences.append(_sequence(path, item["pose"], fps, None, meta, what=f" (item {i})"))
    return sequences


def _is_smpl_params(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    pose = data.get("poses", data.get("pose"))
    return isinstance(pose, np.ndarray) and pose.ndim == 2 and pose.shape[1] >= 66 and "trans" in data


def _from_smpl_params(path: Path, data: dict, fps: float | None, smpl_model: str | os.PathLike | None) -> JointSequence:
    from .smpl import amass_to_camera_mm, smpl_joints_m

    if smpl_model is None:
        raise MotionFormatError(f"{path}: holds SMPL parameters; an SMPL model file is needed to turn them into "
                                "joints (put e.g. SMPL_NEUTRAL.pkl in models/mtvcrafter/smpl)")
    amass = "poses" in data
    poses = data["poses"] if amass else data["pose"]
    check_limit(len(poses), MAX_FRAMES, "the number of frames", path)
    betas = np.asarray(data.get("betas", np.zeros(10, np.float32)))
    if fps is None:
        rate = data.get("mocap_framerate", data.get("mocap_frame_rate", data.get("fps")))
        if rate is not None and (not isinstance(rate, (int, float, np.ndarray, np.generic)) or np.size(rate) != 1):
            raise MotionFormatError(f"{path}: the frame rate must be one number, got {type(rate).__name__}")
        fps = check_fps(np.asarray(rate).reshape(()).item(), path) if rate is not None else DEFAULT_FPS
    try:
        joints_m = smpl_joints_m(smpl_model, poses, betas, data["trans"], source=str(path))
    except ValueError as exc:
        raise MotionFormatError(str(exc)) from None
    joints_mm = amass_to_camera_mm(joints_m) if amass else joints_m * 1000.0
    meta = {"format": "amass_smpl" if amass else "smpl_camera", "smpl_model": Path(smpl_model).name}
    return _sequence(path, joints_mm, fps, None, meta)


def _from_pickle(path: Path, fps: float | None, smpl_model, budget: Budget) -> list[JointSequence]:
    data = safe_load_pickle(path, allow_torch=True, budget=budget)
    rate = DEFAULT_FPS if fps is None else fps
    per_frame = _nlf_frames(data)
    if per_frame is not None:
        return [_from_nlf_raw(path, data, per_frame, rate)]
    if _is_smpl_params(data):
        return [_from_smpl_params(path, data, fps, smpl_model)]
    if isinstance(data, dict) and "pose" in data:
        data = [data]
    if isinstance(data, list):
        if not data:
            raise MotionFormatError(f"{path}: the motion list is empty")
        return _from_upstream_list(path, data, rate)
    raise MotionFormatError(f"{path}: unknown motion format (a {type(data).__name__} without 'pose' or "
                            "'joints3d_nonparam')")


# --- npz / npy ----------------------------------------------------------------------------------


_SMPL_KEYS = ("poses", "pose", "betas", "trans", "mocap_framerate", "mocap_frame_rate", "fps")


def _from_npz(path: Path, fps: float | None, smpl_model, budget: Budget) -> list[JointSequence]:
    with NpzArchive(path, budget) as npz:  # members are read (decompressed) only when used
        if "joints_mm" not in npz:
            data = {key: npz.read(key) for key in _SMPL_KEYS if key in npz}
            if _is_smpl_params(data):
                return [_from_smpl_params(path, data, fps, smpl_model)]
            keys = sorted(npz.keys())
            shown = ", ".join(k[:40] for k in keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
            raise MotionFormatError(f"{path}: unknown motion format (npz keys: {shown or 'none'}; expected "
                                    "'joints_mm', or SMPL 'poses'/'pose' with 'trans')")
        joints = npz.read("joints_mm")
        meta: dict[str, Any] = {}
        if "meta" in npz:
            try:
                raw = npz.read("meta")
            except InputError as exc:  # e.g. an object array: never unpickled, the metadata is left out
                logger.warning("%s: skipping 'meta' (%s)", path, exc)
            else:
                if raw.ndim != 0 or raw.dtype.kind not in "US":
                    raise MotionFormatError(f"{path}: 'meta' must be one JSON string, got shape {raw.shape} "
                                            f"dtype {raw.dtype}")
                text = raw.item()
                meta = parse_json(text.decode("utf-8") if isinstance(text, bytes) else text, path, "'meta'")
        if fps is None and "fps" in npz:
            value = npz.read("fps")
            if value.size != 1 or value.dtype.kind not in REAL_KINDS:
                raise MotionFormatError(f"{path}: 'fps' must be one number, got shape {value.shape} "
                                        f"dtype {value.dtype}")
            rate = float(value.reshape(()))
        else:
            rate = fps or DEFAULT_FPS
        valid = npz.read("valid") if "valid" in npz else None
    return [_sequence(path, joints, rate, valid, meta)]


def _from_npy(path: Path, fps: float | None, budget: Budget) -> list[JointSequence]:
    return [_sequence(path, read_npy(path, budget), fps or DEFAULT_FPS, None, {"format": "npy"})]


# --- public API ---------------------------------------------------------------------------------


def load_motions(path: str | os.PathLike, fps: float | None = None,
                 smpl_model: str | os.PathLike | None = None) -> list[JointSequence]:
    """Every joint sequence in ``path`` (upstream pickles may hold several).

    ``fps`` overrides the file's frame rate (pickles have none: default 20). ``smpl_model`` is the
    SMPL model file needed only for SMPL-parameter files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"motion file not found: {path}")
    if fps is not None:
        fps = check_fps(fps)
    with reading(path, "motion file", MotionFormatError):
        check_file_size(path, MAX_MOTION_FILE_BYTES, "motion file")
        budget = Budget.for_file(path)
        with open(path, "rb") as f:
            head = f.read(8)
    suffix = path.suffix.lower()
    if head.startswith(b"PK"):
        with reading(path, ".npz archive", MotionFormatError):
            sequences = _from_npz(path, fps, smpl_model, budget)
    elif head.startswith(b"\x93NUMPY"):
        with reading(path, ".npy array", MotionFormatError):
            sequences = _from_npy(path, fps, budget)
    elif head[:1] == b"\x80" or suffix in (".pkl", ".pickle"):
        with reading(path, "motion pickle", MotionFormatError):
            sequences = _from_pickle(path, fps, smpl_model, budget)
    else:
        raise MotionFormatError(f"{path}: unknown motion format (expected one of {', '.join(MOTION_EXTENSIONS)})")
    for seq in sequences:
        seq.meta.setdefault("source", path.name)
    logger.debug("loaded %d sequence(s) from %s", len(sequences), path)
    return sequences


class MotionIndexError(MotionFormatError, IndexError):
    """The file holds fewer sequences than the index asks for."""


def load_motion(path: str | os.PathLike, index: int = 0, fps: float | None = None,
                smpl_model: str | os.PathLike | None = None) -> JointSequence:
    """Sequence ``index`` of ``path`` (see ``load_motions``)."""
    sequences = load_motions(path, fps=fps, smpl_model=smpl_model)
    if not 0 <= index < len(sequences):
        raise MotionIndexError(f"{path}: sequence index {index} out of range (the file holds {len(sequences)})")
    return sequences[index]


def save_motion(seq: JointSequence, path: str | os.PathLike) -> Path:
    """Write ``seq`` as our ``.npz`` (lossless). Written to a temporary name, then moved into place."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        path = path.with_name(path.name + ".npz")
    try:
        meta = json.dumps(seq.meta, ensure_ascii=False, default=_plain)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InputError(f"cannot save the metadata of this motion to {path} ({exc})") from None
    # what is saved must load again: refused here, before anything is written, rather than by load_motion
    check_limit(len(meta), MAX_MOTION_META_CHARS, "the size of the motion's metadata (JSON characters)", path)
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        np.savez(f, joints_mm=seq.joints_mm, fps=np.float64(seq.fps), valid=seq.valid,
                 meta=np.array(meta), format=np.array(FORMAT_NAME), version=np.int64(FORMAT_VERSION))
    logger.info("saved %s (%d frames, %.3g fps)", path, seq.num_frames, seq.fps)
    return path
