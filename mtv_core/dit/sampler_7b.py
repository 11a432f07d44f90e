"""MV-DiT-7B denoising: CogVideoX DPM-Solver++ with learned-token motion classifier-free guidance.

The loop itself is ``sampling.sample_loop``; this module supplies the 7B's guidance function and checks.
One step (upstream ``MTVCrafterPipeline7B``): the batch is [unconditional tokens, motion tokens] with the same
noisy latents, reference latents (concatenated on channels) and timestep; the v-prediction is combined as
``v_uncond + guidance * (v_motion - v_uncond)`` in float32 and passed to ``CogVideoXDPMScheduler.step`` with
the previous x0 prediction, the previous timestep and ``generator`` (the scheduler's noise). Guidance 1.0 runs
only the motion half.

Deliberate differences from upstream, none of which the weights depend on: the sample stays in the dtype it
came in (float32 from the pipeline) between steps, where upstream rounds it to bf16 after every step (the
model still sees it in its own dtype); guidance below 1 applies the same formula (towards the unconditional
prediction), where upstream turns guidance off for any value <= 1.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..constants import NUM_JOINTS
from ..progress import ProgressCallback
from .rope import motion_rope_7b, vision_rope_7b
from .sampling import KnownLatents, cfg, sample_loop
from .schedulers import DPMAdapter, SchedulerAdapter, make_dpm_scheduler
from .step_cache import step_caching
from .transformer_7b import MVDiT7B

logger = logging.getLogger(__name__)



def make_scheduler_7b():
    """``CogVideoXDPMScheduler`` with CogVideoX-5B's scheduler configuration (shipped with the pack)."""
    return make_dpm_scheduler().scheduler


def _default_joint_mean() -> np.ndarray:
    from ..motion.stats import load_stats

    return load_stats()[0]


