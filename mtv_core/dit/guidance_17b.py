"""Text classifier-free guidance of MV-DiT-17B (one denoising step's velocity).

Upstream (``MTVCrafterPipeline17B``) guides on the text only: the CFG batch is [negative prompt, positive
prompt] with identical latents, ``y``, CLIP features and motion tokens in both halves, and
v = v_neg + guidance * (v_pos - v_neg) at guidance 6.0. MV-DiT-17B has no unconditional motion token, so there
is no motion guidance. With guidance <= 1 only the positive half is run (upstream also runs it alone when its
FusionX LoRA is merged).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from ..memory import dit17b_activation_bytes
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
    """Guided velocity for ``latents`` (B, 16, F, h, w) at ``timestep``; returns (B, 16, F, h, w) float32.

    ``context`` / ``negative_context``: (B, L, text_dim) or lists of (L_i, text_dim) umT5 embeddings, any
    lengths <= text_len (zero-padded as Wan does). ``batched``: True runs both halves as one batch of 2B
    (upstream), False as two calls (half the activation memory; the same result up
    to kernel rounding), "auto" (default) batches when the doubled forward fits in the device's free memory
    (``cfg_batch_fits``).
    """
    if batched not in (True, False, "auto"):
        raise ValueError(f"batched must be True, False or 'auto', got {batched!r}")
    text_len = model.config.text_len
    positive = pad_text_context(context, text_len)
    kwargs = dict(clip_fea=clip_fea, motion_tokens=motion_tokens, motion_rope=motion_rope)
    if guidance <= 1.0 or negative_context is None:
        return model(latents, timestep, positive, y=y, **kwargs).float()
    negative = pad_text_context(negative_context, text_len)
    batch = latents.shape[0]
    positive, negative = (c.expand(batch, -1, -1) if c.shape[0] == 1 else c for c in (positive, negative))
    if batched == "auto":
        batched = cfg_batch_fits(model, latents, 2 * batch)
        if not batched:
            logger.info("text CFG runs its two halves one after the other (the batch of %d would not fit)", 2 * batch)
    if batched:

        def doubled(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else torch.cat([t.expand(batch, *t.shape[1:])] * 2)

        timestep = torch.as_tensor(timestep).reshape(-1)
        out = model(
            doubled(latents), doubled(timestep.expand(batch)), torch.cat([negative, positive]),
            clip_fea=doubled(clip_fea), y=doubled(y), motion_tokens=doubled(motion_tokens), motion_rope=motion_rope,
        ).float()
        v_negative, v_positive = out.chunk(2)
    else:
        v_negative = model(latents, timestep, negative, y=y, **kwargs).float()
        v_positive = model(latents, timestep, positive, y=y, **kwargs).float()
    return v_negative + guidance * (v_positive - v_negative)
