"""Edits of joint sequences. Every function returns a new ``JointSequence`` (inputs are untouched),
keeps the (T, 24, 3) float32 mm camera-frame layout and appends a short note to ``meta["edits"]``.

Invalid frames (``valid=False``: filled in, not observed) never pull valid frames: resampling and
smoothing interpolate/average over valid frames only. A sequence with no valid frame at all is
edited from all its frames (and stays all invalid).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from .io import fill_invalid
from .sequence import NUM_JOINTS, JointSequence

# SMPL left/right joint pairs (hips, knees, ankles, feet, collars, shoulders, elbows, wrists, hands).
SMPL_MIRROR_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
SMPL_MIRROR_PERMUTATION = tuple(
    next((b if j == a else a for a, b in SMPL_MIRROR_PAIRS if j in (a, b)), j) for j in range(NUM_JOINTS)
)

# Joint chain used to measure body size: head-neck-spine-pelvis plus hip-knee-ankle (mean of both legs).
_TRUNK_CHAIN = (15, 12, 9, 6, 3, 0)
_LEG_CHAINS = ((0, 1, 4, 7), (0, 2, 5, 8))
# Stature per unit of that chain: the head joint sits ~0.12 m below the crown and the ankle joint
# ~0.07 m above the sole, which is ~13% of the ~1.5 m head-to-ankle chain of a 1.7 m adult.
STATURE_PER_CHAIN = 1.127
FOOT_JOINTS = (7, 8, 10, 11)  # ankles and feet: the ground contact used by ``scale_to_height``


def _derive(seq: JointSequence, joints_mm: np.ndarray, valid: np.ndarray, note: str,
            fps: float | None = None) -> JointSequence:
    meta = copy.deepcopy(seq.meta)
    meta["edits"] = list(meta.get("edits", [])) + [note]
    return JointSequence(joints_mm.astype(np.float32), fps=seq.fps if fps is None else fps, valid=valid, meta=meta)


def _sources(seq: JointSequence) -> np.ndarray:
    """The frames edits take values from: the valid ones, or all frames when none is marked valid."""
    return seq.valid if seq.valid.any() else np.ones(seq.num_frames, dtype=bool)


def trim(seq: JointSequence, start: int = 0, stop: int | None = None) -> JointSequence:
    """Frames ``start`` (inclusive) to ``stop`` (exclusive; None = to the end)."""
    count = seq.num_frames
    stop = count if stop is None else stop
    if not (0 <= start < stop <= count):
        raise ValueError(f"bad frame range [{start}, {stop}) for a sequence of {count} frames "
                         "(need 0 <= start < stop <= frame count)")
    return _derive(seq, seq.joints_mm[start:stop].copy(), seq.valid[start:stop].copy(), f"trim({start},{stop})")


def resample(seq: JointSequence, fps: float) -> JointSequence:
    """Linear interpolation in time to ``fps`` over the same duration (first frame kept).

    Output frame k sits at ``k / fps`` seconds; frames run while that is within the input's span.
    Values are interpolated between *valid* input frames; an output frame is valid when the input
    frames on both sides of it are valid (or it lands exactly on a valid one).
    """
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"target fps must be a positive number, got {fps}")
    if fps == seq.fps:
        return _derive(seq, seq.joints_mm.copy(), seq.valid.copy(), f"resample({fps:g})")
    count = seq.num_frames
    duration = (count - 1) / seq.fps
    new_count = int(math.floor(duration * fps + 1e-6)) + 1
    src = np.arange(new_count, dtype=np.float64) * (seq.fps / fps)  # positions in input frames
    src = np.minimum(src, count - 1)
    valid_idx = np.flatnonzero(_sources(seq))
    flat = seq.joints_mm.reshape(count, -1).astype(np.float64)
    out = np.empty((new_count, flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(src, valid_idx, flat[valid_idx, c])
    lo, hi = np.floor(src).astype(int), np.ceil(src).astype(int)
    new_valid = seq.valid[lo] & seq.valid[hi]
    return _derive(seq, out.reshape(new_count, NUM_JOINTS, 3), new_valid, f"resample({seq.fps:g}->{fps:g})", fps=fps)


def smooth(seq: JointSequence, sigma_frames: float) -> JointSequence:
    """Gaussian smoothing in time (sigma in frames; 0 = unchanged), averaging valid frames only.

    Each frame becomes the weighted mean of the *valid* frames around it (weights renormalised at
    the ends and around gaps), so filled-in frames never pull observed ones; invalid frames get the
    smoothed value of their valid neighbours. The validity mask is kept.
    """
    if not math.isfinite(sigma_frames) or sigma_frames < 0:
        raise ValueError(f"smoothing sigma must be >= 0 frames, got {sigma_frames}")
    if sigma_frames == 0:
        return _derive(seq, seq.joints_mm.copy(), seq.valid.copy(), "smooth(0)")
    radius = max(1, int(math.ceil(3 * sigma_frames)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    count = seq.num_frames
    weights = _sources(seq).astype(np.float64)
    flat = seq.joints_mm.reshape(count, -1).astype(np.float64) * weights[:, None]
    num = np.zeros_like(flat)
    den = np.zeros(count)
    for off, k in zip(offsets, kernel):
        lo, hi = max(0, -off), min(count, count - off)  # target frames t with t+off in range
        if lo >= hi:  # the offset reaches past a sequence shorter than the kernel
            continue
        num[lo:hi] += k * flat[lo + off:hi + off]
        den[lo:hi] += k * weights[lo + off:hi + off]
    out = seq.joints_mm.reshape(count, -1).astype(np.float64).copy()
    reached = den > 0
    out[reached] = num[reached] / den[reached, None]
    joints = out.reshape(count, NUM_JOINTS, 3)
    if not reached.all():  # invalid frames farther than the kernel from any valid one
        joints = fill_invalid(joints.astype(np.float32), reached)
    return _derive(seq, joints, seq.valid.copy(), f"smooth({sigma_frames:g})")


def mirror(seq: JointSequence, about: str = "center") -> JointSequence:
    """Swap left and right: exchange the SMPL L/R joint pairs and flip x.

    ``about="center"``: x is reflected about the mean pelvis x of the valid frames, so the person
    stays where they were in the image. ``about="camera"``: reflected about x = 0 (the optical axis),
    i.e. the whole image is mirrored. Either way, mirroring twice gives the input back.
    """
    if about == "center":
        axis_x = float(seq.joints_mm[_sources(seq), 0, 0].mean())
    elif about == "camera":
        axis_x = 0.0
    else:
        raise ValueError(f"mirror 'about' must be 'center' or 'camera', got {about!r}")
    joints = seq.joints_mm[:, list(SMPL_MIRROR_PERMUTATION)].astype(np.float64)
    joints[..., 0] = 2.0 * axis_x - joints[..., 0]
    return _derive(seq, joints, seq.valid.copy(), f"mirror({about})")


def chain_length_mm(seq: JointSequence) -> float:
    """Median over valid frames of the head-to-ankle joint chain (trunk + mean leg), in mm."""
    joints = seq.joints_mm[_sources(seq)]

    def chain(ids: tuple[int, ...]) -> np.ndarray:
        return sum(np.linalg.norm(joints[:, a] - joints[:, b], axis=-1) for a, b in zip(ids[:-1], ids[1:]))

    legs = (chain(_LEG_CHAINS[0]) + chain(_LEG_CHAINS[1])) / 2.0
    return float(np.median(chain(_TRUNK_CHAIN) + legs))


def body_height_m(seq: JointSequence) -> float:
    """Estimated stature in metres (pose-independent: joint chain length x ``STATURE_PER_CHAIN``)."""
    return chain_length_mm(seq) * STATURE_PER_CHAIN / 1000.0


def scale_to_height(seq: JointSequence, height_m: float, anchor: str = "feet") -> JointSequence:
    """Retarget the body to a stature of ``height_m`` metres (estimate: ``body_height_m``).

    Every frame is scaled about its own pelvis, so the root trajectory (and thus the depth and the
    place in the image) is unchanged. ``anchor="feet"`` then shifts the whole sequence vertically so
    the ground level (median over frames of the lowest ankle/foot joint) stays where it was: a
    shorter person stands on the same floor. ``anchor="root"`` skips that shift.
    """
    if not math.isfinite(height_m) or height_m <= 0:
        raise ValueError(f"target height must be a positive number of metres, got {height_m}")
    if anchor not in ("feet", "root"):
        raise ValueError(f"scale anchor must be 'feet' or 'root', got {anchor!r}")
    current = body_height_m(seq)
    if current <= 0:
        raise ValueError("cannot measure the body height: all joints coincide")
    factor = height_m / current
    joints = seq.joints_mm.astype(np.float64)
    root = joints[:, :1]
    scaled = root + factor * (joints - root)
    if anchor == "feet":
        mask = _sources(seq)

        def ground(j: np.ndarray) -> float:
            return float(np.median(j[mask][:, list(FOOT_JOINTS), 1].max(axis=1)))

        scaled[..., 1] += ground(joints) - ground(scaled)
    return _derive(seq, scaled, seq.valid.copy(), f"scale_to_height({height_m:g}m,{anchor})")


def recenter(seq: JointSequence, target_mm: tuple[float, float, float] | None = None,
             reference: str = "mean") -> JointSequence:
    """Translate the sequence so its pelvis lands on ``target_mm`` (camera frame, mm).

    ``reference="mean"``: the mean pelvis over valid frames is moved there; ``"first"``: the pelvis of
    the first valid frame. Default target: the tokenizer's dataset-mean pelvis (~1.8 m in front of
    the camera, slightly below the optical axis), i.e. where the training data stood. Use
    (0, 0, depth) for the image centre at a given depth.
    """
    if target_mm is None:
        from .stats import load_stats

        target = load_stats()[0][0].astype(np.float64)
    else:
        target = np.asarray(target_mm, dtype=np.float64)
        if target.shape != (3,) or not np.isfinite(target).all():
            raise ValueError(f"re-centre target must be 3 finite numbers (x, y, z mm), got {target_mm!r}")
    if target[2] <= 0:
        raise ValueError(f"re-centre target depth must be in front of the camera (z > 0), got {target[2]:g} mm")
    roots = seq.joints_mm[_sources(seq), 0]
    if reference == "mean":
        source = roots.mean(axis=0)
    elif reference == "first":
        source = roots[0]
    else:
        raise ValueError(f"re-centre reference must be 'mean' or 'first', got {reference!r}")
    joints = seq.joints_mm.astype(np.float64) + (target - source)
    return _derive(seq, joints, seq.valid.copy(), "recenter(" + ",".join(f"{v:g}" for v in target) + f",{reference})")
