"""Guidance of MV-DiT-17B (one denoising step's velocity): text CFG as upstream, optional motion guidance.

Text (upstream ``MTVCrafterPipeline17B``): the CFG batch is [negative prompt, positive prompt] with identical
latents, ``y``, CLIP features and motion tokens in both halves, and v = v_neg + guidance * (v_pos - v_neg) at
guidance 6.0. With guidance <= 1 (or no negative prompt) only the positive half is run (upstream also runs it
alone when its FusionX distillation LoRA is merged).

Motion guidance (this pack's option; upstream has none for the 17B, which has no learned "no motion" token): one
more forward per step with the positive prompt and **motion attention skipped**, v += (scale - 1) * (v_pos -
v_no_motion). Skipping, not zero tokens: motion attention is an ungated residual, and zero tokens still add
``o(norm_k(k.bias) ... v.bias)``, a constant the model never saw; skipped, the blocks compute exactly the
frozen Wan base the motion layers were trained on top of (training froze everything else). That pass cannot
share a batch with the others (it runs other layers), so it costs one more forward (batch 1) per guided step.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from ..memory import dit17b_activation_bytes
from .sampling import guide
from .transformer_17b import MVDiT17B, RopeTables, pad_text_context

logger = logging.getLogger(__name__)

# Share of the free device memory the doubled CFG batch may take under ``batched="auto"``.
CFG_BATCH_MEMORY_SHARE = 0.8


def cfg_batch_fits(model: MVDiT17B, latents: torch.Tensor, batch: int) -> bool:
    """Whether one forward of ``batch`` samples of ``latents``' size fits in the free memory of the model's CUDA
    device (always True elsewhere: host memory is not probed)."""
    device = model.device
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    frames, height, width = latents.shape[2:]
    need = dit17b_activation_bytes(model.config, frames, height, width, batch=batch, dtype=model.dtype)
    return need <= CFG_BATCH_MEMORY_SHARE * free


def text_velocities_17b(
    model: MVDiT17B,
    latents: torch.Tensor,
    timestep: torch.Tensor | float,
    context: torch.Tensor | Sequence[torch.Tensor],
    negative_context: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    clip_fea: torch.Tensor,
    y: torch.Tensor | None,
    motion_tokens: torch.Tensor | None,
    motion_rope: RopeTables | None,
    batched: bool | str = "auto",
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(v_negative or None, v_positive), float32 (B, 16, F, h, w), for ``latents`` at ``timestep``.

    ``context`` / ``negative_context``: (B, L, text_dim) or lists of (L_i, text_dim) umT5 embeddings, any
    lengths <= text_len (zero-padded as Wan does); no negative: positive only. ``batched``: both halves as one
    batch of 2B (upstream), as two calls (False: half the activation memory, same result up to kernel rounding),
    or "auto": batched when the doubled forward fits (``cfg_batch_fits``). ``motion_tokens`` None: without motion
    attention.
    """
    if batched not in (True, False, "auto"):
        raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
    text_len = model.config.text_len
    positive = pad_text_context(context, text_len)
    kwargs = dict(clip_fea=clip_fea, motion_tokens=motion_tokens, motion_rope=motion_rope)
    if negative_context is None:
        return None, model(latents, timestep, positive, y=y, **kwargs).float()
    negative = pad_text_context(negative_context, text_len)
    batch = latents.shape[0]
    positive, negative = (c.expand(batch, -1, -1) if c.shape[0] == 1 else c for c in (positive, negative))
    if batched == "auto":
        batched = cfg_batch_fits(model, latents, 2 * batch)
        if not batched:
            logger.info("text CFG runs its two halves one after the other (the batch of %d would not fit)", 2 * batch)
    if not batched:
        return (model(latents, timestep, negative, y=y, **kwargs).float(),
                model(latents, timestep, positive, y=y, **kwargs).float())

    def doubled(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else torch.cat([t.expand(batch, *t.shape[1:])] * 2)

    timestep = torch.as_tensor(timestep).reshape(-1)
    out = model(
        doubled(latents), doubled(timestep.expand(batch)), torch.cat([negative, positive]),
        clip_fea=doubled(clip_fea), y=doubled(y), motion_tokens=doubled(motion_tokens), motion_rope=motion_rope,
    ).float()
    v_negative, v_positive = out.chunk(2)
    return v_negative, v_positive


def text_cfg_17b(
    model: MVDiT17B,
    latents: torch.Tensor,
    timestep: torch.Tensor | float,
    context: torch.Tensor | Sequence[torch.Tensor],
    negative_context: torch.Tensor | Sequence[torch.Tensor] | None,
    guidance: float,
    *,
    clip_fea: torch.Tensor,
    y: torch.Tensor | None,
    motion_tokens: torch.Tensor,
    motion_rope: RopeTables,
    batched: bool | str = "auto",
) -> torch.Tensor:
    """Upstream's text-guided velocity for ``latents`` (B, 16, F, h, w); returns (B, 16, F, h, w) float32.

    ``batched``: True runs both halves as one batch of 2B (upstream), False as two calls (half the activation
    memory, the same result up to kernel rounding), "auto" (default) batches when the doubled forward fits in the
    device's free memory (``cfg_batch_fits``). Guidance <= 1 or no negative prompt runs the positive half only.
    See ``text_velocities_17b``.
    """
    if guidance <= 1.0:
        negative_context = None
    v_negative, v_positive = text_velocities_17b(
        model, latents, timestep, context, negative_context, clip_fea=clip_fea, y=y, motion_tokens=motion_tokens,
        motion_rope=motion_rope, batched=batched,
    )
    return v_positive if v_negative is None else guide(v_positive, [(v_negative, guidance)])


def guided_velocity_17b(
    model: MVDiT17B,
    latents: torch.Tensor,
    timestep: torch.Tensor | float,
    context: torch.Tensor | Sequence[torch.Tensor],
    negative_context: torch.Tensor | Sequence[torch.Tensor] | None,
    text_guidance: float,
    motion_guidance: float = 1.0,
    *,
    clip_fea: torch.Tensor,
    y: torch.Tensor | None,
    motion_tokens: torch.Tensor,
    motion_rope: RopeTables,
    batched: bool = True,
) -> torch.Tensor:
    """Text CFG (``text_guidance``; no negative context or <= 1: off) plus motion guidance (``motion_guidance``;
    1: off): ``sampling.guide(v_pos, [(v_neg, text), (v_no_motion, motion)])``, float32 (B, 16, F, h, w)."""
    v_negative, v_positive = text_velocities_17b(
        model, latents, timestep, context, negative_context if text_guidance > 1.0 else None, clip_fea=clip_fea,
        y=y, motion_tokens=motion_tokens, motion_rope=motion_rope, batched=batched,
    )
    terms = [] if v_negative is None else [(v_negative, text_guidance)]
    if motion_guidance != 1.0:
        _, v_no_motion = text_velocities_17b(model, latents, timestep, context, None, clip_fea=clip_fea, y=y,
                                             motion_tokens=None, motion_rope=None)
        terms.append((v_no_motion, motion_guidance))
    return guide(v_positive, terms)
