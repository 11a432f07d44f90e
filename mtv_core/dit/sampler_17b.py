"""MV-DiT-17B denoising: flow-match Euler (shift 5) with text CFG and optional motion guidance.

The loop is ``sampling.sample_loop`` over ``schedulers.FlowMatchAdapter`` (upstream ``infer_17b.py``: diffusers
``FlowMatchEulerDiscreteScheduler``, shift 5, no dynamic shifting, timesteps = 1000 sigma); this module supplies
the 17B's guidance function (``Guidance17B``) and ``denoise_17b``.

Guidance modes (``CFG_MODES``):

- ``text_cfg`` (upstream without LoRA, default): batch [negative prompt, positive prompt], v = v_neg +
  text_guidance (v_pos - v_neg); 50 steps, text guidance 6.0.
- ``distilled`` (upstream with its FusionX distillation LoRA merged): the positive prompt only, no CFG, one
  forward per step; meant for few steps (upstream: 10) with such a LoRA.

Motion guidance (``GuidanceTerm``; off at scale 1, the default) adds the pass without motion attention of
``guidance_17b`` on the steps of its range, in either mode: one more forward per guided step.

Deliberate difference from upstream, which the weights do not depend on: the sample stays float32 between steps
(upstream keeps it in bf16); the model sees it in its own dtype.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..progress import ProgressCallback
from .guidance_17b import guided_velocity_17b
from .sampling import GuidanceTerm, KnownLatents, sample_loop
from .schedulers import FLOW_MATCH_CONFIG, FlowMatchAdapter, SchedulerAdapter, make_flow_match_scheduler
from .transformer_17b import MVDiT17B, RopeTables, pad_text_context

CFG_MODES = ("text_cfg", "distilled")
DISTILLED_STEPS = 10  # upstream's step count with the distillation LoRA
SHIFT = FLOW_MATCH_CONFIG["shift"]


class Guidance17B:
    """MV-DiT-17B's guided velocity, the ``predict`` function of ``sample_loop``.

    y (1, 20, F, h, w), clip_fea (1, tokens, clip_dim), context / negative_context (1, L, text_dim) or (L, text_dim)
    rows (padded to the model's text length once, here), motion_tokens (1, F*24, C), motion_rope float32 tables.
    """

    def __init__(self, model: MVDiT17B, *, y: torch.Tensor, clip_fea: torch.Tensor, context: torch.Tensor,
                 negative_context: torch.Tensor | None, motion_tokens: torch.Tensor, motion_rope: RopeTables,
                 text_guidance: float, motion_guidance: GuidanceTerm | None = None, cfg_mode: str = "text_cfg",
                 batched: bool = True) -> None:
        if cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {', '.join(CFG_MODES)}, got {cfg_mode!r}")
        device, dtype, text_len = model.device, model.dtype, model.config.text_len

        def text(rows: torch.Tensor) -> torch.Tensor:
            return pad_text_context(rows if rows.ndim == 3 else [rows], text_len).to(device, dtype)

        self.model, self.batched = model, batched
        self.text_guidance = text_guidance if cfg_mode == "text_cfg" else 1.0
        self.motion_guidance = motion_guidance
        self.y, self.clip_fea = y.to(device, dtype), clip_fea.to(device, dtype)
        self.context = text(context)
        self.negative = text(negative_context) if negative_context is not None and self.text_guidance > 1.0 else None
        self.motion_tokens = motion_tokens.to(device, dtype)
        self.motion_rope = tuple(t.to(device, torch.float32) for t in motion_rope)

    def forwards_per_step(self, step: int, num_steps: int) -> int:
        """Transformer passes (batch entries) step ``step`` runs: for cost estimates and tests."""
        motion = self.motion_guidance is not None and self.motion_guidance.active(step, num_steps)
        return (2 if self.negative is not None else 1) + int(motion)

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
        motion = self.motion_guidance.scale if (
            self.motion_guidance is not None and self.motion_guidance.active(step, num_steps)) else 1.0
        return guided_velocity_17b(
            self.model, sample, timestep.reshape(-1), self.context, self.negative, self.text_guidance, motion,
            clip_fea=self.clip_fea, y=self.y, motion_tokens=self.motion_tokens, motion_rope=self.motion_rope,
            batched=self.batched,
        )


def check_inputs_17b(model: MVDiT17B, latents: torch.Tensor, y: torch.Tensor, clip_fea: torch.Tensor,
                     context: torch.Tensor, motion_tokens: torch.Tensor) -> None:
    """ValueError naming what does not fit the model: layouts, text and CLIP widths, token counts."""
    config = model.config
    if latents.ndim != 5 or latents.shape[1] != config.out_dim:
        raise ValueError(f"latents {tuple(latents.shape)} must be (1, {config.out_dim}, F, h, w) channel-first")
    if y.shape[1] != config.cond_channels or y.shape[2:] != latents.shape[2:]:
        raise ValueError(f"y {tuple(y.shape)} must be (1, {config.cond_channels}, {', '.join(map(str, latents.shape[2:]))})")
    if context.shape[-1] != config.text_dim:
        raise ValueError(f"text embeddings are {context.shape[-1]} wide, the model takes {config.text_dim} (umT5-XXL): "
                         "encode the prompts with the umT5 text encoder of Wan2.1")
    if clip_fea.shape[-1] != config.clip_dim:
        raise ValueError(f"CLIP image features are {clip_fea.shape[-1]} wide, the model takes {config.clip_dim} "
                         "(the penultimate block of CLIP ViT-H/14, clip_vision_h)")
    frames = latents.shape[2]
    if motion_tokens.ndim != 3 or motion_tokens.shape[1] % frames:
        raise ValueError(f"motion tokens {tuple(motion_tokens.shape)} do not fit {frames} latent frames")


@torch.no_grad()
def denoise_17b(
    model: MVDiT17B,
    latents: torch.Tensor,
    *,
    y: torch.Tensor,
    clip_fea: torch.Tensor,
    context: torch.Tensor,
    negative_context: torch.Tensor | None,
    motion_tokens: torch.Tensor,
    motion_rope: RopeTables,
    num_steps: int = 50,
    text_guidance: float = 6.0,
    motion_guidance: GuidanceTerm | None = None,
    cfg_mode: str = "text_cfg",
    generator: torch.Generator | None = None,
    scheduler: SchedulerAdapter | None = None,
    known_latents: torch.Tensor | None = None,
    known_frames: int = 0,
    batched: bool = True,
    callback: ProgressCallback | None = None,
    preview: Callable[[torch.Tensor], np.ndarray | None] | None = None,
) -> torch.Tensor:
    """Denoise ``latents`` (1, 16, F, h, w) initial noise into clean normalised Wan latents (channel-first).

    ``y`` (1, 20, F, h, w) mask + masked-video latents, ``clip_fea``, ``context`` / ``negative_context`` umT5
    embeddings (L, text_dim) rows, ``motion_tokens`` (1, F*24, C) and ``motion_rope``: see ``Guidance17B``.
    ``known_latents`` (1, 16, >= known_frames, h, w): clean latents whose first ``known_frames`` latent frames
    replace the sample's after every step, re-noised to the next noise level as (1 - sigma) z + sigma e with
    ``generator`` (the clean values after the last step): the carried overlap of long videos. ``scheduler``:
    default flow-match Euler, shift 5. Returns (1, 16, F, h, w) in ``latents.dtype``.
    """
    check_inputs_17b(model, latents, y, clip_fea, context, motion_tokens)
    frames = latents.shape[2]
    if known_latents is not None and not 0 <= known_frames <= min(frames, known_latents.shape[2]):
        raise ValueError(f"known_frames {known_frames} out of range for {frames} latent frames")
    predict = Guidance17B(model, y=y, clip_fea=clip_fea, context=context, negative_context=negative_context,
                          motion_tokens=motion_tokens, motion_rope=motion_rope, text_guidance=text_guidance,
                          motion_guidance=motion_guidance, cfg_mode=cfg_mode, batched=batched)
    scheduler = scheduler if scheduler is not None else make_flow_match_scheduler(SHIFT)
    if not isinstance(scheduler, SchedulerAdapter):
        scheduler = FlowMatchAdapter(scheduler)
    known = KnownLatents(known_latents, known_frames, frame_axis=2) if known_latents is not None and known_frames else None
    return sample_loop(predict, latents.to(model.device), scheduler, num_steps=num_steps, generator=generator,
                       known=known, callback=callback, preview=preview)


def text_rows(embeddings: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """One prompt's umT5 embeddings as (L, text_dim) rows: a (1, L, D) tensor, a list holding one, or rows."""
    if isinstance(embeddings, (list, tuple)):
        if len(embeddings) != 1:
            raise ValueError(f"expected the embeddings of one prompt, got {len(embeddings)}")
        embeddings = embeddings[0]
    if embeddings.ndim == 3:
        if embeddings.shape[0] != 1:
            raise ValueError(f"expected the embeddings of one prompt, got a batch of {embeddings.shape[0]}")
        embeddings = embeddings[0]
    if embeddings.ndim != 2:
        raise ValueError(f"text embeddings must be (tokens, width), got {tuple(embeddings.shape)}")
    return embeddings
