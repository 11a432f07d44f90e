"""Wan2.1 video VAE of MV-DiT-17B (diffusers ``AutoencoderKLWan``): loading, encoding, decoding.

Layouts (channel-first, as the Wan transformer uses them):
    pixels  (B, 3, T, H, W) float in [-1, 1]; T = 4k + 1 frames.
    latents (B, 16, F, H/8, W/8) *normalised* per channel, F = (T - 1) // 4 + 1:
            latents = (posterior_mean - latent_mean) * (1 / latent_std), as upstream's Wan VAE does inside
            ``encode`` (and undoes inside ``decode``), with the released 16-value tables.

Accepted files: Wan's ``Wan2.1_VAE.pth`` and ComfyUI's ``wan_2.1_vae.safetensors`` (both in Wan's original
naming: ``encoder.downsamples.N.residual.*``, ``decoder.upsamples.N.*``, ``conv1``/``conv2`` ...), and
diffusers' ``AutoencoderKLWan`` folders or files. The architecture (base width, z_dim, width multipliers,
residual blocks per stage, temporal downsampling) is read from the weights' shapes; the model is built on
the meta device and each tensor read from the mapped file straight into the requested dtype.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, load_into, open_checkpoint, strip_key_prefix
from ..constants import TEMPORAL_COMPRESSION, latent_frames  # noqa: F401 (re-exported: the Wan VAE's 4k + 1 grid)
from ..dit.latents import CHANNELS_FIRST, LatentFormat
from ..dit.video_vae import DiffusersVAEModule
from ..meta_init import empty_weights, finish_loading
from .keymap import MappedCheckpoint, Source, save_state

logger = logging.getLogger(__name__)

# The per-channel latent statistics of the released Wan2.1 VAE (upstream hard-codes them; diffusers'
# AutoencoderKLWan config carries the same values as ``latents_mean`` / ``latents_std``).
WAN21_LATENT_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENT_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)
SPATIAL_COMPRESSION = 8
_KEY_PREFIXES = ("vae.", "first_stage_model.", "model.", "module.")
_RESIDUAL = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
             "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
             "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
_TOP = {"conv1.weight": "quant_conv.weight", "conv1.bias": "quant_conv.bias",
        "conv2.weight": "post_quant_conv.weight", "conv2.bias": "post_quant_conv.bias"}


LATENT_FORMAT_NAME = "wan2.1"


def wan_latent_format(mean: tuple[float, ...] = WAN21_LATENT_MEAN, std: tuple[float, ...] = WAN21_LATENT_STD) -> LatentFormat:
    """The Wan2.1 latent format: per-channel statistics (``normalised = (raw - mean) / std``), channel-first."""
    return LatentFormat(name=LATENT_FORMAT_NAME, channels=len(mean), layout=CHANNELS_FIRST,
                        spatial_compression=SPATIAL_COMPRESSION, temporal_compression=TEMPORAL_COMPRESSION,
                        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))


def _stage_layout(shapes: dict[str, tuple], prefix: str) -> list[tuple[int, str, int]]:
    """(index, kind, width) of Wan's flat ``{prefix}.N`` list; kind ``res`` / ``resample`` / ``resample_t``."""
    blocks: dict[int, set[str]] = {}
    widths: dict[int, int] = {}
    for key, shape in shapes.items():
        m = re.fullmatch(rf"{re.escape(prefix)}\.(\d+)\.(.+)", key)
        if m:
            i = int(m.group(1))
            blocks.setdefault(i, set()).add(m.group(2))
            if m.group(2) in ("residual.6.weight", "resample.1.weight"):
                widths[i] = shape[0]
    layout = []
    for i in sorted(blocks):
        names = blocks[i]
        if any(n.startswith("residual.") for n in names):
            layout.append((i, "res", widths.get(i, 0)))
        elif any(n.startswith("resample.") for n in names):
            layout.append((i, "resample_t" if any(n.startswith("time_conv.") for n in names) else "resample",
                           widths.get(i, 0)))
        else:
            layout.append((i, "other", 0))
    return layout


