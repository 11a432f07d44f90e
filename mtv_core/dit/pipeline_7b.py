"""MV-DiT-7B pipeline: reference image + motion tokens -> video frames, any length.

Steps (upstream ``MTVCrafterPipeline7B`` plus long-video windows):

1. Size: width/height are rounded to multiples of 16 (the VAE's 8x and the patch's 2x), with a warning.
2. Reference: the image is resized to *cover* the target size (aspect kept, bilinear, antialiased)
   and centre-cropped to it, repeated over the window's frames, mapped to [-1, 1] and encoded by the
   VAE (posterior sample from a generator seeded with ``seed + 1``). The reference latents are
   **not** multiplied by the scaling factor 0.7 (upstream quirk the released weights depend on).
   They are the same for every window.
3. Windows: one ``TokenWindow`` per window of the motion's ``WindowPlan`` (49 frames, overlap >= 9).
   Window 0 is denoised from noise (``torch.Generator().manual_seed(seed)``, drawn window after
   window). For window k > 0 the previous window's last ``overlap`` decoded frames are re-encoded
   (posterior mode, times 0.7 since the noisy latents live in scaled space) into
   ``(overlap - 1) // 4 + 1`` latent frames, which ``denoise_7b`` holds fixed: after every
   scheduler step they replace the sample's first latent frames, re-noised to the next timestep,
   and exactly the clean values after the last step (latent inpainting of the overlap, as
   upstream's 17B long-video mode). The scheduler's own noise uses ``seed + 2``.
4. Output: frames ``start_k .. start_k + 48`` come from window k, later windows overriding the
   overlap; i.e. the previous windows' frames up to the overlap, then the new window.
   Latents are decoded after dividing by 0.7.

Shapes: latents (1, F, 16, H/8, W/8) with F = 13 for 49 frames; frames (T, H, W, 3) float32 in 0..1.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..limits import MAX_GUIDANCE, MAX_IMAGE_PIXELS, MAX_STEPS, check_limit, check_number
from ..progress import ProgressCallback, report
from ..tokenizer.tokens import MotionTokens
from .vae import LATENT_CHANNELS, SPATIAL_COMPRESSION, VideoVAE, latent_frames

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16
MIN_SIDE = 64
MAX_SIDE = 4096
MIN_REFERENCE_SIDE = 64
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 3.0
DEFAULT_SEED = 6666
VARIANT = "7b"


def snap_size(width: int, height: int) -> tuple[int, int]:
    """Round a target size to multiples of 16 (nearest, at least 64); warns when it changes."""
    for name, value in (("width", width), ("height", height)):
        check_number(value, f"{name} (pixels)", MIN_SIDE, MAX_SIDE)
    snapped = tuple(max(MIN_SIDE, int(v / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE) for v in (width, height))
    if snapped != (width, height):
        logger.warning("size %dx%d is not a multiple of %d; using %dx%d", width, height, SIZE_MULTIPLE, *snapped)
    return snapped  # type: ignore[return-value]


# full-scale value of each integer pixel type (16-bit images keep their range instead of clipping to white)
_PIXEL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.bool_): 1.0}


def _image_array(image: Any) -> np.ndarray | torch.Tensor:
    """(H, W), (H, W, 1|3|4) or (1, H, W, C) image -> (H, W, C) in its own dtype (first image of a batch)."""
    array = image if isinstance(image, (torch.Tensor, np.ndarray)) else np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            logger.warning("reference batch has %d images; using the first", array.shape[0])
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"reference image must be (H, W, 3) RGB, got shape {tuple(array.shape)}")
    return array


def _to_unit_float(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(h, w, C) pixels -> (h, w, 3) float32 in 0..1: integers scaled by their type's full range (8 or 16 bit),
    floats taken as 0..1; alpha dropped, grey expanded. NaN / inf pixels are an error (they make black videos)."""
    tensor = pixels if isinstance(pixels, torch.Tensor) else None
    if tensor is None:
        dtype = pixels.dtype
        if dtype.kind == "f":
            tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        elif dtype in _PIXEL_SCALE:
            tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / _PIXEL_SCALE[dtype])
        else:
            raise InputError(f"reference image pixels must be 8- or 16-bit integers or floats, got {dtype}")
    elif tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype == torch.bool:
        tensor = tensor.float()
    elif not tensor.is_floating_point():
        raise InputError(f"reference image pixels must be uint8 or floating point, got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise InputError("reference image contains NaN or infinite pixel values")
    if tensor.shape[-1] == 1:
        tensor = tensor.expand(-1, -1, 3)
    return tensor[..., :3].clamp(0.0, 1.0)


def prepare_reference(image: Any, width: int, height: int) -> torch.Tensor:
    """Cover-resize and centre-crop a reference image to (height, width, 3) float32 in 0..1.

    The image is scaled (aspect kept, bilinear with antialiasing as upstream's torchvision resize) until it
    covers the target, then the centre is cut out, so nothing is distorted; a reference whose aspect differs
    from the target loses its edges. The centre region is cut from the source *first* (to the nearest source
    pixel) and only it is converted and resized, so the cost never exceeds the source plus the output (a thin
    64 x 100000 image does not become a 512 x 800000 one). (Upstream instead resized the reference to the
    driving video's aspect, distorting it when the two differ.)
    Raises InputError for images smaller than 64 px on a side, over ``MAX_IMAGE_PIXELS``, or with NaN pixels.
    """
    ref = _image_array(image)
    src_h, src_w = int(ref.shape[0]), int(ref.shape[1])
    if min(src_h, src_w) < MIN_REFERENCE_SIDE:
        raise InputError(
            f"reference image is {src_w}x{src_h} pixels; it must be at least {MIN_REFERENCE_SIDE} px on each side"
        )
    check_limit(src_h * src_w, MAX_IMAGE_PIXELS, "the number of reference image pixels", "reference image")
    scale = max(width / src_w, height / src_h)
    crop_w = min(src_w, max(1, round(width / scale)))
    crop_h = min(src_h, max(1, round(height / scale)))
    if scale > 4:
        logger.warning("reference image %dx%d is upscaled %.1fx to cover %dx%d", src_w, src_h, scale, width, height)
    kept = (crop_w * crop_h) / (src_w * src_h)
    if kept < 0.5:
        logger.warning("reference aspect differs from %dx%d: centre crop keeps %.0f%% of the image", width, height,
                       100 * kept)
    top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
    chw = _to_unit_float(ref[top : top + crop_h, left : left + crop_w]).permute(2, 0, 1)[None]
    if (crop_h, crop_w) != (height, width):
        chw = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return chw[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def frames_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) in 0..1 -> (1, 3, T, H, W) in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).contiguous()


