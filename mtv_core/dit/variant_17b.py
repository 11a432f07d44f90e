"""MV-DiT-17B in the variant registry: its keys, config, model, loader, Wan VAE, conditioning and defaults.

Loading goes through ``loading_17b`` (hooks ``open_weights`` / ``load``): folders, single files, fp8 and scaled
fp8, a Wan2.1 I2V base + motion adapter (option ``adapter``), fp8 storage (option ``weight_dtype``). The window
is the trained 49 frames (the 17B has no learned tokens that would fix it; upstream uses 49 / overlap 9). The
command line's side models (umT5 text encoder + its tokenizer, CLIP ViT-H/14) are run by
``prepare_conditioning_17b`` before the DiT is loaded, and freed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from ..constants import WINDOW_FRAMES
from .config_17b import motion_block_ids
from .loading_17b import KEY_PREFIXES_17B, config_17b, is_mvdit17b_keys, load_mvdit17b, open_mvdit17b_weights
from .pipeline_17b import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPT,
    DEFAULTS,
    TITLE,
    VARIANT,
    MVDiT17BConditioning,
    output_size_17b,
)
from .transformer_17b import MVDiT17B
from .vae_wan import LATENT_FORMAT_NAME, load_wan_video_vae
from .variants import DiTVariant, register

logger = logging.getLogger(__name__)


def near_miss_17b(keys: set[str]) -> str | None:
    if "head.modulation" in keys and "patch_embedding.weight" in keys and not motion_block_ids(keys):
        return ("is a Wan2.1 transformer without motion attention: load it as the MV-DiT-17B base with its motion "
                "adapter (Load MV-DiT (17B): adapter; command line: --adapter)")
    return None


def conditioning_17b(model: MVDiT17B, guidance: float = DEFAULTS.guidance, **options: Any) -> MVDiT17BConditioning:
    return MVDiT17BConditioning(model, guidance=guidance, **options)


def prepare_conditioning_17b(parts: Mapping[str, Path], *, device: torch.device, dtype: torch.dtype,
                             prompt: str = DEFAULT_PROMPT, negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
                             **_: Any) -> dict[str, Any]:
    """umT5 embeddings of ``prompt`` and ``negative_prompt`` and the CLIP tower, from the command line's parts
    (``text_encoder``, ``tokenizer_folder``, ``clip``). The text encoder is freed before returning; the CLIP tower
    (fp32, as upstream) stays for the later windows' overlap frames."""
    from ..wan.image_encoder import load_clip_vision
    from ..wan.text_encoder import load_umt5, load_umt5_tokenizer

    tokenizer = load_umt5_tokenizer(parts["tokenizer_folder"])  # before gigabytes of weights: a missing file fails fast
    encoder = load_umt5(parts["text_encoder"], dtype=dtype, device=device)
    positive, negative = encoder.encode_prompts(tokenizer, [prompt, negative_prompt or ""])
    del encoder
    logger.info("prompt: %d tokens, negative prompt: %d tokens", positive.shape[0], negative.shape[0])
    clip = load_clip_vision(parts["clip"], dtype=torch.float32, device=device)
    return {"context": positive.cpu(), "negative_context": negative.cpu() if negative_prompt else None, "clip": clip}


VARIANT_17B = register(DiTVariant(
    name=VARIANT,
    title=TITLE,
    signature_keys=("head.modulation", "blocks.0.motion_attn.q.weight"),
    key_prefixes=KEY_PREFIXES_17B,
    config_from_checkpoint=config_17b,
    model_class=MVDiT17B,
    latent_format_name=LATENT_FORMAT_NAME,
    defaults=DEFAULTS,
    window_frames=lambda config: WINDOW_FRAMES,
    conditioning=conditioning_17b,
    load_vae=load_wan_video_vae,
    expected=("MTVCrafter's MV-DiT/Wan-2-1 transformer (folder or single file, bf16 / fp8 / scaled fp8), or a Wan2.1 "
              "I2V-14B base with the motion adapter"),
    near_miss=near_miss_17b,
    model_paths={
        "dit": ("MV-DiT/Wan-2-1",),
        "vae": ("wan2.1/Wan2.1_VAE.pth",),
        "text_encoder": ("wan2.1/models_t5_umt5-xxl-enc-bf16.pth",),
        "tokenizer_folder": ("wan2.1/google/umt5-xxl",),
        "clip": ("wan2.1/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",),
    },
    recognise=is_mvdit17b_keys,
    open_weights=open_mvdit17b_weights,
    load=load_mvdit17b,
    load_options=("adapter", "weight_dtype"),
    prepare_conditioning=prepare_conditioning_17b,
    output_size=output_size_17b,
))
