"""Tiny MV-DiT-7B checkpoints with the real key names, for tests, the demo and integration checks.

The tiny model has the structure of the release (2 heads x 64, 2 layers, 32 -> 16 channels, 312 unconditional
tokens) at 1/24 of its width; it is the configuration of the reference cases in ``../shared/reference/mvdit7b``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..tokenizer.testing import random_weights
from .config import MVDiT7BConfig
from .transformer_7b import MVDiT7B

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def tiny_mvdit7b_config() -> MVDiT7BConfig:
    return MVDiT7BConfig(num_attention_heads=2, attention_head_dim=64, time_embed_dim=64, text_embed_dim=64, num_layers=2)


def tiny_tokenizer_config_for_7b():
    """The tiny 4DMoT configuration whose motion tokens fit ``tiny_mvdit7b_config`` (code size = token size)."""
    import dataclasses

    from ..tokenizer.testing import TINY_CONFIG

    return dataclasses.replace(TINY_CONFIG, code_dim=tiny_mvdit7b_config().motion_token_dim)


def random_state_dict_7b(config: MVDiT7BConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random weights of a healthy scale (see ``tokenizer.testing.random_weights``;
    the unconditional motion tokens standard normal)."""
    with torch.device("meta"):
        model = MVDiT7B(config)
    return random_weights(model, seed, unit_keys=("unconditional_motion_token",))


def save_mvdit7b(
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    config: MVDiT7BConfig,
    as_folder: bool = False,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a state dict as one safetensors file, or as a diffusers folder (config.json + shards + index)."""
    tensors = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in state_dict.items()}
    return save_weights(tensors, path, config.to_diffusers_config() if as_folder else None, as_folder, max_shard_bytes)


def save_weights(tensors: dict[str, torch.Tensor], path: str | Path, config_json: dict | None = None,
                 as_folder: bool = False, max_shard_bytes: int | None = None) -> Path:
    """Write ``tensors`` as one safetensors file, or as a diffusers-style folder: ``config.json`` (when given) and
    one weights file, or shards of at most ``max_shard_bytes`` with their index."""
    from safetensors.torch import save_file

    path = Path(path)
    if not as_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
        return path
    path.mkdir(parents=True, exist_ok=True)
    if config_json is not None:
        (path / "config.json").write_text(json.dumps(config_json, indent=2))
    if max_shard_bytes is None:
        save_file(tensors, str(path / WEIGHTS_NAME))
        return path
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / name))
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return path


def write_tiny_mvdit7b(
    path: str | Path,
    seed: int = 0,
    as_folder: bool = False,
    dtype: torch.dtype = torch.float32,
    config: MVDiT7BConfig | None = None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a tiny random MV-DiT-7B checkpoint (single safetensors file, or diffusers folder if ``as_folder``)."""
    config = config or tiny_mvdit7b_config()
    return save_mvdit7b(random_state_dict_7b(config, seed), path, config, as_folder, dtype, max_shard_bytes)
