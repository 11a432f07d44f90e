"""CogVideoX-5B video VAE (diffusers ``AutoencoderKLCogVideoX``): loading, encoding, decoding.

``CogVideoXVAE`` implements ``video_vae.VideoVAE`` with the latent format

    latents (1, F, 16, H/8, W/8) frame-major, as MV-DiT-7B uses them; F = (T - 1) // 4 + 1;
    normalised = raw * scaling_factor (0.7).

``encode`` returns *raw* (unscaled) posterior latents and ``decode`` takes raw latents;
``encode_normalized`` / ``decode_normalized`` apply the scaling factor. MV-DiT-7B's reference latents are
deliberately raw (an upstream quirk the released weights depend on) while the noisy latents are normalised.

Weights come from a CogVideoX-5B ``vae/`` folder (``config.json`` + ``diffusion_pytorch_model*.safetensors``,
the folder of the whole CogVideoX-5b snapshot is accepted too) or a single safetensors file with
diffusers key names (ComfyUI ``models/vae``). The architecture config shipped with the pack
(``mtv_core/configs/cogvideox5b_vae.json``) is used when there is no config.json. The model is
built without memory for its weights (``meta_init.empty_weights``) and every tensor is read from the file
straight into the requested dtype.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    CheckpointError,
    load_into,
    open_checkpoint,
    strip_key_prefix,
)
from ..errors import InputError, reading
from ..limits import MAX_LAYERS, MAX_WIDTH, parse_json
from ..meta_init import empty_weights, finish_loading
from .latents import FRAMES_FIRST, LatentFormat
from .video_vae import DiffusersVAEModule, VideoVAE

logger = logging.getLogger(__name__)

CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "cogvideox5b_vae.json"
SCALING_FACTOR = 0.7  # CogVideoX-5B's (from its config.json)
LATENT_FORMAT_NAME = "cogvideox"
_CONFIG_METADATA_KEY = "mtv_vae_config"
_KEY_PREFIXES = ("vae.", "first_stage_model.", "model.")


def vae_config() -> dict[str, Any]:
    """The CogVideoX-5B VAE architecture config shipped with the pack (scaling factor 0.7)."""
    return json.loads(CONFIG_PATH.read_text())


def tiny_vae_config() -> dict[str, Any]:
    """A few-channel VAE with the real layer layout (8x spatial, 4x temporal) for tests and the demo."""
    config = vae_config()
    config.update(block_out_channels=[8, 8, 8, 16], layers_per_block=1, norm_num_groups=4)
    return config


def latent_format_of(config: Any) -> LatentFormat:
    """The latent format of a CogVideoX VAE with diffusers ``config``."""
    return LatentFormat(
        name=LATENT_FORMAT_NAME,
        channels=int(config.latent_channels),
        layout=FRAMES_FIRST,
        spatial_compression=2 ** (len(config.block_out_channels) - 1),
        temporal_compression=int(config.temporal_compression_ratio),
        scaling_factor=float(config.scaling_factor),
    )


class CogVideoXVAE(DiffusersVAEModule, VideoVAE):
    """A loaded CogVideoX VAE with the pack's latent layout (tiling on by default)."""

    def __init__(self, vae: torch.nn.Module, source: str = "", tiling: bool = True, slicing: bool = True) -> None:
        super().__init__(vae, source, tiling, slicing)
        self.latent_format = latent_format_of(vae.config)

    @property
    def scaling_factor(self) -> float:
        return self.latent_format.scaling_factor

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """(1, 3, T, H, W) pixels in [-1, 1] -> (1, F, 16, H/8, W/8) raw (unscaled) latents (float32).

        ``sample``: draw from the posterior with ``generator`` (as upstream's ``latent_dist.sample()``),
        else take its mode.
        """
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, T, H, W), got {tuple(pixels.shape)}")
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        latents = dist.sample(generator=generator) if sample else dist.mode()
        return latents.permute(0, 2, 1, 3, 4).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(1, F, 16, h, w) raw (unscaled) latents -> (1, 3, T, 8h, 8w) pixels in [-1, 1] (float32)."""
        channels = self.latent_format.channels
        if latents.ndim != 5 or latents.shape[2] != channels:
            raise ValueError(f"latents must be (B, F, {channels}, h, w), got {tuple(latents.shape)}")
        z = latents.permute(0, 2, 1, 3, 4).to(self.device, self.dtype)
        return self.vae.decode(z).sample.float()


def _weights_path(path: Path) -> Path:
    """The VAE folder or safetensors file to read; FileNotFoundError / ValueError name what is wrong."""
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "vae").is_dir():
            path = path / "vae"  # a whole CogVideoX-5b snapshot
        if not any(p.name.lower().endswith(SAFETENSORS_SUFFIXES) for p in path.iterdir()):
            others = sorted(p.name for p in path.iterdir() if p.name.lower().endswith(TORCH_SUFFIXES))
            hint = f" (found {', '.join(others)}; convert it to safetensors)" if others else ""
            raise FileNotFoundError(f"no .safetensors weights in VAE folder {path}{hint}")
        return path
    if not path.is_file():
        raise FileNotFoundError(f"VAE not found: {path}")
    if not path.name.lower().endswith(SAFETENSORS_SUFFIXES):
        raise CheckpointError(f"VAE file {path} is not a .safetensors file; only safetensors weights are loaded")
    return path


def load_vae(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    tiling: bool = True,
    slicing: bool = True,
) -> CogVideoXVAE:
    """Load a CogVideoX-5B VAE from a ``vae/`` folder or a single safetensors file.

    Raises FileNotFoundError / ValueError naming the path when the weights are missing, not
    safetensors, or do not match the CogVideoX VAE architecture (with a key diff).
    """
    from diffusers import AutoencoderKLCogVideoX

    path = _weights_path(Path(path))
    ckpt = strip_key_prefix(open_checkpoint(path), _KEY_PREFIXES)
    stored = ckpt.metadata.get(_CONFIG_METADATA_KEY)  # a single file written by write_tiny_vae carries its config
    try:
        config = ckpt.config or (parse_json(stored, path, f"'{_CONFIG_METADATA_KEY}' metadata") if stored else None)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None
    from_file = bool(config)
    config = config or vae_config()
    if config.get("_class_name", "AutoencoderKLCogVideoX") != "AutoencoderKLCogVideoX":
        raise CheckpointError(f"{path}: config.json describes a {str(config['_class_name'])[:80]}, not a CogVideoX VAE")
    if any(k.startswith(("transformer_blocks.", "blocks.")) for k in ckpt.keys()):
        raise CheckpointError(f"{path} is a diffusion transformer checkpoint, not a CogVideoX VAE")
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "quantization_config"}
    if from_file:
        check_vae_config(config, ckpt.shapes(), path)
    with empty_weights(), reading(path, "CogVideoX VAE config", CheckpointError):
        vae = AutoencoderKLCogVideoX.from_config(config)
    load_into(vae, ckpt, dtype=dtype, device=device, what="CogVideoX VAE",
              hint="expected diffusers key names (the vae folder of THUDM/CogVideoX-5b)")
    finish_loading(vae, device, path)
    logger.info("loaded CogVideoX VAE from %s (%s, %s)", path, dtype, device)
    return CogVideoXVAE(vae, source=str(path), tiling=tiling, slicing=slicing)


def check_vae_config(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    """A VAE config from a file (config.json or metadata), checked before a model is built from it: every size in
    range, and the block counts (what the cost of building grows with) equal to what the weights hold.
    Individual tensor shapes are left to ``load_into``'s key report. CheckpointError naming the file otherwise."""

    def fail(problem: str) -> None:
        raise CheckpointError(f"{path}: the VAE config does not fit the weights: {problem}")

    channels = config.get("block_out_channels")
    if not isinstance(channels, list) or not 1 <= len(channels) <= 16 or not all(
            isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= MAX_WIDTH for c in channels):
        fail(f"block_out_channels must be 1 to 16 widths, got {str(channels)[:80]}")
    for name, low, high in (("layers_per_block", 1, MAX_LAYERS), ("in_channels", 1, MAX_WIDTH),
                            ("out_channels", 1, MAX_WIDTH), ("latent_channels", 1, MAX_WIDTH),
                            ("norm_num_groups", 1, MAX_WIDTH), ("temporal_compression_ratio", 1, 64),
                            ("sample_height", 1, 1 << 16), ("sample_width", 1, 1 << 16)):
        value = config.get(name, low)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(f"{name} must be a whole number between {low} and {high}, got {str(value)[:40]}")
    for name, default in (("scaling_factor", 0.7), ("norm_eps", 1e-6)):
        value = config.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6 \
                or value != value:
            fail(f"{name} must be a positive finite number, got {str(value)[:40]}")
    for name in ("down_block_types", "up_block_types"):
        types = config.get(name, [])
        if not isinstance(types, list) or len(types) != len(channels) or not all(isinstance(t, str) for t in types):
            fail(f"{name} must name one block per entry of block_out_channels")
    if any(c % config.get("norm_num_groups", 32) for c in channels):
        fail(f"block_out_channels {channels} are not divisible by norm_num_groups {config.get('norm_num_groups')}")
    blocks = {int(k.split(".")[2]) for k in shapes if k.startswith("encoder.down_blocks.") and k.split(".")[2].isdigit()}
    if blocks != set(range(len(channels))):
        fail(f"{len(channels)} down blocks in the config, {len(blocks)} in the weights")
    resnets = {k.split(".")[4] for k in shapes if k.startswith("encoder.down_blocks.0.resnets.")}
    if len(resnets) != config.get("layers_per_block", 1):
        fail(f"layers_per_block={config.get('layers_per_block', 1)}, the weights have {len(resnets)}")


def write_tiny_vae(path: str | Path, seed: int = 0, as_folder: bool = False) -> Path:
    """Write a tiny random CogVideoX VAE (real key names) for tests and the demo.

    ``as_folder``: a diffusers folder (config.json + diffusion_pytorch_model.safetensors) at ``path``;
    else a single safetensors file whose metadata carries the config.
    """
    from diffusers import AutoencoderKLCogVideoX
    from safetensors.torch import save_file

    config = tiny_vae_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLCogVideoX.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    path = Path(path)
    if as_folder:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={_CONFIG_METADATA_KEY: json.dumps(config)})
    return path
