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

from ..limits import MAX_GUIDANCE, check_number
from ..progress import ProgressCallback
from ..tokenizer.tokens import MotionTokens
from .latents import MTVLatent
from .pipeline import Carried, WindowConditioning, decode_video, sample_video
from .reference import MIN_REFERENCE_SIDE, prepare_reference  # noqa: F401 (re-exported)
from .sampling import SamplingDefaults
from .transformer_7b import MVDiT7B
from .vae import LATENT_FORMAT_NAME
from .video_vae import VideoVAE, frames_to_pixels

logger = logging.getLogger(__name__)

VARIANT = "7b"
TITLE = "MV-DiT-7B"
DEFAULTS = SamplingDefaults(steps=50, guidance=3.0, seed=6666)  # upstream infer_7b.py


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
