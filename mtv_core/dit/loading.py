"""Loading MV-DiT-7B checkpoints without ever holding a float32 copy of low-precision weights.

Accepted: the released diffusers folder (``MV-DiT/CogVideoX/``: ``config.json`` + sharded safetensors with
an index) and single safetensors files (ComfyUI ``models/diffusion_models``; keys may carry a
``model.diffusion_model.`` or ``transformer.`` prefix). The model is built on the meta device and every
tensor is read from the memory-mapped file straight into the requested dtype on the requested device, so
peak host memory is about the size of the weights in that dtype.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..attention import check_backend
from ..checkpoint import CheckpointError, load_into, open_checkpoint, strip_key_prefix
from .config import MVDiT7BConfig
from .transformer_7b import MVDiT7B

logger = logging.getLogger(__name__)

DTYPES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
    "fp32": torch.float32, "float32": torch.float32,
}
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.", "module.")


def resolve_dtype(dtype: torch.dtype | str, device: torch.device | str | None = None) -> torch.dtype:
    """A torch dtype or its name (``bf16``, ``float16``, ...); ``auto``: bf16 on CUDA (fp16 where the GPU has
    no bf16), else fp32."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use bfloat16, float16 or float32")
        return dtype
    if dtype == "auto":
        if device is not None and torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_variant(keys, path: Path) -> None:
    """Raise a CheckpointError naming what ``keys`` look like when they are not an MV-DiT-7B state dict."""
    keys = set(keys)
    if "unconditional_motion_token" in keys and "transformer_blocks.0.attn0.to_q.weight" in keys:
        return
    if any(k.startswith("blocks.") for k in keys) and "patch_embedding.weight" in keys:
        kind = "has Wan key names: it looks like MV-DiT-17B (or a Wan2.1 model); load it with the 17B loader"
    elif any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        kind = ("has encoder/decoder keys: it looks like the 4DMoT motion tokenizer or a VAE, "
                "not the MV-DiT-7B transformer")
    elif "patch_embed.proj.weight" in keys:
        kind = ("is a CogVideoX transformer without motion attention (no attn0 / unconditional_motion_token): "
                "use the MTVCrafter MV-DiT/CogVideoX weights, not the stock CogVideoX-5B transformer")
    else:
        kind = "has none of the MV-DiT-7B keys"
    raise CheckpointError(f"{path}: not an MV-DiT-7B checkpoint; it {kind}")


def config_for(ckpt) -> MVDiT7BConfig:
    """Config from the folder's config.json when present, else inferred from the tensor shapes.

    A config.json is trusted only where the weights agree with it (layer count, widths, ...), checked before
    any model is built from it.
    """
    try:
        inferred = MVDiT7BConfig.infer_from_shapes(ckpt.shapes())
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}: {exc}") from exc
    if ckpt.config is None:
        return inferred
    try:
        config = MVDiT7BConfig.from_diffusers_config(ckpt.config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}/config.json: {exc}") from exc
    disagreements = config.disagreements(inferred)
    if disagreements:
        raise CheckpointError(f"{ckpt.path}/config.json does not match the weights: {'; '.join(disagreements)}")
    return config


def load_mvdit7b(
    path: str | Path,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
    attention: str = "auto",
) -> MVDiT7B:
    """Load MV-DiT-7B from a diffusers folder or a single safetensors file, in ``dtype`` on ``device``."""
    dtype = resolve_dtype(dtype, device)
    check_backend(attention)  # before reading gigabytes of weights
    ckpt = strip_key_prefix(open_checkpoint(path), KEY_PREFIXES)
    check_variant(ckpt.keys(), ckpt.path)
    config = config_for(ckpt)
    with torch.device("meta"):
        model = MVDiT7B(config)
    load_into(
        model, ckpt, dtype=dtype, device=device, what="MV-DiT-7B",
        hint="expected the MTVCrafter MV-DiT/CogVideoX transformer (diffusers folder or single safetensors)",
    )
    model.set_attention_backend(attention)
    model.eval().requires_grad_(False)
    logger.info(
        "loaded MV-DiT-7B from %s: %d layers, %d heads, %s on %s, attention %s",
        path, config.num_layers, config.num_attention_heads, dtype, device, attention,
    )
    return model
