"""Joint sequences <-> motion tokens with a loaded 4DMoT, and the reconstruction error.

Units and layouts: joints in millimetres, (T, 24, 3) or (B, T, 24, 3), camera frame y down.
The tokenizer sees ``(joints_mm - mean) / std`` with the released dataset statistics (or the
statistics stored with a checkpoint we trained). Tokens are (B, T' * 24, C) fp32, frame-major /
joint-minor; indices (B, T' * 24) int64 in the same order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .. import constants
from ..constants import NUM_JOINTS, OVERLAP_FRAMES, WINDOW_FRAMES
from ..motion.io import DEFAULT_FPS
from ..motion.sequence import JointSequence
from ..progress import ProgressCallback, report
from ..windows import plan_windows
from .model import MotionVQVAE
from .tokens import MotionTokens, TokenWindow

logger = logging.getLogger(__name__)


@dataclass
class Encoded:
    """Result of :func:`encode_joints`."""

    tokens: torch.Tensor  # (B, T'*J', C) fp32 quantised tokens
    indices: torch.Tensor  # (B, T'*J') int64 codebook indices
    latent_frames: int  # T'
    num_frames: int  # T
    commit_loss: float  # upstream's "vq loss" (MSE between encoder output and codes); > 0.1 hints at poor fit
    features: torch.Tensor | None = None  # (B, C, T', J') pre-quantisation encoder output, if asked for


def tokenizer_stats(model: MotionVQVAE) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (24, 3) float32 mm: the checkpoint's own, else the released dataset statistics."""
    if model.stats is not None:
        return model.stats
    from ..motion.stats import load_stats

    return load_stats()