def wan_vae_config_from_shapes(shapes: dict[str, tuple], path="") -> dict:
    """``AutoencoderKLWan`` arguments read from Wan-named shapes (``Wan2.1_VAE.pth`` naming)."""
    try:
        base_dim = shapes["encoder.conv1.weight"][0]
        z_dim = shapes["conv2.weight"][0]
    except KeyError as exc:
        raise CheckpointError(f"{path}: not a Wan VAE checkpoint (no {exc.args[0]})") from None
    layout = _stage_layout(shapes, "encoder.downsamples")
    if not layout or any(kind == "other" for _, kind, _ in layout):
        raise CheckpointError(f"{path}: unsupported Wan VAE encoder layout (attention or unknown blocks "
                              "in encoder.downsamples); MV-DiT-17B uses the Wan2.1 VAE")
    stages: list[list[int]] = [[]]
    temporal: list[bool] = []
    for _, kind, width in layout:
        if kind == "res":
            stages[-1].append(width)
        else:
            temporal.append(kind == "resample_t")
            stages.append([])
    counts = {len(s) for s in stages}
    if len(counts) != 1 or any(w % base_dim for s in stages for w in s):
        raise CheckpointError(f"{path}: irregular Wan VAE encoder stages {stages}")
    dim_mult = [s[-1] // base_dim for s in stages]
    return dict(base_dim=base_dim, z_dim=z_dim, dim_mult=dim_mult, num_res_blocks=counts.pop(),
                attn_scales=[], temperal_downsample=temporal, dropout=0.0,
                latents_mean=list(WAN21_LATENT_MEAN), latents_std=list(WAN21_LATENT_STD))


def _config_from_diffusers_shapes(shapes: dict[str, tuple], path="") -> dict:
    """Architecture of a diffusers-named Wan VAE without config.json: its encoder and latent convs renamed
    to Wan's names (the encoder list is flat in both), then read as :func:`wan_vae_config_from_shapes`."""
    res = {v: k for k, v in _RESIDUAL.items()}
    wan_shapes: dict[str, tuple] = {}
    for key, shape in shapes.items():
        if key == "encoder.conv_in.weight":
            wan_shapes["encoder.conv1.weight"] = shape
        elif key == "post_quant_conv.weight":
            wan_shapes["conv2.weight"] = shape
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
            wan_shapes[f"encoder.downsamples.{m.group(1)}.{res.get(m.group(2), m.group(2))}"] = shape
    return wan_vae_config_from_shapes(wan_shapes, path)


def _wan_to_diffusers(key: str, decoder_map: dict[int, str]) -> str | None:
    if key in _TOP:
        return _TOP[key]
    for side in ("encoder", "decoder"):
        if not key.startswith(side + "."):
            continue
        rest = key[len(side) + 1:]
        if rest.startswith("conv1."):
            return f"{side}.conv_in.{rest[len('conv1.'):]}"
        if rest.startswith("head.0."):
            return f"{side}.norm_out.{rest[len('head.0.'):]}"
        if rest.startswith("head.2."):
            return f"{side}.conv_out.{rest[len('head.2.'):]}"
        m = re.fullmatch(r"middle\.(\d)\.(.+)", rest)
        if m:
            i, leaf = int(m.group(1)), m.group(2)
            if i == 1:
                return f"{side}.mid_block.attentions.0.{leaf}"
            return f"{side}.mid_block.resnets.{i // 2}.{_RESIDUAL.get(leaf, leaf)}"
        m = re.fullmatch(r"(downsamples|upsamples)\.(\d+)\.(.+)", rest)
        if m:
            block, leaf = int(m.group(2)), m.group(3)
            if side == "encoder":
                return f"encoder.down_blocks.{block}.{_RESIDUAL.get(leaf, leaf)}"
            if block in decoder_map:
                target = decoder_map[block]
                return f"{target}.{leaf}" if "upsamplers" in target else f"{target}.{_RESIDUAL.get(leaf, leaf)}"
    return None


def _decoder_map(config: dict) -> dict[int, str]:
    """Wan's flat ``decoder.upsamples.N`` -> diffusers' ``decoder.up_blocks.i.{resnets.j, upsamplers.0}``."""
    out, flat = {}, 0
    stages = len(config["dim_mult"])
    for i in range(stages):
        for j in range(config["num_res_blocks"] + 1):
            out[flat] = f"decoder.up_blocks.{i}.resnets.{j}"
            flat += 1
        if i != stages - 1:
            out[flat] = f"decoder.up_blocks.{i}.upsamplers.0"
            flat += 1
    return out


def wan_vae_key_map(ckpt, config: dict) -> MappedCheckpoint:
    """``ckpt`` in Wan's naming under ``AutoencoderKLWan``'s key names."""
    decoder_map = _decoder_map(config)
    sources: dict[str, Source] = {}
    unexpected: dict[str, tuple] = {}
    for key in ckpt.keys():
        target = _wan_to_diffusers(key, decoder_map)
        if target is None:
            unexpected[key] = ckpt.shape(key)
        else:
            sources[target] = Source(key, ckpt.shape(key))
    return MappedCheckpoint(ckpt, sources, unexpected)


def build_wan_vae(config: dict):
    """An (unloaded) diffusers ``AutoencoderKLWan`` for ``config``, weights on the meta device
    (``meta_init.empty_weights``)."""
    from diffusers import AutoencoderKLWan

    with empty_weights():
        return AutoencoderKLWan.from_config({k: v for k, v in config.items() if not k.startswith("_")})


class WanVAE(DiffusersVAEModule):
    """A loaded Wan2.1 VAE with normalised latents (the 17B side of the pack's VAE interface).

    Same surface as :class:`mtv_core.dit.vae.VideoVAE` (``encode``/``decode``/``device``/``dtype``/``to``/
    ``set_tiling``), but channel-first layouts and latents already normalised (see the module docstring).
    Tiling (diffusers' 256-px tiles, 192-px stride) is off by default, as upstream runs it.
    """

    def __init__(self, vae: torch.nn.Module, source: str = "", tiling: bool = False, slicing: bool = True) -> None:
        super().__init__(vae, source, tiling, slicing)
        self.latent_format = wan_latent_format(tuple(vae.config.latents_mean), tuple(vae.config.latents_std))

    temporal_compression = TEMPORAL_COMPRESSION
    spatial_compression = SPATIAL_COMPRESSION

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.z_dim)

    def _check_pixels(self, pixels: torch.Tensor) -> None:
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, T, H, W), got {tuple(pixels.shape)}")

    @torch.no_grad()
    def encode_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) in [-1, 1] -> (normalised posterior mean, log-variance), each (B, 16, F, h, w) float32.

        The log-variance is the raw (clamped to [-30, 20]) posterior's, not normalised, as upstream returns it.
        """
        self._check_pixels(pixels)
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return self.latent_format.normalize(dist.mode().float()), dist.logvar.float()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) pixels in [-1, 1] -> (B, 16, F, H/8, W/8) normalised latents (mode), float32."""
        return self.encode_posterior(pixels)[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 16, F, h, w) normalised latents -> (B, 3, 4(F-1)+1, 8h, 8w) pixels clamped to [-1, 1], float32."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (B, {self.latent_channels}, F, h, w), got {tuple(latents.shape)}")
        raw = self.latent_format.denormalize(latents.float())
        return self.vae.decode(raw.to(self.device, self.dtype)).sample.float().clamp(-1.0, 1.0)


