"""Video file output (H.264 mp4 through PyAV)."""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from .files import atomic_output
from .limits import check_fps

logger = logging.getLogger(__name__)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) float in 0..1 or uint8 -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write (T, H, W, 3) RGB frames (uint8, or float 0..1) as an H.264 mp4.

    Odd sizes are padded by one pixel (H.264 with yuv420p needs even sizes). The file is
    written to a temporary name and moved into place, so a failure leaves nothing behind.
    """
    import av

    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    fps = check_fps(fps, path)  # before any encoding: an absurd rate would fail in the encoder
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_output(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    logger.info("wrote %s (%d frames, %.3g fps)", path, frames.shape[0], fps)
    return path


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a video as (T, H, W, 3) uint8 RGB frames and its frame rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 20.0
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"video file {path} has no frames")
    return np.stack(frames), fps