def rope_tables_7b(
    model: MVDiT7B, latent_frames: int, latent_h: int, latent_w: int, joint_mean_mm: np.ndarray | None = None
):
    """(vision_rope, motion_rope) for a latent video of F x h x w (h, w = pixels / 8)."""
    p, head_dim = model.config.patch_size, model.config.attention_head_dim
    mean = _default_joint_mean() if joint_mean_mm is None else joint_mean_mm
    vision = vision_rope_7b(latent_frames, latent_h // p, latent_w // p, head_dim)
    motion = motion_rope_7b(latent_frames, mean, head_dim)
    return vision, motion


class MotionGuidance7B:
    """MV-DiT-7B's guided v-prediction, the ``predict`` function of ``sample_loop``.

    ref_latents (1, F, 16, h, w) raw reference latents, concatenated to the sample on channels;
    motion_tokens (1, F*24, D); guidance != 1 batches [learned unconditional tokens, motion tokens].
    """

    def __init__(self, model: MVDiT7B, ref_latents: torch.Tensor, motion_tokens: torch.Tensor, guidance: float,
                 sample_dtype: torch.dtype, joint_mean_mm: np.ndarray | None = None) -> None:
        batch, frames, _, height, width = ref_latents.shape
        device = model.device
        self.model, self.guidance, self.do_cfg = model, guidance, guidance != 1.0
        # on the model's device and in its dtype once, so that no step copies or casts them again
        self.vision_rope, self.motion_rope = (
            tuple(t.to(device, model.dtype) for t in table)
            for table in rope_tables_7b(model, frames, height, width, joint_mean_mm)
        )
        ref = ref_latents.to(device, sample_dtype)
        motion = motion_tokens.to(device, model.dtype)
        if self.do_cfg:
            # cast where used: the weights (this one included) may be stored elsewhere or in another dtype
            uncond = model.unconditional_motion_token.to(device, model.dtype)[None].expand(batch, -1, -1)
            motion = torch.cat([uncond, motion])
            ref = torch.cat([ref, ref])
        self.ref, self.motion = ref, motion

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
        model_in = torch.cat([sample, sample]) if self.do_cfg else sample
        model_in = torch.cat([model_in, self.ref], dim=2)
        v = self.model(model_in, timestep.expand(model_in.shape[0]).long(), self.motion, self.vision_rope,
                       self.motion_rope).float()
        if self.do_cfg:
            v_uncond, v_motion = v.chunk(2)
            v = cfg(v_uncond, v_motion, self.guidance)
        return v


def check_inputs_7b(model: MVDiT7B, latents: torch.Tensor, ref_latents: torch.Tensor, motion_tokens: torch.Tensor,
                    guidance: float) -> None:
    """ValueError naming what does not fit: shapes, token width, guidance without matching learned tokens."""
    frames = latents.shape[1]
    if ref_latents.shape != latents.shape:
        raise ValueError(f"ref_latents {tuple(ref_latents.shape)} must match latents {tuple(latents.shape)}")
    if motion_tokens.ndim != 3 or motion_tokens.shape[1] != frames * NUM_JOINTS:
        raise ValueError(
            f"motion_tokens {tuple(motion_tokens.shape)} do not match {frames} latent frames "
            f"(expected (batch, {frames * NUM_JOINTS}, {model.config.motion_token_dim}))"
        )
    if motion_tokens.shape[-1] != model.config.motion_token_dim:
        raise ValueError(
            f"motion tokens have {motion_tokens.shape[-1]} channels, the model expects {model.config.motion_token_dim}"
        )
    if guidance != 1.0 and model.unconditional_motion_token.shape[0] != motion_tokens.shape[1]:
        raise ValueError(
            f"motion guidance needs the learned unconditional tokens, which cover "
            f"{model.config.unconditional_latent_frames} latent frames; got {frames}. "
            "Use windows of that length or guidance 1.0"
        )


@torch.no_grad()
def denoise_7b(
    model: MVDiT7B,
    latents: torch.Tensor,
    ref_latents: torch.Tensor,
    motion_tokens: torch.Tensor,
    *,
    num_steps: int = 50,
    guidance: float = 3.0,
    generator: torch.Generator | None = None,
    scheduler=None,
    known_latents: torch.Tensor | None = None,
    known_frames: int = 0,
    callback: ProgressCallback | None = None,
    preview: Callable[[torch.Tensor], np.ndarray | None] | None = None,
    joint_mean_mm: np.ndarray | None = None,
    cache_threshold: float | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` into clean (scaled) VAE latents.

    latents (1, F, 16, h, w): initial noise in the VAE's scaled latent space; ref_latents (1, F, 16, h, w):
    reference-image latents (unscaled, as upstream); motion_tokens (1, F*24, D) 4DMoT tokens. guidance > 1
    runs batched CFG against the model's learned unconditional tokens, which exist for
    ``model.config.unconditional_latent_frames`` latent frames only. ``generator`` feeds the scheduler noise
    (and the re-noising of known frames). ``scheduler``: a ``CogVideoXDPMScheduler`` or a scheduler adapter
    (default: CogVideoX-5B's DPM). ``known_latents`` (1, >=known_frames, 16, h, w): clean latents whose
    first ``known_frames`` frames replace the sample's after every step, noised to the next timestep (the
    clean values after the last step); this carries window overlaps. ``callback(step, total, preview)`` is
    called after each step, ``preview`` being ``preview(x0_prediction)`` when given, else None.
    ``joint_mean_mm`` (24, 3) positions the motion RoPE (default: the packaged dataset mean).
    ``cache_threshold``: optional, lossy first-block step caching (``step_cache``; None / 0: off).
    Returns (1, F, 16, h, w) in ``latents.dtype``.
    """
    check_inputs_7b(model, latents, ref_latents, motion_tokens, guidance)
    frames = latents.shape[1]
    if known_latents is not None and not 0 <= known_frames <= min(frames, known_latents.shape[1]):
        raise ValueError(f"known_frames {known_frames} out of range for {frames} latent frames")
    if scheduler is None:
        scheduler = make_dpm_scheduler()
    elif not isinstance(scheduler, SchedulerAdapter):
        scheduler = DPMAdapter(scheduler)
    predict = MotionGuidance7B(model, ref_latents, motion_tokens, guidance, latents.dtype, joint_mean_mm)
    known = KnownLatents(known_latents, known_frames) if known_latents is not None and known_frames else None
    with step_caching(model, cache_threshold):
        return sample_loop(predict, latents.to(model.device), scheduler, num_steps=num_steps, generator=generator,
                           known=known, callback=callback, preview=preview)
