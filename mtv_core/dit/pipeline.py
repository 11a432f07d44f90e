"""The windowed video pipeline of the MV-DiTs: reference image + motion tokens -> latents of any length.

What every variant shares lives here; a variant supplies only a ``WindowConditioning`` (its conditioning and
its guided denoiser, e.g. ``pipeline_7b.MVDiT7BConditioning``) and the VAE it works with.

1. Size: width/height are rounded to multiples of 16 (the VAEs' 8x and the patch's 2x), with a warning.
2. Reference: the variant prepares the reference frame (``reference_frames``) and its conditioning from it
   (``prepare``, with a generator seeded ``seed + 1``).
3. Windows: one per window of the motion's ``WindowPlan``. Each is denoised from noise drawn from
   ``torch.Generator().manual_seed(seed)`` window after window; the scheduler's noise uses ``seed + 2``.
   For window k > 0 the previous window is decoded and its last ``overlap`` frames are re-encoded (posterior
   mode, normalised) into ``(overlap - 1) // 4 + 1`` latent frames: the ``Carried`` overlap, which the
   variant holds fixed while sampling (latent inpainting, ``sampling.KnownLatents``) and may also use as
   conditioning (the 17B encodes it into ``y``).
4. Output: frames ``start_k ..`` come from window k up to where window k + 1 starts, then the last window
   entirely. The result is an ``MTVLatent``; with ``keep_frames`` it also carries the joined frames, since
   every window but the last is decoded anyway.

Layouts: latents as ``vae.latent_format`` says; frames (T, H, W, 3) float32 in 0..1.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..limits import MAX_STEPS, check_number
from ..progress import ProgressCallback, report
from ..tokenizer.tokens import MotionTokens
from ..windows import WindowPlan
from .latents import LatentFormat, MTVLatent
from .video_vae import VideoVAE, frames_to_pixels

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16
MIN_SIDE = 64
MAX_SIDE = 4096


def snap_size(width: int, height: int) -> tuple[int, int]:
    """Round a target size to multiples of 16 (nearest, at least 64); warns when it changes."""
    for name, value in (("width", width), ("height", height)):
        check_number(value, f"{name} (pixels)", MIN_SIDE, MAX_SIDE)
    snapped = tuple(max(MIN_SIDE, int(v / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE) for v in (width, height))
    if snapped != (width, height):
        logger.warning("size %dx%d is not a multiple of %d; using %dx%d", width, height, SIZE_MULTIPLE, *snapped)
    return snapped  # type: ignore[return-value]


def latent_preview(latents: torch.Tensor, frame: int | None = None, frame_axis: int = 1) -> np.ndarray:
    """A cheap false-colour view of one (middle by default) latent frame of (1, F, C, h, w) latents (or
    (1, C, F, h, w) with ``frame_axis=2``): channels 0..2 each min-max normalised -> (h, w, 3) float32 in 0..1."""
    lat = latents.detach()[0]
    if frame_axis == 2:
        lat = lat.transpose(0, 1)
    lat = lat[lat.shape[0] // 2 if frame is None else frame, :3].float().cpu()
    low = lat.amin(dim=(1, 2), keepdim=True)
    high = lat.amax(dim=(1, 2), keepdim=True)
    rgb = (lat - low) / (high - low).clamp_min(1e-6)
    return rgb.permute(1, 2, 0).numpy()


def check_motion(motion: MotionTokens, latent_format: LatentFormat) -> None:
    """ValueError unless ``motion`` is windows on the VAEs' frame grid that agree with their plan."""
    if not isinstance(motion, MotionTokens) or not motion.windows:
        raise ValueError("motion must be MotionTokens with at least one window (encode the motion first)")
    grid = latent_format.temporal_compression
    for window in motion.windows:
        if (window.num_frames - 1) % grid:
            raise ValueError(f"motion window of {window.num_frames} frames is not on the {grid}k+1 frame grid")
        expected = latent_format.latent_frames(window.num_frames)
        if window.latent_frames != expected:
            raise ValueError(f"motion window at frame {window.start} has {window.latent_frames} token frames for "
                             f"{window.num_frames} video frames (expected {expected})")
    if motion.plan is not None:
        if tuple(w.start for w in motion.windows) != tuple(motion.plan.starts):
            raise ValueError("motion windows do not match their window plan")
        for window in motion.windows:
            if window.num_frames != motion.plan.window:
                raise ValueError(f"motion window has {window.num_frames} frames, plan says {motion.plan.window}")
    elif len(motion.windows) > 1:
        raise ValueError("motion with several windows needs a window plan")


def window_layout(motion: MotionTokens) -> tuple[list[int], int, int]:
    """(window starts, frames per window, total frames)."""
    if motion.plan is not None:
        return list(motion.plan.starts), motion.plan.window, motion.plan.used_frames
    window = motion.windows[0]
    return [0], window.num_frames, window.num_frames


