"""MV-DiT-17B's part of the windowed pipeline (upstream ``infer_17b.py`` + ``MTVCrafterPipeline17B``).

The windows, the carried overlap, frame assembly and seeds are ``pipeline.sample_video``'s; this module supplies
``MVDiT17BConditioning``:

- Size: upstream picks the 512-area aspect bucket nearest to the reference (``wan.buckets``); width = height = 0
  does the same here (``output_size_17b``), other values are used as given (multiples of 16).
- Reference: cover-resized and centre-cropped to the size (as the 7B; upstream stretched it to the bucket, which
  has nearly the reference's aspect).
- Window 0: ``y`` = 4 mask channels (1 on latent frame 0) + the latents of [reference, zeros ...], CLIP features of
  the reference after upstream's truncating uint8 conversion (``wan.conditioning.first_window_conditioning``).
- Window k > 0: ``y`` from the previous window's last ``overlap`` frames (mask 1 on their latent frames,
  ``next_window_conditioning``); CLIP features of the last overlap frame (upstream's default) or of the reference
  (``window_clip="reference"``); the overlap's latents (``y``'s first latent frames, what upstream pins) are
  held after every step, re-noised with the seeded scheduler generator (upstream draws that noise unseeded).
- Text: umT5 embeddings of the prompt and the negative prompt (each trimmed to its tokens, as upstream), guidance
  as ``sampler_17b`` says (text CFG 6.0, or the distilled mode; optional motion guidance).

Shapes: latents (1, 16, F, H/8, W/8) channel-first with F = 13 for 49 frames; frames (T, H, W, 3) in 0..1.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

import numpy as np
import torch

from ..motion.stats import load_stats
from ..progress import ProgressCallback
from ..tokenizer.tokens import MotionTokens
from ..wan.buckets import nearest_bucket_512
from ..wan.conditioning import first_window_conditioning, next_window_conditioning
from .latents import MTVLatent
from .pipeline import Carried, WindowConditioning, decode_video, sample_video
from .reference import image_array, prepare_reference
from .rope_17b import motion_rope_17b
from .sampler_17b import CFG_MODES, denoise_17b, text_rows
from .sampling import GuidanceTerm, SamplingDefaults
from .transformer_17b import MVDiT17B
from .vae_wan import LATENT_FORMAT_NAME
from .video_vae import VideoVAE

logger = logging.getLogger(__name__)

VARIANT = "17b"
TITLE = "MV-DiT-17B"
DEFAULTS = SamplingDefaults(steps=50, guidance=6.0, seed=42)  # upstream infer_17b.py without its LoRA
DEFAULT_PROMPT = "The character is dancing."
DEFAULT_NEGATIVE_PROMPT = "bad hands, extra limbs, fused fingers, blurry, low quality"
WINDOW_CLIP = ("last_overlap_frame", "reference")


class ClipImageEncoder(Protocol):
    """What the 17B needs of a CLIP vision tower: (B, 3, H, W) pixels in [-1, 1] -> (B, tokens, width) features
    of the penultimate block (``wan.image_encoder.ClipVisionEncoder``, or an adapter over ComfyUI's)."""

    def encode(self, pixels_pm1: torch.Tensor) -> torch.Tensor: ...


class FixedFeatures:
    """A ``ClipImageEncoder`` that returns features computed elsewhere (ComfyUI's CLIPVisionEncode of the
    reference), whatever the pixels."""

    def __init__(self, features: torch.Tensor) -> None:
        self.features = features if features.ndim == 3 else features[None]

    def encode(self, pixels_pm1: torch.Tensor) -> torch.Tensor:
        return self.features.float()


class _NormalizedEncoder:
    """The ``encode`` the Wan conditioning functions call: pixels -> normalised latents (posterior mode)."""

    def __init__(self, vae: VideoVAE) -> None:
        self.vae = vae

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode_normalized(pixels, sample=False)


def output_size_17b(reference: Any, width: int = 0, height: int = 0) -> tuple[int, int]:
    """(width, height): as given, or with width or height 0 upstream's 512-area bucket nearest the reference's
    aspect (``wan.buckets.nearest_bucket_512``)."""
    if width and height:
        return int(width), int(height)
    ref = image_array(reference)  # the shape only: nothing is converted
    bucket_h, bucket_w = nearest_bucket_512(int(ref.shape[0]), int(ref.shape[1]))
    logger.info("reference %dx%d -> aspect bucket %dx%d", ref.shape[1], ref.shape[0], bucket_w, bucket_h)
    return bucket_w, bucket_h


class MVDiT17BConditioning(WindowConditioning):
    """MV-DiT-17B's conditioning (``y``, CLIP features, text) and guided denoiser for ``sample_video``.

    ``clip``: the CLIP tower (for the reference and, with ``window_clip="last_overlap_frame"``, each later
    window's last overlap frame); ``reference_clip``: the reference's features computed elsewhere (ComfyUI's
    CLIPVisionEncode), used for window 0 instead of ``clip``. ``context`` / ``negative_context``: one prompt's
    umT5 embeddings each, (L, text_dim) rows (or (1, L, D); ComfyUI's padded conditioning converted by
    ``umt5_rows``). ``motion_guidance`` 1 = off; it applies on the steps with ``start <= step / steps < end``.
    """

    variant = VARIANT
    title = TITLE
    latent_format_name = LATENT_FORMAT_NAME

    def __init__(self, model: MVDiT17B, *, context: torch.Tensor, negative_context: torch.Tensor | None = None,
                 clip: ClipImageEncoder | None = None, reference_clip: torch.Tensor | None = None,
                 guidance: float = DEFAULTS.guidance, cfg_mode: str = "text_cfg", motion_guidance: float = 1.0,
                 motion_guidance_start: float = 0.0, motion_guidance_end: float = 1.0,
                 window_clip: str = "last_overlap_frame", batched_cfg: bool = True,
                 joint_mean_mm: np.ndarray | None = None) -> None:
        if not isinstance(model, MVDiT17B):
            from .variants import variant_of

            found = variant_of(model)
            raise ValueError(f"the model is {found.title if found else type(model).__name__}, not {TITLE}: use the "
                             "sampler of that model")
        if cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {', '.join(CFG_MODES)}, got {cfg_mode!r}")
        if window_clip not in WINDOW_CLIP:
            raise ValueError(f"window_clip must be one of {', '.join(WINDOW_CLIP)}, got {window_clip!r}")
        if guidance < 0:
            raise ValueError(f"text guidance must be >= 0, got {guidance}")
        if clip is None and reference_clip is None:
            raise ValueError("MV-DiT-17B needs CLIP image features of the reference: a CLIP vision model or its output")
        config = model.config
        self.context = text_rows(context)
        self.negative_context = None if negative_context is None else text_rows(negative_context)
        for name, rows in (("prompt", self.context), ("negative prompt", self.negative_context)):
            if rows is not None and rows.shape[-1] != config.text_dim:
                raise ValueError(f"the {name}'s text embeddings are {rows.shape[-1]} wide, but {TITLE} takes "
                                 f"{config.text_dim}: use the umT5-XXL text encoder of Wan2.1 (CLIPLoader type 'wan')")
        if reference_clip is not None and reference_clip.shape[-1] != config.clip_dim:
            raise ValueError(f"the CLIP vision output is {reference_clip.shape[-1]} wide, but {TITLE} takes "
                             f"{config.clip_dim}: use CLIP ViT-H/14 (clip_vision_h)")
        self.model, self.clip, self.reference_clip = model, clip, reference_clip
        self.guidance, self.cfg_mode, self.window_clip, self.batched_cfg = guidance, cfg_mode, window_clip, batched_cfg
        self.motion_guidance = None if motion_guidance == 1.0 else GuidanceTerm(
            motion_guidance, motion_guidance_start, motion_guidance_end)
        self.joint_mean_mm = load_stats()[0] if joint_mean_mm is None else joint_mean_mm
        self.vae: VideoVAE | None = None
        self.y0: torch.Tensor | None = None
        self.clip0: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    def check_motion(self, motion: MotionTokens) -> None:
        config = self.model.config
        for window in motion.windows:
            width = window.tokens.shape[-1]
            if width > config.dim or (config.motion_token_dim is not None and width != config.motion_token_dim):
                expected = config.motion_token_dim or f"at most {config.dim}"
                raise ValueError(f"motion tokens are {width}-dimensional but the {TITLE} expects {expected}: the motion "
                                 "was encoded with a tokenizer that does not belong to this model")
        if len(motion.windows) > 1 and self.window_clip == "last_overlap_frame" and self.clip is None:
            raise ValueError("window_clip 'last_overlap_frame' encodes each later window's last overlap frame and "
                             "needs a CLIP vision model (connect clip_vision), or choose window_clip 'reference'")

    def reference_frames(self, image: Any, width: int, height: int) -> torch.Tensor:
        return prepare_reference(image, width, height)

    def prepare(self, vae: VideoVAE, reference: torch.Tensor, window_frames: int, generator: torch.Generator) -> None:
        self.vae = vae
        clip = FixedFeatures(self.reference_clip) if self.reference_clip is not None else self.clip
        ref_pm1 = reference.permute(2, 0, 1) * 2.0 - 1.0
        cond = first_window_conditioning(_NormalizedEncoder(vae), clip, ref_pm1, window_frames)
        self.y0, self.clip0 = cond.y, cond.clip_fea

    def denoise_window(self, index: int, noise: torch.Tensor, motion_tokens: torch.Tensor, carried: Carried | None,
                       *, num_steps: int, generator: torch.Generator, callback: ProgressCallback | None,
                       preview: Callable[[torch.Tensor], np.ndarray | None] | None) -> torch.Tensor:
        latent_frames = noise.shape[2]
        known = None
        if carried is None:
            y, clip_fea = self.y0, self.clip0
        else:
            num_frames = self.vae.latent_format.temporal_compression * (latent_frames - 1) + 1
            clip = self.clip if self.window_clip == "last_overlap_frame" else FixedFeatures(self.clip0)
            previous = carried.frames.permute(3, 0, 1, 2)[None]  # (1, 3, overlap, H, W) in 0..1
            cond = next_window_conditioning(_NormalizedEncoder(self.vae), clip, previous, num_frames)
            y, clip_fea = cond.y, cond.clip_fea
            known = y[:, 4:, : carried.latent_frames]  # the overlap's latents, as upstream pins them
        motion_rope = motion_rope_17b(latent_frames, self.joint_mean_mm, self.model.config.head_dim)
        return denoise_17b(
            self.model, noise, y=y, clip_fea=clip_fea, context=self.context, negative_context=self.negative_context,
            motion_tokens=motion_tokens, motion_rope=motion_rope, num_steps=num_steps, text_guidance=self.guidance,
            motion_guidance=self.motion_guidance, cfg_mode=self.cfg_mode, generator=generator,
            known_latents=known, known_frames=0 if known is None else known.shape[2], batched=self.batched_cfg,
            callback=callback, preview=preview,
        )


def umt5_rows(cond: torch.Tensor, text_len: int = 512) -> torch.Tensor:
    """A padded umT5 conditioning (1, L, D) -> the prompt's own rows (L_i, D), as upstream trims them.

    ComfyUI's Wan text encoder pads every prompt to 512 tokens and zeroes the padded rows (attention mask,
    ``zero_out_masked``); the trailing all-zero rows are dropped here (the model pads them back, so the result is
    the same). Prompts longer than ``text_len`` tokens are cut to it with a warning, as upstream's tokenizer does.
    """
    rows = text_rows(cond).float()
    nonzero = rows.abs().amax(dim=-1) > 0
    length = int(nonzero.nonzero().max().item()) + 1 if bool(nonzero.any()) else 1
    if length > text_len:
        logger.warning("the prompt has %d tokens; MV-DiT-17B reads the first %d (as upstream)", length, text_len)
        length = text_len
    return rows[:length]


def sample_17b(model: MVDiT17B, vae: VideoVAE, reference: Any, motion: MotionTokens, *, width: int = 0,
               height: int = 0, num_steps: int = DEFAULTS.steps, seed: int = DEFAULTS.seed,
               callback: ProgressCallback | None = None, preview: bool = False, keep_frames: bool = False,
               **conditioning: Any) -> MTVLatent:
    """Sample every window of ``motion`` with MV-DiT-17B (``pipeline.sample_video``); returns the ``MTVLatent``.

    ``width`` / ``height`` 0: the aspect bucket of the reference. ``conditioning``: ``MVDiT17BConditioning``'s
    arguments (``context``, ``negative_context``, ``clip`` or ``reference_clip``, ``guidance``, ``cfg_mode``,
    ``motion_guidance`` ...).
    """
    width, height = output_size_17b(reference, width, height)
    return sample_video(MVDiT17BConditioning(model, **conditioning), vae, reference, motion, width=width,
                        height=height, num_steps=num_steps, seed=seed, callback=callback, preview=preview,
                        keep_frames=keep_frames)


def decode_17b(vae: VideoVAE, sampled: MTVLatent, callback: ProgressCallback | None = None) -> torch.Tensor:
    """Decode MV-DiT-17B latents from ``sample_17b`` -> (num_frames, H, W, 3) float32 in 0..1."""
    return decode_video(vae, sampled, callback, variant=VARIANT)
