"""Tiny MV-DiT-17B checkpoints with the real key names, for tests and integration checks.

The tiny model has the structure of the release (Wan I2V blocks, motion attention in blocks 0 and 4, 36 -> 16
channels, 257 CLIP tokens of 1280) at width 256 = 2 heads x 128, 5 layers, ffn 512, text width 64 (or 4096) and
192-wide motion tokens: the configuration of the reference cases in ``../shared/reference/mvdit17b``. Files can
be written as the released folder (Wan ``config.json`` + shards + index), single files with a ComfyUI prefix,
plain or scaled fp8, or split into a Wan base and a motion adapter.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..tokenizer.testing import random_weights
from .config_17b import ADAPTER_KEY, MVDiT17BConfig
from .fp8_ops import quantize_fp8
from .tiny import save_weights
from .transformer_17b import MVDiT17B



def tiny_mvdit17b_config(text_dim: int = 64, **overrides) -> MVDiT17BConfig:
    """The reference cases' tiny configuration (width 256 = 2 x 128, 5 layers, motion tokens 192 wide)."""
    values = dict(dim=256, ffn_dim=512, num_heads=2, num_layers=5, text_dim=text_dim, motion_token_dim=192)
    values.update(overrides)
    return MVDiT17BConfig(**values)


def tiny_tokenizer_config_for_17b(config: MVDiT17BConfig | None = None):
    """The tiny 4DMoT configuration whose motion tokens fit ``tiny_mvdit17b_config`` (code size = token width)."""
    from ..tokenizer.testing import TINY_CONFIG

    config = config or tiny_mvdit17b_config()
    return dataclasses.replace(TINY_CONFIG, code_dim=config.motion_token_dim or config.dim)


def random_state_dict_17b(config: MVDiT17BConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights of a healthy scale (``tokenizer.testing.random_weights``), float32."""
    with torch.device("meta"):
        model = MVDiT17B(config)
    return random_weights(model, seed)


def split_adapter(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(Wan base without motion layers, motion adapter with ``blocks.N.motion_attn.*`` / ``blocks.N.norm4.*``)."""
    adapter = {k: v for k, v in state_dict.items() if ADAPTER_KEY.match(k)}
    return {k: v for k, v in state_dict.items() if k not in adapter}, adapter


def to_fp8(
    state_dict: dict[str, torch.Tensor], scaled: bool = True, fp8_dtype: torch.dtype = torch.float8_e4m3fn
) -> dict[str, torch.Tensor]:
    """The block Linear weights (2-D ``blocks.*.weight``) in fp8 as ComfyUI / kijai files store them.

    ``scaled``: per-tensor ``<layer>.scale_weight`` float32 scalars and a ``scaled_fp8`` marker tensor;
    otherwise a plain cast (scale 1). Other tensors are left as they are.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.startswith("blocks.") and key.endswith(".weight") and tensor.ndim == 2:
            if scaled:
                out[key], out[key[: -len("weight")] + "scale_weight"] = quantize_fp8(tensor, fp8_dtype)
            else:
                out[key] = tensor.to(fp8_dtype)
        else:
            out[key] = tensor
    if scaled:
        out["scaled_fp8"] = torch.empty(0, dtype=fp8_dtype)
    return out


def save_mvdit17b(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    config: MVDiT17BConfig | None = None,
    as_folder: bool = False,
    dtype: torch.dtype | None = None,
    prefix: str = "",
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a state dict as one safetensors file, or as a Wan folder (``config.json`` + shards + index).

    ``dtype`` converts the non-fp8 floating tensors; ``prefix`` is prepended to every key (e.g.
    ``model.diffusion_model.``).
    """

    def convert(t: torch.Tensor) -> torch.Tensor:
        keep = dtype is None or not t.is_floating_point() or t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        return (t if keep else t.to(dtype)).contiguous()

    tensors = {prefix + k: convert(v) for k, v in state_dict.items()}
    config_json = config.to_wan_config() if config is not None and as_folder else None
    return save_weights(tensors, path, config_json, as_folder, max_shard_bytes)


def write_tiny_mvdit17b(
    path: str | Path,
    seed: int = 0,
    *,
    config: MVDiT17BConfig | None = None,
    as_folder: bool = False,
    dtype: torch.dtype = torch.float32,
    fp8: str | None = None,
    prefix: str = "",
    part: str = "full",
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a tiny random MV-DiT-17B checkpoint with the real key names.

    ``fp8``: None, "plain" or "scaled" (block Linear weights in fp8 e4m3fn, the rest in ``dtype``);
    ``part``: "full", "base" (the Wan transformer without motion layers) or "adapter" (motion layers only).
    """
    config = config or tiny_mvdit17b_config()
    state = {k: v.to(dtype) for k, v in random_state_dict_17b(config, seed).items()}
    if part != "full":
        base, adapter = split_adapter(state)
        state = {"base": base, "adapter": adapter}[part]
    if fp8 is not None:
        if fp8 not in ("plain", "scaled"):
            raise ValueError(f"fp8 must be None, 'plain' or 'scaled', got {fp8!r}")
        state = to_fp8(state, scaled=fp8 == "scaled")
    return save_mvdit17b(state, path, config, as_folder=as_folder, prefix=prefix, max_shard_bytes=max_shard_bytes)


def tiny_lora_17b(config: MVDiT17BConfig | None = None, seed: int = 0, rank: int = 4) -> dict[str, torch.Tensor]:
    """A small Wan LoRA (``diffusion_model.`` keys, lora_down/up + alpha) on a self-attention query, a
    cross-attention output and an FFN layer of the motion blocks (0 and the last one) of ``config``."""
    config = config or tiny_mvdit17b_config()
    g = torch.Generator().manual_seed(seed)
    first, last = config.motion_blocks[0], config.motion_blocks[-1]
    targets = {f"blocks.{first}.self_attn.q": (config.dim, config.dim),
               f"blocks.{last}.cross_attn.o": (config.dim, config.dim),
               f"blocks.{last}.ffn.0": (config.ffn_dim, config.dim)}
    lora = {}
    for path, (out_features, in_features) in targets.items():
        lora[f"diffusion_model.{path}.lora_down.weight"] = torch.randn(rank, in_features, generator=g) / in_features**0.5
        lora[f"diffusion_model.{path}.lora_up.weight"] = torch.randn(out_features, rank, generator=g) * 0.2
        lora[f"diffusion_model.{path}.alpha"] = torch.tensor(float(rank) / 2)
    return lora
