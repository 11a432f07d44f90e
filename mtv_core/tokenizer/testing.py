"""Deterministic 4DMoT weights for tests, benchmarks and integration checks (no real checkpoint needed).

``regenerate_from_manifest`` rebuilds the reference weights of ``../shared/reference`` manifests;
``write_tiny_checkpoint`` writes a small random checkpoint with the real key names and layout.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch

from .config import TokenizerConfig
from .loading import save_tokenizer
from .model import MotionVQVAE

# Small but structurally identical to the release: 2 time downsamplings, joints kept,
# dilation 3 in the first stage and 1 in the second (dilation_base scales with the channels).
TINY_CONFIG = TokenizerConfig(
    encoder_channels=(32, 64), decoder_channels=(64, 32), code_dim=48, num_codes=64,
    num_res_blocks=1, norm_groups=8, dilation_base=128,
)


def manifest_tensor(name: str, spec: dict[str, Any], seed: int) -> torch.Tensor:
    """One tensor by the reference rule: randn(shape, Generator(seed + crc32(name))) * scale + offset."""
    generator = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
    tensor = torch.randn(spec["shape"], generator=generator, dtype=torch.float32)
    return tensor * spec["scale"] + spec["offset"]


def regenerate_from_manifest(manifest: str | Path | dict) -> dict[str, torch.Tensor]:
    """The state dict described by a reference ``manifest_*.json`` (path or parsed dict)."""
    data = json.loads(Path(manifest).read_text()) if not isinstance(manifest, dict) else manifest
    seed = int(data["seed"])
    return {name: manifest_tensor(name, spec, seed) for name, spec in data["params"].items()}


def random_weights(module: torch.nn.Module, seed: int, unit_keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Deterministic random weights of a healthy scale for every state-dict key of ``module`` (which may
    live on the meta device), by the :func:`manifest_tensor` rule: fan-in scaled matrices and convs,
    1-D weights (norms) near 1, biases near 0, ``unit_keys`` standard normal."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        shape = list(tensor.shape)
        if name in unit_keys:
            spec = {"shape": shape, "scale": 1.0, "offset": 0.0}
        elif tensor.ndim == 1:
            is_norm_weight = name.endswith("weight")
            spec = {"shape": shape, "scale": 0.1 if is_norm_weight else 0.02, "offset": 1.0 if is_norm_weight else 0.0}
        else:
            spec = {"shape": shape, "scale": tensor[0].numel() ** -0.5, "offset": 0.0}
        out[name] = manifest_tensor(name, spec, seed)
    return out


def random_state_dict(config: TokenizerConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of a healthy scale for ``config`` (see :func:`random_weights`; codebook standard normal)."""
    with torch.device("meta"):
        model = MotionVQVAE(config)
    return random_weights(model, seed, unit_keys=("vq.codebook",))


def tiny_model(config: TokenizerConfig = TINY_CONFIG, seed: int = 0) -> MotionVQVAE:
    model = MotionVQVAE(config)
    model.load_state_dict(random_state_dict(config, seed))
    return model.eval().requires_grad_(False)


def write_tiny_checkpoint(path: str | Path, config: TokenizerConfig = TINY_CONFIG, seed: int = 0,
                          with_config: bool = True) -> Path:
    """Write a tiny random 4DMoT checkpoint (real key names) as safetensors, or ``.pt`` wrapped like DeepSpeed.

    ``.pt`` files hold ``{"module": state_dict}`` as upstream's ``mp_rank_00_model_states.pt``.
    ``with_config=False`` leaves the configuration out of a safetensors file (as in kijai's file).
    """
    path = Path(path)
    model = tiny_model(config, seed)
    if path.suffix == ".pt":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"module": model.state_dict(), "dp_world_size": 1}, path)
        return path
    if with_config:
        return save_tokenizer(model, path)
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
