"""Configuration of MV-DiT-7B (CogVideoX-5B transformer with motion attention).

Defaults are the released values (``MV-DiT/CogVideoX/config.json``): 48 heads x 64 = 3072 hidden, 42 layers,
32 input channels (16 noisy + 16 reference latents), 16 output channels, time embedding 512, text embedding
4096 (the text projection exists as weights but is unused), patch 2, 312 = 13 x 24 unconditional motion tokens.
Motion tokens enter attention at the hidden size (3072) without projection.

The released ``config.json`` does not carry the number of unconditional motion tokens (nor a feed-forward
width): those come from the weights' shapes (``from_diffusers_config(config, shapes)``).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from ..constants import NUM_JOINTS, WINDOW_FRAMES, latent_frames, video_frames
from ..limits import MAX_LAYERS, MAX_WIDTH, check_whole_number

logger = logging.getLogger(__name__)


def check_against_weights(config: Any, inferred: Any, fields: Sequence[str]) -> None:
    """ValueError listing the ``fields`` where ``config`` (from a config.json) differs from ``inferred`` (from the
    weights' shapes): a config.json is trusted only where the weights agree, checked before a model is built."""
    wrong = [f"{name}={getattr(config, name)} but the weights have {getattr(inferred, name)}" for name in fields
             if getattr(config, name) != getattr(inferred, name)]
    if wrong:
        raise ValueError(f"config.json does not match the weights: {'; '.join(wrong)}")

# Fields the weights determine: a config.json must agree with them before a model of its size is built.
SHAPE_FIELDS = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "time_embed_dim",
                "text_embed_dim", "num_layers", "patch_size", "ff_dim", "num_unconditional_tokens")
_INT_RANGES = {
    "num_attention_heads": (1, 1024), "attention_head_dim": (1, 4096), "in_channels": (1, MAX_WIDTH),
    "out_channels": (1, MAX_WIDTH), "time_embed_dim": (1, MAX_WIDTH), "text_embed_dim": (1, MAX_WIDTH),
    "num_layers": (1, MAX_LAYERS), "patch_size": (1, 64), "temporal_compression_ratio": (1, 64),
    "freq_shift": (-MAX_WIDTH, MAX_WIDTH), "ff_inner_dim": (1, 1 << 20), "num_unconditional_tokens": (1, 1 << 20),
}  # fmt: skip


