"""MV-DiT-7B sampling loop: CogVideoX DPM-Solver++ with learned-token motion classifier-free guidance.

One step (upstream ``MTVCrafterPipeline7B``): the batch is [unconditional tokens, motion tokens] with the same
noisy latents, reference latents (concatenated on channels) and timestep; the v-prediction is combined as
``v_uncond + guidance * (v_motion - v_uncond)`` in float32 and passed to ``CogVideoXDPMScheduler.step`` with
the previous x0 prediction, the previous timestep and ``generator`` (the scheduler's noise). Guidance 1.0 runs
only the motion half.

Deliberate differences from upstream, none of which the weights depend on: the sample stays in the dtype it
came in (float32 from ``pipeline_7b``) between steps, where upstream rounds it to bf16 after every step (the
model still sees it in its own dtype); guidance below 1 applies the same formula (towards the unconditional
prediction), where upstream turns guidance off for any value <= 1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..progress import ProgressCallback, report
from .config import NUM_JOINTS
from .rope import motion_rope_7b, vision_rope_7b
from .transformer_7b import MVDiT7B

logger = logging.getLogger(__name__)

SCHEDULER_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cogvideox5b_scheduler.json"


def make_scheduler_7b():
    """``CogVideoXDPMScheduler`` with CogVideoX-5B's scheduler configuration (shipped with the pack)."""
    from diffusers import CogVideoXDPMScheduler

    if not SCHEDULER_CONFIG.is_file():
        raise FileNotFoundError(f"package data file {SCHEDULER_CONFIG} is missing; reinstall the pack")
    config = {k: v for k, v in json.loads(SCHEDULER_CONFIG.read_text()).items() if not k.startswith("_")}
    return CogVideoXDPMScheduler(**config)


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
) -> torch.Tensor:
    """Denoise ``latents`` into clean (scaled) VAE latents.

    latents (1, F, 16, h, w): initial noise in the VAE's scaled latent space; ref_latents (1, F, 16, h, w):
    reference-image latents (unscaled, as upstream); motion_tokens (1, F*24, D) 4DMoT tokens. guidance > 1
    runs batched CFG against the model's learned unconditional tokens, which exist for
    ``model.config.unconditional_latent_frames`` latent frames only. ``generator`` feeds the scheduler noise
    (and the re-noising of known frames). ``known_latents`` (1, >=known_frames, 16, h, w): clean latents whose
    first ``known_frames`` frames replace the sample's after every step, noised to the next timestep (the
    clean values after the last step); this carries window overlaps. ``callback(step, total, preview)`` is
    called after each step, ``preview`` being ``preview(x0_prediction)`` when given, else None.
    ``joint_mean_mm`` (24, 3) positions the motion RoPE (default: the packaged dataset mean).
    Returns (1, F, 16, h, w) in ``latents.dtype``.
    """
    batch, frames, channels, height, width = latents.shape
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
    do_cfg = guidance != 1.0
    if do_cfg and model.unconditional_motion_token.shape[0] != motion_tokens.shape[1]:
        raise ValueError(
            f"motion guidance needs the learned unconditional tokens, which cover "
            f"{model.config.unconditional_latent_frames} latent frames; got {frames}. "
            "Use windows of that length or guidance 1.0"
        )
    if known_latents is not None and not 0 <= known_frames <= min(frames, known_latents.shape[1]):
        raise ValueError(f"known_frames {known_frames} out of range for {frames} latent frames")

    from diffusers.utils.torch_utils import randn_tensor

    scheduler = scheduler if scheduler is not None else make_scheduler_7b()
    device, sample_dtype = model.device, latents.dtype
    scheduler.set_timesteps(num_steps, device=device)
    timesteps = scheduler.timesteps
    # on the model's device and in its dtype once, so that no step copies or casts them again
    vision_rope, motion_rope = (
        tuple(t.to(device, model.dtype) for t in table)
        for table in rope_tables_7b(model, frames, height, width, joint_mean_mm)
    )

    latents = latents.to(device)
    ref = ref_latents.to(device, sample_dtype)
    motion = motion_tokens.to(device, model.dtype)
    if do_cfg:
        # cast where used: the weights (this one included) may be stored elsewhere or in another dtype
        uncond = model.unconditional_motion_token.to(device, model.dtype)[None].expand(batch, -1, -1)
        motion = torch.cat([uncond, motion])
        ref = torch.cat([ref, ref])
    known = known_latents[:, :known_frames].to(device, sample_dtype) if known_latents is not None and known_frames else None

    old_x0 = None
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        model_in = torch.cat([latents, latents]) if do_cfg else latents
        model_in = scheduler.scale_model_input(model_in, t)
        model_in = torch.cat([model_in, ref], dim=2)
        v = model(model_in, t.expand(model_in.shape[0]).long(), motion, vision_rope, motion_rope).float()
        if do_cfg:
            v_uncond, v_motion = v.chunk(2)
            v = v_uncond + guidance * (v_motion - v_uncond)
        latents, old_x0 = scheduler.step(
            v, old_x0, t, timesteps[i - 1] if i > 0 else None, latents, generator=generator, return_dict=False
        )
        latents = latents.to(sample_dtype)
        if known is not None:
            if i + 1 < total:
                noise = randn_tensor(known.shape, generator=generator, device=device, dtype=known.dtype)
                renoised = scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2])
            else:
                renoised = known
            latents = latents.clone()
            latents[:, :known_frames] = renoised.to(sample_dtype)
        report(callback, i + 1, total, preview(old_x0) if preview is not None else None)
    return latents