def limit_windows(motion: MotionTokens, max_windows: int) -> MotionTokens:
    """The first ``max_windows`` windows of ``motion`` (0 = all): a shorter video from the same motion."""
    if max_windows <= 0 or max_windows >= len(motion.windows) or motion.plan is None:
        return motion
    starts = motion.plan.starts[:max_windows]
    plan = WindowPlan(starts=starts, window=motion.plan.window, used_frames=starts[-1] + motion.plan.window)
    return MotionTokens(windows=motion.windows[:max_windows], joints=motion.joints, plan=plan, meta=dict(motion.meta))


class FrameAssembler:
    """Joins decoded windows, in order, into one (total, H, W, 3) float32 video.

    Window k provides frames ``starts[k] .. starts[k + 1] - 1`` (later windows override the overlap), the last
    window all of its frames, which must end at ``total``. Each window is copied into a preallocated output as
    it comes, so no more than the output and one decoded window are held.
    """

    def __init__(self, starts: list[int] | tuple[int, ...], total: int) -> None:
        self.starts, self.total = list(starts), total
        self.frames: torch.Tensor | None = None
        self.added = 0

    def add(self, frames: torch.Tensor) -> None:
        """Place the next decoded window (window_frames, H, W, 3) float32 in 0..1."""
        k = self.added
        last = k + 1 == len(self.starts)
        count = self.total - self.starts[k] if last else self.starts[k + 1] - self.starts[k]
        if frames.shape[0] < count or (last and frames.shape[0] != count):
            raise RuntimeError(f"window {k} has {frames.shape[0]} frames; frame {self.starts[k]} + "
                               f"{frames.shape[0]} does not fit {self.total} output frames")
        if self.frames is None:
            self.frames = torch.empty((self.total, *frames.shape[1:]), dtype=torch.float32)
        self.frames[self.starts[k] : self.starts[k] + count] = frames[:count]
        self.added += 1

    def result(self) -> torch.Tensor:
        """The joined (total, H, W, 3) frames, once every window has been added."""
        if self.frames is None or self.added != len(self.starts):
            raise RuntimeError(f"{self.added} of {len(self.starts)} windows decoded")
        return self.frames


@dataclass
class Carried:
    """The previous window's last frames, which window k > 0 continues from."""

    frames: torch.Tensor  # (overlap, H, W, 3) float32 in 0..1, decoded
    latent_frames: int  # (overlap - 1) // 4 + 1
    vae: VideoVAE = field(repr=False)

    @functools.cached_property
    def latents(self) -> torch.Tensor:
        """The frames' latents in the DiT's (normalised) space, posterior mode, the VAE's layout: encoded on first
        use (the 7B pins them; the 17B encodes its whole window itself and never asks)."""
        return self.vae.encode_normalized(frames_to_pixels(self.frames), sample=False)


class WindowConditioning(ABC):
    """What a DiT variant supplies to ``sample_video``: its conditioning and its guided denoiser.

    ``variant`` and ``title`` name it (registry name and display name); ``latent_format_name`` names the VAE
    latent format (``LatentFormat.name``) the model works in.
    """

    variant: str
    title: str
    latent_format_name: str

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model runs (noise and tokens are moved there)."""

    def check_motion(self, motion: MotionTokens) -> None:
        """Raise ValueError for motion tokens the model cannot take (called before any work)."""

    @abstractmethod
    def reference_frames(self, image: Any, width: int, height: int) -> torch.Tensor:
        """The reference image as the model wants it: (height, width, 3) float32 in 0..1."""

    @abstractmethod
    def prepare(self, vae: VideoVAE, reference: torch.Tensor, window_frames: int, generator: torch.Generator) -> None:
        """Conditioning shared by every window (called once per video, before the first window)."""

    @abstractmethod
    def denoise_window(
        self,
        index: int,
        noise: torch.Tensor,
        motion_tokens: torch.Tensor,
        carried: Carried | None,
        *,
        num_steps: int,
        generator: torch.Generator,
        callback: ProgressCallback | None,
        preview: Callable[[torch.Tensor], np.ndarray | None] | None,
    ) -> torch.Tensor:
        """Denoise window ``index`` from ``noise`` (the latent shape of one window, on ``device``) with its
        ``motion_tokens`` (1, F*24, D); ``carried`` is None for the first window. Returns clean latents in the
        DiT's space. ``generator`` feeds the scheduler; ``callback``/``preview`` as in ``sampling.sample_loop``."""


