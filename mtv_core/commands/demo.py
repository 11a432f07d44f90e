"""``python -m mtv_core demo``: the pack's end-to-end job on its embedded default.

Steps (each a function, so later stages can be slotted in between):

1. ``make_motion``: a procedural demo motion (no recorded data needed);
2. ``generate_video``: 4DMoT tokens (in the DiT's windows: 49 frames, overlap 9 for the release) -> MV-DiT-7B
   sampling -> CogVideoX VAE decoding, through the same code as ``python -m mtv_core animate``. With released weights configured
   (``--models DIR`` or ``MTV_MODELS_DIR`` in the layout of ``animate``) the real models are used; otherwise
   tiny RANDOM-weight models are written to a temporary folder, and the result (noise-like colours, not a
   person) only shows that the pipeline runs end to end. Motion shorter than one window skips this step.
3. ``save_outputs``: the motion as our ``.npz``, a skeleton preview and the generated video as H.264 mp4.

Outputs in ``--out``: ``demo_<motion>_motion.npz``, ``demo_<motion>_skeleton.mp4`` and
``demo_<motion>_generated.mp4`` (``demo_<motion>_generated_RANDOM_WEIGHTS.mp4`` with the tiny models).
All or nothing: a failure leaves no output behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import WINDOW_FRAMES
from ..errors import log_input_error
from ..motion import MOTIONS, JointSequence, procedural_motion, render_skeleton, save_motion
from ..video import to_uint8, write_mp4

logger = logging.getLogger(__name__)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..dit.variants import get_variant
    from .animate import DEFAULT_VARIANT

    defaults = get_variant(DEFAULT_VARIANT).defaults
    parser = subparsers.add_parser(
        "demo", help="procedural motion -> skeleton video + motion file",
        description="Run the pipeline end to end on its embedded default (a procedural motion) and write "
                    "the motion (.npz) and a skeleton video (.mp4).",
    )
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--motion", choices=MOTIONS, default="dance", help="procedural motion (default: dance)")
    parser.add_argument("--frames", type=_positive_int, default=WINDOW_FRAMES,
                        help=f"number of frames (default: {WINDOW_FRAMES})")
    parser.add_argument("--fps", type=_positive_float, default=20.0, help="frames per second (default: 20)")
    parser.add_argument("--width", type=_positive_int, default=512, help="video width in pixels (default: 512)")
    parser.add_argument("--height", type=_positive_int, default=512, help="video height in pixels (default: 512)")
    parser.add_argument("--line-width", type=_positive_int, default=4, help="skeleton line width (default: 4)")
    parser.add_argument("--point-radius", type=int, default=4, help="joint dot radius, 0 = none (default: 4)")
    parser.add_argument("--models", default=None,
                        help="released weights in the `animate` layout (default: $MTV_MODELS_DIR if it holds them, "
                             "else tiny random-weight models)")
    parser.add_argument("--ref", default=None, help="reference image (default: a drawn stand-in)")
    parser.add_argument("--steps", type=_positive_int, default=defaults.steps,
                        help=f"denoising steps (default: {defaults.steps})")
    parser.add_argument("--guidance", type=float, default=defaults.guidance,
                        help=f"motion guidance (default: {defaults.guidance})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default: {defaults.seed})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    parser.add_argument("--no-generate", action="store_true", help="skip the tokenizer + MV-DiT step")
    parser.set_defaults(func=run_demo)
    return parser


def make_motion(args: argparse.Namespace) -> JointSequence:
    """Step 1: the driving motion (procedural; later versions may load a file instead)."""
    return procedural_motion(args.motion, frames=args.frames, fps=args.fps)


TINY_MAX_SIDE = 96  # generation size cap with the tiny random models (keeps the demo well under a minute on CPU)


@dataclass
class Generated:
    frames: np.ndarray  # (T, H, W, 3) float32 in 0..1
    fps: float
    random_weights: bool


def demo_reference(joints: JointSequence, width: int, height: int) -> np.ndarray:
    """A stand-in reference picture: the first pose drawn over a warm gradient, (H, W, 3) uint8."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    background = (np.array([0.85, 0.55, 0.35], np.float32) * (1 - ys) + np.array([0.25, 0.35, 0.6], np.float32) * ys
                  + 0.1 * xs)
    background = (np.clip(background, 0, 1) * 255).astype(np.uint8)
    first = JointSequence(joints.joints_mm[:1], fps=joints.fps)
    frame = render_skeleton(first, width=width, height=height, background=background, line_width=max(2, width // 64),
                            point_radius=max(2, width // 64))[0]
    return to_uint8(frame)


def _configured_models(args: argparse.Namespace):
    """Released model paths from --models (errors propagate) or $MTV_MODELS_DIR (ignored if incomplete), else None."""
    from .animate import find_models

    if args.models:
        return find_models(args.models)
    env = os.environ.get("MTV_MODELS_DIR")
    if env:
        try:
            return find_models(env)
        except FileNotFoundError as exc:
            logger.info("MTV_MODELS_DIR does not hold the released weights (%s); using tiny random models", exc)
    return None


def _tiny_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, TINY_MAX_SIDE / max(width, height))
    return max(64, round(width * scale / 16) * 16), max(64, round(height * scale / 16) * 16)


def generate_video(args: argparse.Namespace, joints: JointSequence) -> Generated | None:
    """Step 2: tokens -> MV-DiT-7B -> frames (in memory). None when skipped."""
    from ..dit.pipeline_7b import MIN_REFERENCE_SIDE
    from . import animate

    if getattr(args, "no_generate", False):
        return None
    paths = _configured_models(args)
    with tempfile.TemporaryDirectory(prefix="mtv_demo_models_") as tmp:
        if paths is None:
            width, height = _tiny_size(args.width, args.height)
            paths = animate.write_tiny_models(Path(tmp) / "models", seed=args.seed % 2**31)
            random_weights = True
        else:
            width, height = args.width, args.height
            random_weights = False
        window = animate.motion_window(paths.dit, animate.DEFAULT_VARIANT)
        if joints.num_frames < window:
            logger.info("motion has %d frames, shorter than one %d-frame window: skipping the MV-DiT step",
                        joints.num_frames, window)
            return None
        if random_weights:
            logger.warning("no released weights configured (--models or MTV_MODELS_DIR): running the pipeline on "
                           "tiny RANDOM-weight models at %dx%d; the generated video is noise, not an animation",
                           width, height)
        reference = (animate.load_reference(args.ref, min_side=MIN_REFERENCE_SIDE) if args.ref
                     else demo_reference(joints, width, height))
        frames, fps = animate.animate_frames(joints, reference, paths, steps=args.steps, guidance=args.guidance,
                                             seed=args.seed, width=width, height=height, device=args.device,
                                             window=window)
    return Generated(frames.numpy(), fps, random_weights)


def save_outputs(args: argparse.Namespace, joints: JointSequence, stem: str) -> dict[str, Path]:
    """Step 3: motion file + skeleton preview. Everything is rendered before anything is written."""
    frames = render_skeleton(joints, width=args.width, height=args.height, line_width=args.line_width,
                             point_radius=args.point_radius)
    out = Path(args.out)
    video_path = write_mp4(out / f"{stem}_skeleton.mp4", frames, fps=joints.fps)
    try:
        motion_path = save_motion(joints, out / f"{stem}_motion.npz")
    except BaseException:
        video_path.unlink(missing_ok=True)  # all or nothing
        raise
    return {"motion": motion_path, "skeleton_video": video_path}


def save_generated(args: argparse.Namespace, generated: Generated, stem: str) -> Path:
    """Step 3b: the generated video, labelled when it comes from random weights."""
    suffix = "_generated_RANDOM_WEIGHTS" if generated.random_weights else "_generated"
    return write_mp4(Path(args.out) / f"{stem}{suffix}.mp4", generated.frames, fps=generated.fps)


def run_demo(args: argparse.Namespace) -> int:
    """Run every step; returns the process exit code."""
    from ..checkpoint import CheckpointError
    from ..files import check_writable
    from ..limits import MAX_GUIDANCE, check_number

    check_writable(Path(args.out) / f"demo_{args.motion}_generated_RANDOM_WEIGHTS.mp4", "output")
    check_number(args.guidance, "--guidance", 0.0, MAX_GUIDANCE)
    joints = make_motion(args)
    logger.info("motion '%s': %d frames at %g fps", args.motion, joints.num_frames, joints.fps)
    try:
        generated = generate_video(args, joints)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        log_input_error(exc)
        return 2
    stem = f"demo_{args.motion}"
    outputs = save_outputs(args, joints, stem=stem)
    if generated is not None:
        try:
            outputs["generated_video"] = save_generated(args, generated, stem)
        except BaseException:
            for path in outputs.values():  # all or nothing
                path.unlink(missing_ok=True)
            raise
        if generated.random_weights:
            logger.warning("%s comes from tiny RANDOM weights (pipeline check only)", outputs["generated_video"])
    for name, path in outputs.items():
        logger.info("%s: %s", name, path)
    return 0