def pixels_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) float32 in 0..1 on CPU."""
    return (pixels[0].permute(1, 2, 3, 0).float().cpu() * 0.5 + 0.5).clamp(0.0, 1.0)


def encode_reference(
    vae: VideoVAE, reference: torch.Tensor, num_frames: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reference (H, W, 3) in 0..1 repeated over ``num_frames`` -> (1, F, 16, H/8, W/8) UNSCALED latents."""
    frames = reference[None].expand(num_frames, -1, -1, -1)
    return vae.encode(frames_to_pixels(frames), generator=generator, sample=True)


def decode_latents(vae: VideoVAE, latents: torch.Tensor) -> torch.Tensor:
    """Scaled (1, F, 16, h, w) sampler latents -> (T, H, W, 3) float32 frames in 0..1 (divides by 0.7)."""
    return pixels_to_frames(vae.decode(latents / vae.scaling_factor))


def latent_preview(latents: torch.Tensor, frame: int | None = None) -> np.ndarray:
    """A cheap false-colour view of one (middle by default) latent frame of (1, F, 16, h, w) latents:
    channels 0..2 each min-max normalised -> (h, w, 3) float32 in 0..1."""
    lat = latents.detach()[0]
    lat = lat[lat.shape[0] // 2 if frame is None else frame, :3].float().cpu()
    low = lat.amin(dim=(1, 2), keepdim=True)
    high = lat.amax(dim=(1, 2), keepdim=True)
    rgb = (lat - low) / (high - low).clamp_min(1e-6)
    return rgb.permute(1, 2, 0).numpy()


def _model_info(model: Any) -> tuple[torch.device, int | None, int | None]:
    """(device, motion token dim, latent frames of the unconditional tokens) of a loaded MV-DiT-7B."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    config = getattr(model, "config", None)
    token_dim = getattr(config, "motion_token_dim", None)
    uncond_frames = getattr(config, "unconditional_latent_frames", None)
    return torch.device(device), token_dim, uncond_frames


def _check_motion(motion: MotionTokens, token_dim: int | None) -> None:
    if not getattr(motion, "windows", None):  # duck-typed: the pack may be imported under two names
        raise ValueError("motion must be MotionTokens with at least one window (encode the motion first)")
    for window in motion.windows:
        if (window.num_frames - 1) % 4:
            raise ValueError(f"motion window of {window.num_frames} frames is not on the 4k+1 frame grid")
        if window.latent_frames != latent_frames(window.num_frames):
            raise ValueError(
                f"motion window at frame {window.start} has {window.latent_frames} token frames for "
                f"{window.num_frames} video frames (expected {latent_frames(window.num_frames)})"
            )
        if token_dim is not None and window.tokens.shape[-1] != token_dim:
            raise ValueError(
                f"motion tokens are {window.tokens.shape[-1]}-dimensional but the MV-DiT-7B expects {token_dim}: "
                "the motion was encoded with a tokenizer that does not belong to this model"
            )
    if motion.plan is not None:
        if tuple(w.start for w in motion.windows) != tuple(motion.plan.starts):
            raise ValueError("motion windows do not match their window plan")
        for window in motion.windows:
            if window.num_frames != motion.plan.window:
                raise ValueError(f"motion window has {window.num_frames} frames, plan says {motion.plan.window}")
    elif len(motion.windows) > 1:
        raise ValueError("motion with several windows needs a window plan")


def _window_layout(motion: MotionTokens) -> tuple[list[int], int, int]:
    """(window starts, frames per window, total frames)."""
    if motion.plan is not None:
        return list(motion.plan.starts), motion.plan.window, motion.plan.used_frames
    window = motion.windows[0]
    return [0], window.num_frames, window.num_frames


def limit_windows(motion: MotionTokens, max_windows: int) -> MotionTokens:
    """The first ``max_windows`` windows of ``motion`` (0 = all): a shorter video from the same motion."""
    if max_windows <= 0 or max_windows >= len(motion.windows) or motion.plan is None:
        return motion
    from ..windows import WindowPlan

    starts = motion.plan.starts[:max_windows]
    plan = WindowPlan(starts=starts, window=motion.plan.window, used_frames=starts[-1] + motion.plan.window)
    return type(motion)(windows=motion.windows[:max_windows], joints=motion.joints, plan=plan, meta=dict(motion.meta))


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


def sample_7b(
    model: Any,
    vae: VideoVAE,
    reference: Any,
    motion: MotionTokens,
    *,
    width: int = 512,
    height: int = 512,
    num_steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int = DEFAULT_SEED,
    callback: ProgressCallback | None = None,
    preview: bool = False,
    keep_frames: bool = False,
    denoise: Callable[..., torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Sample every window of ``motion``; returns the ``MTV_LATENT`` dict.

    Keys: ``samples`` (windows, F, 16, h, w) scaled latents on CPU (float32), ``starts``, ``window``,
    ``num_frames`` (total output frames), ``fps``, ``width``, ``height``, ``scaling_factor``, ``variant``,
    and with ``keep_frames`` also ``frames`` (num_frames, H, W, 3) float32 in 0..1 (decoded once).
    ``callback(step, windows * num_steps, preview_or_None)`` is called after every denoising step.
    ``denoise`` replaces ``sampler_7b.denoise_7b`` (tests).
    """
    if denoise is None:
        from .sampler_7b import denoise_7b as denoise
    num_steps = int(check_number(num_steps, "steps", 1, MAX_STEPS, integer=True))
    guidance = check_number(guidance, "motion guidance", 0.0, MAX_GUIDANCE)
    device, token_dim, uncond_frames = _model_info(model)
    _check_motion(motion, token_dim)
    width, height = snap_size(width, height)
    starts, window_frames, total_frames = _window_layout(motion)
    num_latent = latent_frames(window_frames)
    if uncond_frames is not None and num_latent != uncond_frames and guidance != 1.0:
        logger.warning(
            "the learned unconditional motion tokens cover %d latent frames, the motion window has %d: "
            "motion guidance is disabled (1.0) for this run; use 49-frame windows to keep it",
            uncond_frames, num_latent,
        )
        guidance = 1.0

    ref_frames = prepare_reference(reference, width, height)
    vae_gen = torch.Generator().manual_seed(seed + 1)
    noise_gen = torch.Generator().manual_seed(seed)
    sched_gen = torch.Generator().manual_seed(seed + 2)
    ref_latents = encode_reference(vae, ref_frames, window_frames, vae_gen).to(device)
    latent_shape = (1, num_latent, LATENT_CHANNELS, height // SPATIAL_COMPRESSION, width // SPATIAL_COMPRESSION)

    total_steps = len(motion.windows) * num_steps
    samples: list[torch.Tensor] = []
    assembler = FrameAssembler(starts, total_frames) if keep_frames else None
    for k, window in enumerate(motion.windows):
        def step_callback(step: int, _total: int, step_preview: np.ndarray | None = None, _k: int = k) -> None:
            report(callback, _k * num_steps + step, total_steps, step_preview)

        noise = torch.randn(latent_shape, generator=noise_gen, dtype=torch.float32).to(device)
        known, known_frames = None, 0
        if k > 0:
            overlap = motion.plan.overlap_before(k)  # several windows always come with a plan
            prev_frames = decode_latents(vae, samples[-1])
            if assembler is not None:  # only the frames before this window's start reach the output
                assembler.add(prev_frames)
            known_frames = latent_frames(overlap)
            known = vae.encode(frames_to_pixels(prev_frames[-overlap:]), sample=False) * vae.scaling_factor
            del prev_frames
            logger.info("window %d/%d: frames %d-%d, carrying %d overlap frames (%d latent frames)",
                        k + 1, len(motion.windows), starts[k], starts[k] + window_frames - 1, overlap, known_frames)
        else:
            logger.info("window 1/%d: frames 0-%d", len(motion.windows), window_frames - 1)
        latents = denoise(
            model, noise, ref_latents, window.tokens.to(device),
            num_steps=num_steps, guidance=guidance, generator=sched_gen,
            known_latents=known, known_frames=known_frames, callback=step_callback,
            preview=latent_preview if preview else None,
        )
        samples.append(latents.detach().float().cpu())

    result: dict[str, Any] = {
        "samples": torch.cat(samples),
        "starts": tuple(starts),
        "window": window_frames,
        "num_frames": total_frames,
        "fps": float(motion.fps),
        "width": width,
        "height": height,
        "scaling_factor": vae.scaling_factor,
        "variant": VARIANT,
        "seed": seed,
    }
    if assembler is not None:
        assembler.add(decode_latents(vae, samples[-1]))
        result["frames"] = assembler.result()
    return result


def decode_7b(vae: VideoVAE, sampled: dict[str, Any], callback: ProgressCallback | None = None) -> torch.Tensor:
    """Decode an ``MTV_LATENT`` dict from ``sample_7b`` -> (num_frames, H, W, 3) float32 in 0..1."""
    if not isinstance(sampled, dict) or "samples" not in sampled:
        raise ValueError("expected the latent dict produced by the MTV 7B sampler")
    if sampled.get("variant", VARIANT) != VARIANT:
        raise ValueError(f"latents come from the {sampled['variant']} variant, not MV-DiT-7B")
    if "frames" in sampled:
        return sampled["frames"]
    samples = sampled["samples"]
    assembler = FrameAssembler(sampled["starts"], int(sampled["num_frames"]))
    for k in range(samples.shape[0]):
        assembler.add(decode_latents(vae, samples[k : k + 1]))
        report(callback, k + 1, samples.shape[0])
    return assembler.result()


def animate_7b(model: Any, vae: VideoVAE, reference: Any, motion: MotionTokens, **kwargs: Any) -> tuple[torch.Tensor, float]:
    """Reference + motion tokens -> ((T, H, W, 3) float32 frames in 0..1, fps). See ``sample_7b``."""
    sampled = sample_7b(model, vae, reference, motion, keep_frames=True, **kwargs)
    return sampled["frames"], sampled["fps"]