def sample_video(
    conditioning: WindowConditioning,
    vae: VideoVAE,
    reference: Any,
    motion: MotionTokens,
    *,
    width: int,
    height: int,
    num_steps: int,
    seed: int,
    callback: ProgressCallback | None = None,
    preview: bool = False,
    keep_frames: bool = False,
) -> MTVLatent:
    """Sample every window of ``motion`` with ``conditioning``'s model; see the module docstring.

    ``callback(step, windows * num_steps, preview_or_None)`` is called after every denoising step (raise to
    cancel); with ``preview`` it gets a false-colour view of the current prediction.
    """
    num_steps = int(check_number(num_steps, "steps", 1, MAX_STEPS, integer=True))
    fmt = vae.latent_format
    if fmt.name != conditioning.latent_format_name:
        raise ValueError(f"{conditioning.title} works with {conditioning.latent_format_name} latents, but the VAE given "
                         f"({vae.source or type(vae).__name__}) makes {fmt.describe()}: use the VAE of {conditioning.title}")
    check_motion(motion, fmt)
    conditioning.check_motion(motion)
    width, height = snap_size(width, height)
    starts, window_frames, total_frames = window_layout(motion)
    device = conditioning.device

    noise_gen = torch.Generator().manual_seed(seed)
    conditioning_gen = torch.Generator().manual_seed(seed + 1)
    scheduler_gen = torch.Generator().manual_seed(seed + 2)
    conditioning.prepare(vae, conditioning.reference_frames(reference, width, height), window_frames, conditioning_gen)
    latent_shape = fmt.latent_shape(window_frames, height, width)
    show = (lambda x0: latent_preview(x0, frame_axis=fmt.frame_axis)) if preview else None

    total_steps = len(motion.windows) * num_steps
    samples: list[torch.Tensor] = []
    assembler = FrameAssembler(starts, total_frames) if keep_frames else None
    for k, window in enumerate(motion.windows):
        def step_callback(step: int, _total: int, step_preview: np.ndarray | None = None, _k: int = k) -> None:
            report(callback, _k * num_steps + step, total_steps, step_preview)

        noise = torch.randn(latent_shape, generator=noise_gen, dtype=torch.float32).to(device)
        carried = None
        if k > 0:
            overlap = motion.plan.overlap_before(k)  # several windows always come with a plan
            previous = vae.decode_frames(samples[-1])
            if assembler is not None:  # only the frames before this window's start reach the output
                assembler.add(previous)
            frames = previous[-overlap:].clone()
            del previous
            carried = Carried(frames, fmt.latent_frames(overlap), vae)
            logger.info("window %d/%d: frames %d-%d, carrying %d overlap frames (%d latent frames)",
                        k + 1, len(motion.windows), starts[k], starts[k] + window_frames - 1, overlap,
                        carried.latent_frames)
        else:
            logger.info("window 1/%d: frames 0-%d", len(motion.windows), window_frames - 1)
        latents = conditioning.denoise_window(
            k, noise, window.tokens.to(device), carried, num_steps=num_steps, generator=scheduler_gen,
            callback=step_callback, preview=show,
        )
        samples.append(latents.detach().float().cpu())

    result = MTVLatent(
        variant=conditioning.variant, latent_format=fmt, samples=torch.cat(samples), starts=tuple(starts),
        window=window_frames, num_frames=total_frames, fps=float(motion.fps), width=width, height=height, seed=seed,
    )
    if assembler is not None:
        assembler.add(vae.decode_frames(samples[-1]))
        result.frames, result.decoded_by = assembler.result(), vae.identity()
    return result


def decode_video(vae: VideoVAE, latent: MTVLatent, callback: ProgressCallback | None = None,
                 variant: str | None = None) -> torch.Tensor:
    """Decode a sampler's ``MTVLatent`` -> (num_frames, H, W, 3) float32 in 0..1.

    The frames the sampler already decoded are returned when ``vae`` is the VAE that decoded them. ``variant``,
    when given, is the variant the caller expects the latents from. ValueError names both sides when the
    latents come from another variant or do not fit the VAE's latent format.
    """
    from .variants import variant_title

    if not isinstance(latent, MTVLatent):
        raise ValueError(f"expected the latents of an MTV sampler (MTV_LATENT), got {type(latent).__name__}")
    made_by = variant_title(latent.variant)
    if variant is not None and latent.variant != variant:
        raise ValueError(f"these latents come from {made_by}, not {variant_title(variant)}: decode them with the "
                         f"{made_by} decoder and its VAE")
    if latent.latent_format != vae.latent_format:
        raise ValueError(f"these latents are {made_by}'s {latent.latent_format.describe()}, but the VAE given "
                         f"({vae.source or type(vae).__name__}) decodes {vae.latent_format.describe()}: use the VAE "
                         "the sampler used")
    windows = latent.samples.shape[0]
    if latent.decoded_with(vae):
        report(callback, windows, windows)
        return latent.frames
    assembler = FrameAssembler(latent.starts, latent.num_frames)
    for k in range(windows):
        assembler.add(vae.decode_frames(latent.samples[k : k + 1]))
        report(callback, k + 1, windows)
    return assembler.result()
