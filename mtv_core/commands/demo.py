"""``python -m mtv_core demo``: the pack's end-to-end job on its embedded default.

Steps (each a function, so later stages can be slotted in between):

1. ``make_motion``: a procedural demo motion (no recorded data needed);
2. ``save_outputs``: the motion as our ``.npz`` and a skeleton preview as H.264 mp4.

Outputs in ``--out``: ``demo_<motion>_motion.npz`` and ``demo_<motion>_skeleton.mp4``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..motion import MOTIONS, JointSequence, procedural_motion, render_skeleton, save_motion
from ..video import write_mp4

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
    parser = subparsers.add_parser(
        "demo", help="procedural motion -> skeleton video + motion file",
        description="Run the pipeline end to end on its embedded default (a procedural motion) and write "
                    "the motion (.npz) and a skeleton video (.mp4).",
    )
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--motion", choices=MOTIONS, default="dance", help="procedural motion (default: dance)")
    parser.add_argument("--frames", type=_positive_int, default=49, help="number of frames (default: 49)")
    parser.add_argument("--fps", type=_positive_float, default=20.0, help="frames per second (default: 20)")
    parser.add_argument("--width", type=_positive_int, default=512, help="video width in pixels (default: 512)")
    parser.add_argument("--height", type=_positive_int, default=512, help="video height in pixels (default: 512)")
    parser.add_argument("--line-width", type=_positive_int, default=4, help="skeleton line width (default: 4)")
    parser.add_argument("--point-radius", type=int, default=4, help="joint dot radius, 0 = none (default: 4)")
    parser.set_defaults(func=run_demo)
    return parser


def make_motion(args: argparse.Namespace) -> JointSequence:
    """Step 1: the driving motion (procedural; later versions may load a file instead)."""
    return procedural_motion(args.motion, frames=args.frames, fps=args.fps)


def save_outputs(args: argparse.Namespace, joints: JointSequence, stem: str) -> dict[str, Path]:
    """Step 2: motion file + skeleton preview. Everything is rendered before anything is written."""
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


def run_demo(args: argparse.Namespace) -> int:
    """Run every step; returns the process exit code."""
    joints = make_motion(args)
    logger.info("motion '%s': %d frames at %g fps", args.motion, joints.num_frames, joints.fps)
    outputs = save_outputs(args, joints, stem=f"demo_{args.motion}")
    for name, path in outputs.items():
        logger.info("%s: %s", name, path)
    return 0
