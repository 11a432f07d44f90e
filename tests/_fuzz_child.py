"""The fuzz suite's worker process: runs one loader per request on a file, under a memory ceiling.

Started by ``tests/_fuzz.py``; reads one JSON request per line on stdin (``{"target": ..., "path": ...}``)
and answers one JSON line on stdout:

    {"outcome": "ok"}                                   the file loaded and the result is valid
    {"outcome": "input_error", "message": ...}          the pack refused it with an InputError
    {"outcome": "bad", "type": ..., "message": ...}     anything else: a raw exception, or an invalid result

A crash (segfault, abort) or a hang is seen by the parent as a dead or silent worker. The address space
is capped with ``RLIMIT_AS`` (``MTV_FUZZ_MEMORY_MB`` above what the imports took), so a file that makes
the pack allocate beyond its budget fails here as a ``MemoryError`` instead of swapping the machine.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from mtv_core.commands.animate import load_reference  # noqa: E402
from mtv_core.dit.loading import load_mvdit7b  # noqa: E402
from mtv_core.dit.pipeline_7b import prepare_reference  # noqa: E402
from mtv_core.dit.vae import load_vae  # noqa: E402
from mtv_core.errors import InputError  # noqa: E402
from mtv_core.limits import MAX_ABS_MM, MAX_FPS, MAX_FRAMES, MIN_FPS  # noqa: E402
from mtv_core.checkpoint import open_checkpoint  # noqa: E402
from mtv_core.motion.io import load_motions, save_motion  # noqa: E402
from mtv_core.motion.smpl import load_smpl_model  # noqa: E402
from mtv_core.tokenizer.loading import load_tokenizer  # noqa: E402

import smplx  # noqa: E402,F401  (imported up front: its import must not count against the memory ceiling)
import diffusers  # noqa: E402,F401

SCRATCH = Path(tempfile.mkdtemp(prefix="mtv_fuzz_child_"))


class Invalid(Exception):
    """A loader returned something that breaks the documented invariants."""


def _check_sequence(seq) -> None:
    joints = seq.joints_mm
    if not (isinstance(joints, np.ndarray) and joints.dtype == np.float32 and joints.ndim == 3
            and joints.shape[1:] == (24, 3) and 1 <= joints.shape[0] <= MAX_FRAMES):
        raise Invalid(f"joints {type(joints)} {getattr(joints, 'dtype', '')} {getattr(joints, 'shape', '')}")
    if not np.isfinite(joints).all() or np.abs(joints).max() > MAX_ABS_MM:
        raise Invalid("joints not finite or out of range")
    if not (isinstance(seq.fps, float) and MIN_FPS <= seq.fps <= MAX_FPS):
        raise Invalid(f"fps {seq.fps!r}")
    if not (seq.valid.dtype == bool and seq.valid.shape == joints.shape[:1]):
        raise Invalid("valid mask")
    # what loads can be saved and loads back the same
    back = load_motions(save_motion(seq, SCRATCH / "roundtrip.npz"))[0]
    if not (np.array_equal(back.joints_mm, joints) and back.fps == seq.fps and np.array_equal(back.valid, seq.valid)):
        raise Invalid("save/load round trip changed the motion")


def run_motion(path: str, request: dict) -> None:
    sequences = load_motions(path, smpl_model=request.get("smpl_model"))
    if not sequences:
        raise Invalid("no sequence and no error")
    for seq in sequences:
        _check_sequence(seq)


def run_smpl_model(path: str, request: dict) -> None:
    model = load_smpl_model(path)
    if not all(isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in model.values()):
        raise Invalid("SMPL model arrays")


def run_checkpoint(path: str, request: dict) -> None:
    ckpt = open_checkpoint(path)
    for key in ckpt.keys():
        shape, dtype = ckpt.shape(key), ckpt.dtype(key)
        tensor = ckpt.get(key)
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
            raise Invalid(f"{key}: header says {shape} {dtype}, read {tuple(tensor.shape)} {tensor.dtype}")


def run_tokenizer(path: str, request: dict) -> None:
    load_tokenizer(path)


def run_dit(path: str, request: dict) -> None:
    load_mvdit7b(path, dtype="fp32", attention="sdpa")


def run_dit17b(path: str, request: dict) -> None:
    from mtv_core.dit.loading_17b import load_mvdit17b

    load_mvdit17b(path, dtype="fp32", attention="sdpa")


def run_vae(path: str, request: dict) -> None:
    load_vae(path, dtype=torch.float32)


def run_image(path: str, request: dict) -> None:
    image = load_reference(path, min_side=64)  # as the commands read it
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3
            and image.dtype in (np.uint8, np.uint16)):
        raise Invalid(f"reference array {image.dtype} {image.shape}")
    _check_reference(prepare_reference(image, 64, 64))


def run_image_array(path: str, request: dict) -> None:
    array = np.load(path, allow_pickle=False)
    _check_reference(prepare_reference(torch.from_numpy(array) if request.get("torch") else array,
                                       request.get("width", 64), request.get("height", 64)))


def _check_reference(ref) -> None:
    if not (isinstance(ref, torch.Tensor) and ref.dtype == torch.float32 and ref.ndim == 3 and ref.shape[-1] == 3
            and torch.isfinite(ref).all() and ref.min() >= 0 and ref.max() <= 1):
        raise Invalid("prepared reference")


TARGETS = {
    "motion": run_motion, "smpl_model": run_smpl_model, "checkpoint": run_checkpoint, "tokenizer": run_tokenizer,
    "dit": run_dit, "dit17b": run_dit17b, "vae": run_vae, "image": run_image, "image_array": run_image_array,
}  # fmt: skip


def _vm_size() -> int | None:
    """Address space in use (Linux); None where /proc is missing (no ceiling is set there: timeouts only)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main() -> None:
    ceiling = int(os.environ.get("MTV_FUZZ_MEMORY_MB", "1536")) << 20
    used = _vm_size()
    limit = used + ceiling if used is not None else 0
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a loader prints must not corrupt the protocol
    out.write(json.dumps({"ready": True, "limit_mb": limit >> 20}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        path = request["path"]
        try:
            TARGETS[request["target"]](path, request)
            answer = {"outcome": "ok"}
        except InputError as exc:
            answer = {"outcome": "input_error", "type": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - everything else is what the fuzz suite reports
            answer = {"outcome": "bad", "type": type(exc).__name__, "message": str(exc)[:2000],
                      "traceback": traceback.format_exc()[-4000:]}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
