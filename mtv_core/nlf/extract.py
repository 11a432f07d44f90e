"""Batched NLF detection over video frames: frames in, per-frame ragged detections out.

No person selection happens here (see ``tracking.py``): every frame keeps all detected people,
in NLF's order (detector score, after pose NMS).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..progress import ProgressCallback, report
from .errors import NLFError
from .model import NLFModel, check_device, profiling_executor, warn_if_jit_script_patched

logger = logging.getLogger(__name__)

SMPL_PARAM_KEYS = ("pose", "betas", "trans")


@dataclass
class FrameDetections:
    """All people NLF found, frame by frame.

    Attributes:
        boxes: per frame, (n_t, 5) float32 ``[x, y, w, h, score]`` in pixels (top-left corner + size).
        joints_mm: per frame, (n_t, 24, 3) float32 ``joints3d_nonparam``: SMPL-24 joints, camera frame
            (x right, y down, z forward), millimetres.
        smpl: None, or per key ``pose`` (n_t, 72) axis-angle, ``betas`` (n_t, 10), ``trans`` (n_t, 3) metres.
        image_size: (height, width) of the frames in pixels.
        fov_degrees: the field of view the 3D output assumes.
        detector_threshold: the detector score threshold used.
    """

    boxes: list[np.ndarray]
    joints_mm: list[np.ndarray]
    smpl: dict[str, list[np.ndarray]] | None
    image_size: tuple[int, int]
    fov_degrees: float
    detector_threshold: float

    @property
    def num_frames(self) -> int:
        return len(self.boxes)

    @property
    def people_per_frame(self) -> np.ndarray:
        return np.array([b.shape[0] for b in self.boxes], dtype=np.int64)


def _as_tensor(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor or numpy array, got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be (T, H, W, 3) RGB images, got shape {tuple(frames.shape)}")
    if frames.shape[0] < 1:
        raise ValueError("no frames to process (0 images)")
    if frames.dtype != torch.uint8 and not frames.dtype.is_floating_point:
        raise TypeError(f"frames must be uint8 (0..255) or float (0..1), got dtype {frames.dtype}")
    return frames


def frames_to_nchw(frames: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """(B, H, W, 3|4) RGB(A) frames -> (B, 3, H, W) on ``device``, as NLF takes them.

    uint8 stays uint8 (NLF divides by 255 itself). Float is clamped to 0..1 and sent as float16:
    NLF's first step casts any float input to float16, so this halves the copy and memory at no
    change in the result. An alpha channel is dropped. Channel order is kept: RGB in, RGB out.
    """
    frames = frames[..., :3]
    if frames.dtype.is_floating_point:
        frames = frames.clamp(0.0, 1.0).to(torch.float16)
    return frames.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()


def _to_numpy(tensors: list[torch.Tensor], tail: tuple[int, ...], key: str) -> list[np.ndarray]:
    out = []
    for t in tensors:
        arr = t.detach().to("cpu", torch.float32).numpy()
        n = arr.shape[0] if arr.ndim else 0
        if n == 0:
            out.append(np.zeros((0, *(max(d, 0) for d in tail)), np.float32))
            continue
        try:
            out.append(arr.reshape((n, *tail)))
        except ValueError as exc:
            raise NLFError(f"unexpected NLF output shape for '{key}': {tuple(arr.shape)}") from exc
    return out


def detect_people(
    model: NLFModel,
    frames: torch.Tensor | np.ndarray,
    *,
    batch_size: int = 8,
    fov_degrees: float = 55.0,
    detector_threshold: float = 0.3,
    keep_smpl_params: bool = False,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    callback: ProgressCallback | None = None,
) -> FrameDetections:
    """Run NLF on every frame, ``batch_size`` frames per call.

    Args:
        model: a loaded NLF model.
        frames: (T, H, W, 3) RGB, float in 0..1 (ComfyUI IMAGE) or uint8; stays where it is and is
            copied to ``device`` one batch at a time, so long videos need memory for one batch only.
        batch_size: frames per NLF call (NLF further splits crops by its ``internal_batch_size``).
        fov_degrees: horizontal-or-vertical (the larger side) field of view of the camera, degrees;
            sets the intrinsics NLF assumes and so the depth scale of the 3D joints.
        detector_threshold: person detector score threshold (0..1).
        keep_smpl_params: also keep ``pose``, ``betas`` and ``trans`` (for an SMPL body-model path).
        device: compute device; default CUDA. Real NLF files refuse non-CUDA devices before any work.
        offload_device: where the model goes back to afterwards (also on error or cancel).
        callback: ``callback(frames_done, total_frames, None)`` after each batch; raising cancels.
    """
    frames = _as_tensor(frames)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 1.0 <= fov_degrees <= 179.0:
        raise ValueError(f"fov_degrees must be in 1..179, got {fov_degrees}")
    if not 0.0 <= detector_threshold <= 1.0:
        raise ValueError(f"detector_threshold must be in 0..1, got {detector_threshold}")
    device = check_device(model, device)
    warn_if_jit_script_patched()

    total = int(frames.shape[0])
    boxes: list[np.ndarray] = []
    joints: list[np.ndarray] = []
    smpl: dict[str, list[np.ndarray]] | None = {k: [] for k in SMPL_PARAM_KEYS} if keep_smpl_params else None
    model.to(device)
    try:
        with torch.inference_mode(), profiling_executor(True):
            for start in range(0, total, batch_size):
                batch = frames_to_nchw(frames[start : start + batch_size], device)
                try:
                    pred = model.detect(
                        batch, default_fov_degrees=float(fov_degrees), detector_threshold=float(detector_threshold)
                    )
                except RuntimeError as exc:
                    if "same device" in str(exc):
                        raise NLFError(
                            f"NLF failed with a device mismatch ({exc}). Load the model with the compute device "
                            "set to CUDA; NLF does not run on CPU."
                        ) from exc
                    raise
                n = batch.shape[0]
                for key in ("boxes", "joints3d_nonparam", *(SMPL_PARAM_KEYS if keep_smpl_params else ())):
                    if key not in pred:
                        raise NLFError(f"NLF output has no '{key}' (keys: {sorted(pred)}); is this an NLF model?")
                    if len(pred[key]) != n:
                        raise NLFError(f"NLF returned {len(pred[key])} '{key}' entries for a batch of {n} frames")
                boxes += _to_numpy(pred["boxes"], (5,), "boxes")
                joints += _to_numpy(pred["joints3d_nonparam"], (24, 3), "joints3d_nonparam")
                if smpl is not None:
                    # pose is (n, 72), except (0, 24, 3) in NLF's all-empty path: flatten per person.
                    smpl["pose"] += _to_numpy(pred["pose"], (-1,), "pose")
                    smpl["betas"] += _to_numpy(pred["betas"], (-1,), "betas")
                    smpl["trans"] += _to_numpy(pred["trans"], (3,), "trans")
                del pred, batch
                report(callback, min(start + batch_size, total), total)
    finally:
        model.to(offload_device)
    if smpl is not None:
        smpl["pose"] = [p if p.shape[0] else np.zeros((0, 72), np.float32) for p in smpl["pose"]]
        smpl["betas"] = [b if b.shape[0] else np.zeros((0, 10), np.float32) for b in smpl["betas"]]
    counts = [b.shape[0] for b in boxes]
    logger.info(
        "NLF: %d frames, %d with nobody, up to %d people per frame", total, counts.count(0), max(counts, default=0)
    )
    return FrameDetections(
        boxes=boxes,
        joints_mm=joints,
        smpl=smpl,
        image_size=(int(frames.shape[1]), int(frames.shape[2])),
        fov_degrees=float(fov_degrees),
        detector_threshold=float(detector_threshold),
    )