@dataclass(frozen=True)
class MVDiT7BConfig:
    num_attention_heads: int = 48
    attention_head_dim: int = 64
    in_channels: int = 32
    out_channels: int = 16
    time_embed_dim: int = 512
    text_embed_dim: int = 4096
    num_layers: int = 42
    patch_size: int = 2
    temporal_compression_ratio: int = 4
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    attention_bias: bool = True
    ff_inner_dim: int | None = None  # None: 4 x inner_dim
    num_unconditional_tokens: int = latent_frames(WINDOW_FRAMES) * NUM_JOINTS  # 312

    def __post_init__(self) -> None:
        # values may come from a config.json: checked here, before anything is built from them
        for name, (low, high) in _INT_RANGES.items():
            if not (name == "ff_inner_dim" and self.ff_inner_dim is None):
                check_whole_number(getattr(self, name), name, low, high)
        for name in ("norm_eps", "qk_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 < value < 1:
                raise ValueError(f"{name} must be a small positive number, got {value!r:.40}")
        for name in ("flip_sin_to_cos", "attention_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r:.40}")
        if self.num_attention_heads * self.attention_head_dim > MAX_WIDTH:
            raise ValueError(f"hidden size {self.num_attention_heads} x {self.attention_head_dim} is over the limit "
                             f"of {MAX_WIDTH}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def motion_token_dim(self) -> int:
        return self.inner_dim

    @property
    def ff_dim(self) -> int:
        return self.ff_inner_dim or 4 * self.inner_dim

    @property
    def unconditional_latent_frames(self) -> int:
        """Latent frames the learned unconditional tokens cover (13 = 49 video frames in the release)."""
        return self.num_unconditional_tokens // NUM_JOINTS

    @property
    def window_frames(self) -> int:
        """Video frames of the windows motion guidance works on: 4 (F - 1) + 1 for F unconditional latent frames."""
        return video_frames(self.unconditional_latent_frames)

    def to_diffusers_config(self) -> dict:
        """A diffusers-style ``config.json`` dict (upstream ``Transformer7B`` constructor names)."""
        return {
            "_class_name": "Transformer7B",
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "time_embed_dim": self.time_embed_dim,
            "text_embed_dim": self.text_embed_dim,
            "num_layers": self.num_layers,
            "attention_bias": self.attention_bias,
            "patch_size": self.patch_size,
            "temporal_compression_ratio": self.temporal_compression_ratio,
            "activation_fn": "gelu-approximate",
            "timestep_activation_fn": "silu",
            "norm_elementwise_affine": True,
            "norm_eps": self.norm_eps,
            "use_rotary_positional_embeddings": True,
        }

    @classmethod
    def from_diffusers_config(
        cls, config: Mapping, shapes: Mapping[str, tuple] | None = None
    ) -> "MVDiT7BConfig":
        """From a diffusers ``config.json`` dict; unknown keys are ignored, unsupported settings raise.

        What config.json does not say (the unconditional token count, a non-default feed-forward width) is
        read from the checkpoint's key ``shapes`` when given, else left at the released values.
        """
        for key, supported in (
            ("activation_fn", "gelu-approximate"),
            ("timestep_activation_fn", "silu"),
            ("norm_elementwise_affine", True),
        ):
            if key in config and config[key] != supported:
                raise ValueError(f"config.json: {key}={config[key]!r} is not supported (MV-DiT-7B uses {supported!r})")
        if config.get("use_rotary_positional_embeddings") is False:
            # upstream's forward reads the RoPE tables unconditionally, so the released model always uses them
            logger.warning("config.json says use_rotary_positional_embeddings=false; MV-DiT-7B always uses 3D RoPE")
        names = {f.name for f in fields(cls)}
        values = {k: config[k] for k in names if k in config and config[k] is not None}
        if shapes is not None:
            for key, value in cls._from_weights(shapes).items():
                values.setdefault(key, value)
        return cls(**values)

    @classmethod
    def _from_weights(cls, shapes: Mapping[str, tuple]) -> dict:
        """The settings only the weights tell: unconditional token count and feed-forward width."""
        found = {}
        if "unconditional_motion_token" in shapes:
            found["num_unconditional_tokens"] = shapes["unconditional_motion_token"][0]
        ff = shapes.get("transformer_blocks.0.ff.net.0.proj.weight")
        if ff is not None and ff[0] != 4 * ff[1]:
            found["ff_inner_dim"] = ff[0]
        return found

    @classmethod
    def infer_from_shapes(cls, shapes: Mapping[str, tuple]) -> "MVDiT7BConfig":
        """Infer the architecture from state-dict key shapes (single-file checkpoints have no config)."""
        try:
            inner, in_channels, patch, _ = shapes["patch_embed.proj.weight"]
            head_dim = shapes["transformer_blocks.0.attn1.norm_q.weight"][0]
            time_embed_dim = shapes["time_embedding.linear_1.weight"][0]
            text_embed_dim = shapes["patch_embed.text_proj.weight"][1]
            out_features = shapes["proj_out.weight"][0]
            ff_dim = shapes["transformer_blocks.0.ff.net.0.proj.weight"][0]
            num_uncond = shapes["unconditional_motion_token"][0]
        except KeyError as exc:
            raise ValueError(f"not an MV-DiT-7B state dict: key {exc.args[0]!r} is missing") from None
        except (ValueError, IndexError, TypeError):
            raise ValueError("not an MV-DiT-7B state dict: its patch embedding, norms or projections have the "
                             "wrong number of dimensions") from None
        if min(inner, in_channels, patch, head_dim, out_features) < 1 or inner % head_dim or out_features % (patch * patch):
            raise ValueError(f"not an MV-DiT-7B state dict: hidden size {inner}, head size {head_dim}, patch {patch} "
                             f"and output {out_features} do not fit together")
        layer_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"transformer_blocks\.(\d{1,6})\.", k))}
        if layer_ids != set(range(len(layer_ids))):
            raise ValueError(f"transformer block indices are not 0..{len(layer_ids) - 1} (the weights hold "
                             f"{len(layer_ids)} blocks numbered up to {max(layer_ids)})")
        return cls(
            num_attention_heads=inner // head_dim,
            attention_head_dim=head_dim,
            in_channels=in_channels,
            out_channels=out_features // (patch * patch),
            time_embed_dim=time_embed_dim,
            text_embed_dim=text_embed_dim,
            num_layers=max(layer_ids) + 1 if layer_ids else 0,
            patch_size=patch,
            ff_inner_dim=None if ff_dim == 4 * inner else ff_dim,
            num_unconditional_tokens=num_uncond,
        )