def _as_batch(joints_mm, num_joints: int) -> np.ndarray:
    if isinstance(joints_mm, JointSequence):
        joints_mm = joints_mm.joints_mm
    if isinstance(joints_mm, torch.Tensor):
        joints_mm = joints_mm.detach().cpu().numpy()
    array = np.asarray(joints_mm, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[2:] != (num_joints, 3):
        raise ValueError(f"the motion tokenizer expects joints of shape (T, {num_joints}, 3) or "
                         f"(B, T, {num_joints}, 3) in mm, got {tuple(np.shape(joints_mm))}")
    if array.shape[1] < 1:
        raise ValueError("the motion tokenizer needs at least 1 frame, got 0")
    if not np.isfinite(array).all():
        raise ValueError("joints contain NaN or inf values")
    return array


def normalize_joints(model: MotionVQVAE, joints_mm) -> torch.Tensor:
    """(T, 24, 3) or (B, T, 24, 3) mm -> (B, T, 24, 3) float32 normalised tensor on the CPU."""
    array = _as_batch(joints_mm, model.config.num_joints)
    mean, std = tokenizer_stats(model)
    return torch.from_numpy((array - mean) / std)


def denormalize_joints(model: MotionVQVAE, normalized: torch.Tensor) -> np.ndarray:
    """(B, T, 24, 3) normalised -> float32 mm numpy array."""
    mean, std = tokenizer_stats(model)
    return (normalized.detach().float().cpu().numpy() * std + mean).astype(np.float32)


def _warn_length(num_frames: int, chunk: int) -> None:
    if (num_frames - 1) % chunk:
        logger.warning(
            "motion has %d frames, not of the form %dk+1: the tokenizer handles it, but the DiTs expect "
            "windows of %d frames (%d latent frames)", num_frames, chunk, WINDOW_FRAMES, constants.latent_frames(WINDOW_FRAMES))


@torch.no_grad()  # not inference_mode: callers may modify the returned tensors in place
def encode_joints(model: MotionVQVAE, joints_mm, return_features: bool = False) -> Encoded:
    """Encode joints (mm) to tokens and codebook indices (code selection in fp32)."""
    normalized = normalize_joints(model, joints_mm)
    _warn_length(normalized.shape[1], model.config.encoder_chunk)
    features = model.encode_features(normalized)
    tokens, indices, commit = model.quantize(features)
    return Encoded(tokens=tokens, indices=indices, latent_frames=features.shape[2], num_frames=normalized.shape[1],
                   commit_loss=float(commit), features=features if return_features else None)


@torch.no_grad()  # not inference_mode: callers may modify the returned tensors in place
def decode_to_mm(model: MotionVQVAE, tokens: torch.Tensor | None = None, indices: torch.Tensor | None = None,
                 latent_frames: int | None = None, num_frames: int | None = None) -> np.ndarray:
    """Tokens (B, T'*J', C) or indices (B, T'*J') -> joints (B, T, 24, 3) float32 mm.

    ``latent_frames`` defaults to the token count divided by the latent joints per frame. The
    decoder gives 8k+1 frames back for 8k+1 input frames; for other lengths its frame count
    differs (as upstream's), so ``num_frames``, if given, trims the result or repeats its last frame.
    """
    per_frame = model.config.latent_joints
    source = tokens if tokens is not None else indices
    if source is None:
        raise ValueError("decode needs tokens or indices")
    if source.ndim == (2 if tokens is not None else 1):
        source = source[None]
    count = source.shape[1]
    if latent_frames is None:
        if count % per_frame:
            raise ValueError(f"{count} motion tokens are not a whole number of latent frames of {per_frame} joints")
        latent_frames = count // per_frame
    if tokens is not None:
        if source.shape[-1] != model.config.code_dim:
            raise ValueError(f"tokens have {source.shape[-1]} channels, the tokenizer's codes have {model.config.code_dim}")
        normalized = model.decode_tokens(source, latent_frames)
    else:
        normalized = model.decode_indices(source.long(), latent_frames)
    if num_frames is not None and normalized.shape[1] != num_frames:
        if normalized.shape[1] > num_frames:
            normalized = normalized[:, :num_frames]
        else:
            pad = normalized[:, -1:].expand(-1, num_frames - normalized.shape[1], -1, -1)
            normalized = torch.cat([normalized, pad], dim=1)
    return denormalize_joints(model, normalized)


def mpjpe(pred_mm: np.ndarray, target_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean per-joint position error in mm: per frame (T,) and over the whole sequence.

    Extra leading batch axes are averaged; frames beyond the shorter sequence are ignored.
    """
    pred = np.asarray(pred_mm, dtype=np.float64)
    target = np.asarray(target_mm, dtype=np.float64)
    frames = min(pred.shape[-3], target.shape[-3])
    err = np.linalg.norm(pred[..., :frames, :, :] - target[..., :frames, :, :], axis=-1)  # (..., T, J)
    per_frame = err.mean(axis=-1).reshape(-1, frames).mean(axis=0)
    return per_frame.astype(np.float32), float(per_frame.mean()) if frames else float("nan")


def reconstruction_report(motion: MotionTokens, recon: JointSequence) -> str:
    """One line for the user: MPJPE of ``recon`` against the encoded joints, worst frame, windows, VQ loss."""
    per_frame, mean = mpjpe(recon.joints_mm, motion.joints.joints_mm)
    worst = int(np.argmax(per_frame))
    losses = motion.meta.get("commit_loss", [])
    text = (f"MPJPE {mean:.1f} mm over {len(per_frame)} frames (worst frame {worst}: {per_frame[worst]:.1f} mm); "
            f"{len(motion.windows)} window(s)")
    if losses:
        text += f"; vq loss max {max(losses):.3f}" + (" (> 0.1: motion poorly represented)" if max(losses) > 0.1 else "")
    return text


def reconstruct(model: MotionVQVAE, joints_mm) -> tuple[np.ndarray, Encoded]:
    """Encode and decode: returns (reconstruction (B, T, 24, 3) mm, the encoding)."""
    encoded = encode_joints(model, joints_mm)
    recon = decode_to_mm(model, tokens=encoded.tokens, latent_frames=encoded.latent_frames,
                         num_frames=encoded.num_frames)
    return recon, encoded


def encode_windows(model: MotionVQVAE, joints: JointSequence, window: int = WINDOW_FRAMES, overlap: int = OVERLAP_FRAMES,
                   callback: ProgressCallback | None = None) -> MotionTokens:
    """Encode a sequence window by window (each window on its own, as in training) for the DiTs.

    ``window=0`` encodes the whole sequence as one ``TokenWindow`` of any length. Otherwise the
    windows come from :func:`mtv_core.windows.plan_windows` and ``MotionTokens.joints`` is the
    sequence trimmed to the planned frames. ``callback(step, total, None)`` runs after each window.
    """
    if not isinstance(joints, JointSequence):
        raise TypeError(f"encode_windows expects a JointSequence, got {type(joints).__name__}")
    if joints.joints_mm.shape[1] != NUM_JOINTS:
        raise ValueError(f"expected {NUM_JOINTS} joints, got {joints.joints_mm.shape[1]}")
    if window == 0:
        encoded = encode_joints(model, joints.joints_mm)
        report(callback, 1, 1)
        windows = [TokenWindow(0, joints.num_frames, encoded.tokens.cpu(), encoded.indices.cpu())]
        return MotionTokens(windows=windows, joints=joints, plan=None,
                            meta={"commit_loss": [encoded.commit_loss]})
    try:
        plan = plan_windows(joints.num_frames, window, overlap)
    except ValueError as exc:
        raise ValueError(f"{exc}; set window to 0 to encode the whole sequence at once (window 0 = a single "
                         "window of any length)") from exc
    if plan.used_frames < joints.num_frames:
        logger.info("using the first %d of %d frames (4k+1 frame grid)", plan.used_frames, joints.num_frames)
    used = plan.used_frames
    trimmed = JointSequence(joints.joints_mm[:used], fps=joints.fps, valid=joints.valid[:used], meta=dict(joints.meta))
    windows, losses = [], []
    for i, start in enumerate(plan.starts):
        encoded = encode_joints(model, trimmed.joints_mm[start : start + window])
        windows.append(TokenWindow(start, window, encoded.tokens.cpu(), encoded.indices.cpu()))
        losses.append(encoded.commit_loss)
        report(callback, i + 1, len(plan.starts))
    return MotionTokens(windows=windows, joints=trimmed, plan=plan, meta={"commit_loss": losses})


def decode_motion(model: MotionVQVAE, motion: MotionTokens, callback: ProgressCallback | None = None) -> JointSequence:
    """Decode every window back to mm and stitch them (linear cross-fade over overlaps)."""
    if not motion.windows:
        raise ValueError("motion tokens hold no windows")
    total = max(w.start + w.num_frames for w in motion.windows)
    acc = np.zeros((total, NUM_JOINTS, 3), dtype=np.float64)
    weight = np.zeros((total, 1, 1), dtype=np.float64)
    wins = motion.windows
    for i, win in enumerate(wins):
        # latent frames from the model's own latent joints per frame (TokenWindow assumes 24)
        decoded = decode_to_mm(model, indices=win.indices, num_frames=win.num_frames)[0]
        frames = win.num_frames
        ramp = np.ones(frames)
        if i > 0:  # fade in over the overlap with the previous window
            n = max(0, min(frames, wins[i - 1].start + wins[i - 1].num_frames - win.start))
            ramp[:n] = np.linspace(0.0, 1.0, n + 2)[1:-1]
        if i + 1 < len(wins):  # fade out over the overlap with the next window
            n = max(0, min(frames, win.start + frames - wins[i + 1].start))
            if n:
                ramp[frames - n :] *= 1.0 - np.linspace(0.0, 1.0, n + 2)[1:-1]
        acc[win.start : win.start + frames] += decoded[:frames] * ramp[:, None, None]
        weight[win.start : win.start + frames] += ramp[:, None, None]
        report(callback, i + 1, len(wins))
    covered = weight[:, 0, 0] > 0
    if not covered.all():
        raise ValueError("motion token windows leave frames uncovered")
    joints_mm = (acc / weight).astype(np.float32)
    src = motion.joints
    valid = src.valid[:total] if src is not None and len(src.valid) >= total else None
    meta = dict(src.meta) if src is not None else {}
    meta["source"] = "4dmot_reconstruction"
    return JointSequence(joints_mm, fps=motion.fps if src is not None else DEFAULT_FPS, valid=valid, meta=meta)
