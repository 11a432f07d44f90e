"""MV-DiT-7B's part of the windowed pipeline: its reference conditioning and guidance (upstream ``MTVCrafterPipeline7B``).

The windows, the carried overlap, frame assembly and seeds are ``pipeline.sample_video``'s; this module
supplies ``MVDiT7BConditioning``:

- Reference: the image is resized to *cover* the target size (aspect kept, bilinear, antialiased) and
  centre-cropped to it, repeated over the window's frames, mapped to [-1, 1] and encoded by the VAE
  (posterior sample from the pipeline's conditioning generator, ``seed + 1``). The reference latents are
  **not** multiplied by the scaling factor 0.7 (upstream quirk the released weights depend on). They are the
  same for every window and are concatenated to the noisy latents on channels.
- Guidance: learned-unconditional-token motion CFG with CogVideoX DPM (``sampler_7b.denoise_7b``); the
  carried overlap of window k > 0 is held fixed by latent inpainting. The learned tokens cover
  ``config.unconditional_latent_frames`` latent frames (13 = 49 frames in the release): windows of another
  length run without guidance, with a warning.

Shapes: latents (1, F, 16, H/8, W/8) with F = 13 for 49 frames; frames (T, H, W, 3) float32 in 0..1.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..limits import MAX_GUIDANCE, MAX_IMAGE_PIXELS, check_limit, check_number
from ..progress import ProgressCallback
from ..tokenizer.tokens import MotionTokens
from .latents import MTVLatent
from .pipeline import Carried, WindowConditioning, decode_video, sample_video
from .sampling import SamplingDefaults
from .transformer_7b import MVDiT7B
from .vae import LATENT_FORMAT_NAME
from .video_vae import VideoVAE, frames_to_pixels

logger = logging.getLogger(__name__)

MIN_REFERENCE_SIDE = 64
VARIANT = "7b"
TITLE = "MV-DiT-7B"
DEFAULTS = SamplingDefaults(steps=50, guidance=3.0, seed=6666)  # upstream infer_7b.py


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


def encode_reference(
    vae: VideoVAE, reference: torch.Tensor, num_frames: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Reference (H, W, 3) in 0..1 repeated over ``num_frames`` -> (1, F, 16, H/8, W/8) UNSCALED latents."""
    frames = reference[None].expand(num_frames, -1, -1, -1)
    return vae.encode(frames_to_pixels(frames), generator=generator, sample=True)


class MVDiT7BConditioning(WindowConditioning):
    """MV-DiT-7B's conditioning (unscaled reference latents on channels) and guided denoiser for ``sample_video``.

    ``denoise`` replaces ``sampler_7b.denoise_7b`` (tests).
    """

    variant = VARIANT
    title = TITLE
    latent_format_name = LATENT_FORMAT_NAME

    def __init__(self, model: MVDiT7B, guidance: float = DEFAULTS.guidance,
                 denoise: Callable[..., torch.Tensor] | None = None) -> None:
        guidance = check_number(guidance, "motion guidance", 0.0, MAX_GUIDANCE)  # a number first, whatever else
        if not isinstance(model, MVDiT7B):
            from .variants import variant_of

            found = variant_of(model)
            raise ValueError(f"the model is {found.title if found else type(model).__name__}, not {TITLE}: "
                             f"use the sampler of that model")
        if denoise is None:
            from .sampler_7b import denoise_7b as denoise
        self.model, self.guidance, self.denoise = model, guidance, denoise
        self.ref_latents: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_motion(self, motion: MotionTokens) -> None:
        config = self.model.config
        for window in motion.windows:
            if window.tokens.shape[-1] != config.motion_token_dim:
                raise ValueError(
                    f"motion tokens are {window.tokens.shape[-1]}-dimensional but the {TITLE} expects "
                    f"{config.motion_token_dim}: the motion was encoded with a tokenizer that does not belong to this model"
                )
        num_latent = motion.windows[0].latent_frames
        if num_latent != config.unconditional_latent_frames and self.guidance != 1.0:
            logger.warning(
                "the learned unconditional motion tokens cover %d latent frames, the motion window has %d: "
                "motion guidance is disabled (1.0) for this run; use %d-frame windows to keep it",
                config.unconditional_latent_frames, num_latent, config.window_frames,
            )
            self.guidance = 1.0

    def reference_frames(self, image: Any, width: int, height: int) -> torch.Tensor:
        return prepare_reference(image, width, height)

    def prepare(self, vae: VideoVAE, reference: torch.Tensor, window_frames: int, generator: torch.Generator) -> None:
        self.ref_latents = encode_reference(vae, reference, window_frames, generator).to(self.device)

    def denoise_window(self, index: int, noise: torch.Tensor, motion_tokens: torch.Tensor, carried: Carried | None,
                       *, num_steps: int, generator: torch.Generator, callback: ProgressCallback | None,
                       preview: Callable[[torch.Tensor], np.ndarray | None] | None) -> torch.Tensor:
        return self.denoise(
            self.model, noise, self.ref_latents, motion_tokens, num_steps=num_steps, guidance=self.guidance,
            generator=generator, known_latents=carried.latents if carried is not None else None,
            known_frames=carried.latent_frames if carried is not None else 0, callback=callback, preview=preview,
        )


def sample_7b(
    model: MVDiT7B,
    vae: VideoVAE,
    reference: Any,
    motion: MotionTokens,
    *,
    width: int = 512,
    height: int = 512,
    num_steps: int = DEFAULTS.steps,
    guidance: float = DEFAULTS.guidance,
    seed: int = DEFAULTS.seed,
    callback: ProgressCallback | None = None,
    preview: bool = False,
    keep_frames: bool = False,
    denoise: Callable[..., torch.Tensor] | None = None,
) -> MTVLatent:
    """Sample every window of ``motion`` with MV-DiT-7B (``pipeline.sample_video``); returns the ``MTVLatent``.

    ``callback(step, windows * num_steps, preview_or_None)`` is called after every denoising step; with
    ``keep_frames`` the result also holds the decoded frames. ``denoise`` replaces ``sampler_7b.denoise_7b``.
    """
    return sample_video(
        MVDiT7BConditioning(model, guidance, denoise), vae, reference, motion, width=width, height=height,
        num_steps=num_steps, seed=seed, callback=callback, preview=preview, keep_frames=keep_frames,
    )


def decode_7b(vae: VideoVAE, sampled: MTVLatent, callback: ProgressCallback | None = None) -> torch.Tensor:
    """Decode MV-DiT-7B latents from ``sample_7b`` -> (num_frames, H, W, 3) float32 in 0..1."""
    return decode_video(vae, sampled, callback, variant=VARIANT)


def animate_7b(model: MVDiT7B, vae: VideoVAE, reference: Any, motion: MotionTokens,
               **kwargs: Any) -> tuple[torch.Tensor, float]:
    """Reference + motion tokens -> ((T, H, W, 3) float32 frames in 0..1, fps). See ``sample_7b``."""
    sampled = sample_7b(model, vae, reference, motion, keep_frames=True, **kwargs)
    return sampled.frames, sampled.fps
