"""Configuration of MV-DiT-17B (Wan2.1 I2V-14B transformer with motion attention in every 4th block).

Field names are Wan's ``config.json`` keys. Defaults are the released values (``MV-DiT/Wan-2-1/config.json``):
dim 5120 = 40 heads x 128, 40 layers, ffn 13824, in_dim 36 (16 noisy + 4 mask + 16 masked-video latent
channels), out_dim 16, text width 4096 padded to 512 tokens, sinusoidal time embedding of 256, patch (1, 2, 2),
eps 1e-6, RMS qk-norm and an affine LayerNorm before cross-attention. Motion attention sits in the blocks with
``i % motion_attn_interval == 0`` (0, 4, ..., 36); motion tokens (3072 wide in the release) enter it zero-padded
to ``dim`` without a projection.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, fields
from typing import Mapping

from ..limits import MAX_LAYERS, MAX_WIDTH, check_whole_number

logger = logging.getLogger(__name__)

WAN_HEAD_DIM = 128  # every Wan2.1 model has 128-wide heads; single files do not record the head count
RELEASED_DIM = 5120  # width of the released MV-DiT-17B (Wan2.1 I2V-14B)
RELEASED_MOTION_TOKEN_DIM = 3072  # width of the released 4DMoT's tokens, zero-padded to RELEASED_DIM
_MOTION_KEY = re.compile(r"blocks\.(\d+)\.motion_attn\.")
# Fields the weights determine: a config.json must agree with them before a model of its size is built.
SHAPE_FIELDS = ("dim", "ffn_dim", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim", "patch_size",
                "qk_norm", "cross_attn_norm")
_INT_RANGES = {
    "dim": (1, MAX_WIDTH), "ffn_dim": (1, 4 * MAX_WIDTH), "num_heads": (1, 1024), "num_layers": (1, MAX_LAYERS),
    "in_dim": (1, MAX_WIDTH), "out_dim": (1, MAX_WIDTH), "text_dim": (1, MAX_WIDTH), "freq_dim": (2, MAX_WIDTH),
    "text_len": (1, 1 << 16), "clip_dim": (1, MAX_WIDTH), "motion_attn_interval": (1, MAX_LAYERS),
    "motion_token_dim": (1, MAX_WIDTH),
}  # fmt: skip
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")
ADAPTER_KEY = re.compile(r"blocks\.\d+\.(motion_attn|norm4)\.")  # the motion adapter's keys


@dataclass(frozen=True)
class MVDiT17BConfig:
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 36
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    text_len: int = 512
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    model_type: str = "i2v"
    clip_dim: int = 1280
    motion_attn_interval: int = 4
    motion_token_dim: int | None = None  # width of the motion tokens (3072 released); None: any width <= dim

    def __post_init__(self) -> None:
        # values may come from a config.json or from key names: checked before anything is built from them
        for name, (low, high) in _INT_RANGES.items():
            if not (name == "motion_token_dim" and self.motion_token_dim is None):
                check_whole_number(getattr(self, name), name, low, high)
        if not isinstance(self.patch_size, tuple) or len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w), got {self.patch_size!r:.40}")
        for size in self.patch_size:
            check_whole_number(size, "patch_size", 1, 64)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps < 1:
            raise ValueError(f"eps must be a small positive number, got {self.eps!r:.40}")
        for name in ("qk_norm", "cross_attn_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r:.40}")
        if self.model_type != "i2v":
            raise ValueError(f"model_type {self.model_type!r}: MV-DiT-17B is an image-to-video ('i2v') model")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} does not split into {self.num_heads} heads of even width")
        if self.motion_token_dim is not None and self.motion_token_dim > self.dim:
            raise ValueError(f"motion_token_dim {self.motion_token_dim} must be in 1..dim ({self.dim})")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def cond_channels(self) -> int:
        """Channels of the conditioning ``y`` concatenated to the noisy latents (4 mask + 16 latent = 20)."""
        return self.in_dim - self.out_dim

    @property
    def motion_blocks(self) -> tuple[int, ...]:
        """Indices of the blocks with motion attention."""
        return tuple(i for i in range(self.num_layers) if i % self.motion_attn_interval == 0)

    def to_wan_config(self) -> dict:
        """A Wan-style ``config.json`` dict (upstream ``Transformer17B`` constructor names)."""
        return {
            "_class_name": "Transformer17B",
            "model_type": self.model_type,
            "patch_size": list(self.patch_size),
            "text_len": self.text_len,
            "in_dim": self.in_dim,
            "dim": self.dim,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "text_dim": self.text_dim,
            "out_dim": self.out_dim,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "window_size": [-1, -1],
            "qk_norm": self.qk_norm,
            "cross_attn_norm": self.cross_attn_norm,
            "eps": self.eps,
        }

    @classmethod
    def from_wan_config(cls, config: Mapping, **overrides) -> "MVDiT17BConfig":
        """From a Wan ``config.json`` dict; unknown keys are ignored, unsupported settings raise ValueError."""
        if config.get("use_2d"):
            raise ValueError("use_2d=true (upstream's unreleased pose-video variant) is not supported")
        window = config.get("window_size")
        if window is not None and tuple(window) != (-1, -1):
            raise ValueError(f"window_size={list(window)} is not supported (MV-DiT-17B attends globally)")
        names = {f.name for f in fields(cls)}
        values = {k: config[k] for k in names if k in config and config[k] is not None}
        if "patch_size" in values:
            values["patch_size"] = tuple(int(p) for p in values["patch_size"])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def infer_from_shapes(cls, shapes: Mapping[str, tuple]) -> "MVDiT17BConfig":
        """Infer the architecture from state-dict key shapes (single files have no config).

        The head count is not recorded by any shape; it is dim / 128 as in every Wan2.1 model. ``text_len``
        and ``eps`` take the Wan values (512, 1e-6). The motion-attention interval comes from the blocks that
        hold motion keys (4 if there are none, i.e. for a base model without them).
        """
        try:
            dim, in_dim, *patch = shapes["patch_embedding.weight"]
            text_dim = shapes["text_embedding.0.weight"][1]
            freq_dim = shapes["time_embedding.0.weight"][1]
            ffn_dim = shapes["blocks.0.ffn.0.weight"][0]
            head_out = shapes["head.head.weight"][0]
        except KeyError as exc:
            raise ValueError(f"not a Wan / MV-DiT-17B state dict: key {exc.args[0]!r} is missing") from None
        if "img_emb.proj.1.weight" not in shapes:
            raise ValueError(
                "no image embedding (img_emb): this is a text-to-video Wan model; MV-DiT-17B needs an "
                "image-to-video one (Wan2.1 I2V-14B or Wan2.1-Fun-14B-InP)"
            )
        layer_ids = {int(m.group(1)) for k in shapes if (m := BLOCK_KEY.match(k))}
        if dim % WAN_HEAD_DIM:
            raise ValueError(f"width {dim} is not a multiple of Wan's head width {WAN_HEAD_DIM}")
        return cls(
            dim=dim,
            ffn_dim=ffn_dim,
            num_heads=dim // WAN_HEAD_DIM,
            num_layers=max(layer_ids) + 1 if layer_ids else 0,
            in_dim=in_dim,
            out_dim=head_out // math.prod(patch),
            text_dim=text_dim,
            freq_dim=freq_dim,
            patch_size=tuple(patch),
            qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
            cross_attn_norm="blocks.0.norm3.weight" in shapes,
            clip_dim=shapes["img_emb.proj.1.weight"][1],
            motion_attn_interval=motion_interval_from_keys(shapes, num_layers=max(layer_ids, default=-1) + 1),
        )


def motion_block_ids(keys) -> list[int]:
    """Sorted indices of the blocks that hold motion-attention keys."""
    return sorted({int(m.group(1)) for k in keys if (m := _MOTION_KEY.match(k))})


def motion_interval_from_keys(keys, num_layers: int = 0, default: int = 4) -> int:
    """The interval k of the motion blocks (blocks 0, k, 2k, ...) found in ``keys``; ``default`` if none.

    Raises ValueError when the motion blocks are not such an arithmetic series starting at block 0.
    """
    ids = motion_block_ids(keys)
    if not ids:
        return default
    if len(ids) > 1:
        interval = ids[1] - ids[0]
    else:  # only block 0: any interval beyond the last block
        interval = max(default, num_layers)
    if ids[0] != 0 or any(b - a != interval for a, b in zip(ids, ids[1:])):
        raise ValueError(f"motion attention in blocks {ids}: expected blocks 0, k, 2k, ... (every 4th as released)")
    return interval