def _is_diffusers_naming(keys) -> bool:
    return "encoder.conv_in.weight" in keys and "quant_conv.weight" in keys


def load_wan_vae(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    tiling: bool = False,
    slicing: bool = True,
) -> WanVAE:
    """Load the Wan2.1 VAE from ``Wan2.1_VAE.pth``, ComfyUI's ``wan_2.1_vae.safetensors`` or a diffusers folder.

    Raises FileNotFoundError naming a missing path, CheckpointError naming the file when the weights are not a
    Wan2.1 VAE (with a key diff).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Wan VAE not found: {path}")
    if path.is_dir() and not (path / "config.json").is_file() and (path / "vae").is_dir():
        path = path / "vae"  # a whole diffusers Wan snapshot
    ckpt = strip_key_prefix(open_checkpoint(path), _KEY_PREFIXES)
    keys = ckpt.keys()
    if "patch_embedding.weight" in keys or any(k.startswith("transformer_blocks.") for k in keys):
        raise CheckpointError(f"{path} is a diffusion transformer checkpoint, not the Wan VAE")
    if _is_diffusers_naming(keys):
        config = ckpt.config or _config_from_diffusers_shapes(ckpt.shapes(), path)
        if config.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
            raise CheckpointError(f"{path}: config.json describes a {config['_class_name']}, not AutoencoderKLWan")
        mapped = ckpt
    else:
        config = wan_vae_config_from_shapes(ckpt.shapes(), path)
        mapped = wan_vae_key_map(ckpt, config)
    z_dim = config.get("z_dim", len(WAN21_LATENT_MEAN))
    if z_dim != len(WAN21_LATENT_MEAN) or config.get("is_residual"):
        raise CheckpointError(f"{path}: a VAE with z_dim {z_dim} (Wan2.2?); MV-DiT-17B uses the "
                              "16-channel Wan2.1 VAE (Wan2.1_VAE.pth / wan_2.1_vae.safetensors)")
    vae = build_wan_vae(config)
    load_into(vae, mapped, dtype=dtype, device=device, what="Wan2.1 VAE",
              hint="expected Wan2.1_VAE.pth, ComfyUI's wan_2.1_vae.safetensors or a diffusers AutoencoderKLWan")
    finish_loading(vae, device, path)
    logger.info("loaded Wan VAE from %s (base width %d, %s, %s)", path, config["base_dim"], dtype, device)
    return WanVAE(vae, source=str(path), tiling=tiling, slicing=slicing)


def tiny_wan_vae_config() -> dict:
    """Base width 8 with the real layer layout (8x spatial, 4x temporal, 16 latent channels)."""
    return dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0,
                latents_mean=list(WAN21_LATENT_MEAN), latents_std=list(WAN21_LATENT_STD))


def write_tiny_wan_vae(path: str | Path, seed: int = 0, naming: str = "wan") -> Path:
    """Write a tiny random Wan2.1 VAE with real key names.

    naming ``wan``: Wan's original names (``Wan2.1_VAE.pth`` layout; a ``.pth`` path is written with
    ``torch.save``, else safetensors); ``comfy``: the same names as safetensors (ComfyUI's
    ``wan_2.1_vae.safetensors``); ``diffusers``: a diffusers folder (``config.json`` +
    ``diffusion_pytorch_model.safetensors``) at ``path``.
    """
    from safetensors.torch import save_file

    from ..tokenizer.testing import manifest_tensor, random_weights

    if naming not in ("wan", "comfy", "diffusers"):
        raise ValueError(f"naming must be 'wan', 'comfy' or 'diffusers', got {naming!r}")
    config = tiny_wan_vae_config()
    vae = build_wan_vae(config)
    state = {k: v.contiguous() for k, v in random_weights(vae, seed).items()}
    for key, value in state.items():
        if key.endswith(".gamma"):  # RMS-norm scales near 1, like the other norm weights
            state[key] = manifest_tensor(key, {"shape": list(value.shape), "scale": 0.1, "offset": 1.0}, seed)
    path = Path(path)
    if naming == "diffusers":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan", **config}, indent=2))
        save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
        return path
    return save_state(_diffusers_to_wan(state, config), path)


def _diffusers_to_wan(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """diffusers ``AutoencoderKLWan`` names -> Wan's original names (the inverse of :func:`wan_vae_key_map`)."""
    to_flat = {v: k for k, v in _decoder_map(config).items()}
    res = {v: k for k, v in _RESIDUAL.items()}
    top = {v: k for k, v in _TOP.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        side, rest = key.split(".", 1)
        first, leaf = rest.split(".", 1)
        if first in ("conv_in", "norm_out", "conv_out"):
            name = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}[first] + "." + leaf
        elif rest.startswith("mid_block.attentions.0."):
            name = "middle.1." + rest[len("mid_block.attentions.0."):]
        elif rest.startswith("mid_block.resnets."):
            j, leaf = rest[len("mid_block.resnets."):].split(".", 1)
            name = f"middle.{2 * int(j)}.{res[leaf]}"
        elif rest.startswith("down_blocks."):
            n, leaf = rest[len("down_blocks."):].split(".", 1)
            name = f"downsamples.{n}.{res.get(leaf, leaf)}"
        else:
            m = re.fullmatch(r"(up_blocks\.\d+\.(?:resnets\.\d+|upsamplers\.0))\.(.+)", rest)
            flat, leaf = to_flat[f"decoder.{m.group(1)}"], m.group(2)
            name = f"upsamples.{flat}.{leaf if 'upsamplers' in m.group(1) else res[leaf]}"
        out[f"{side}.{name}"] = value
    return out
