"""4DMoT configuration, inferred from a state dict so that other trained sizes load too.

Only what the weights cannot tell (time/joint resampling rates, chunk sizes, the ResBlock
dilation base) comes from defaults, which are the released values, or from the ``config``
metadata our own safetensors files carry.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ..limits import MAX_LAYERS, MAX_WIDTH, check_whole_number

# A key every 4DMoT checkpoint has; used to recognise (and reject) other checkpoints.
SIGNATURE_KEYS = ("encoder.conv_in.weight", "decoder.conv_out.weight", "vq.codebook")
# Fields the weights determine (compared with a stored config before a model is built), and the range of
# every integer field (a stored config comes from the file: it is checked before anything is allocated).
SHAPE_FIELDS = ("in_channels", "encoder_channels", "decoder_channels", "code_dim", "num_codes", "num_res_blocks")
_RANGES = {
    "in_channels": (1, MAX_WIDTH), "encoder_channels": (1, MAX_WIDTH), "decoder_channels": (1, MAX_WIDTH),
    "code_dim": (1, MAX_WIDTH), "num_codes": (1, 1 << 24), "num_res_blocks": (0, MAX_LAYERS),
    "downsample_time": (1, 16), "downsample_joint": (1, 16), "upsample_time": (1, 16), "upsample_joint": (1, 16),
    "norm_groups": (1, MAX_WIDTH), "dilation_base": (1, 1 << 20), "num_joints": (1, 1024),
    "encoder_chunk": (1, 1 << 16), "decoder_chunk": (1, 1 << 16),
}  # fmt: skip


def _checked_int(name: str, value: Any) -> int:
    return check_whole_number(value, name, *_RANGES[name], what="4DMoT config")


@dataclass(frozen=True)
class TokenizerConfig:
    """Constructor arguments of :class:`~mtv_core.tokenizer.model.MotionVQVAE`.

    Defaults are the released 4DMoT: 3 -> 128 -> 512 -> 3072 channels, time downsampled 2 x 2
    keeping frame 0, joints kept, an 8192 x 3072 codebook, a mirrored decoder.
    """

    in_channels: int = 3
    encoder_channels: tuple[int, int] = (128, 512)
    decoder_channels: tuple[int, int] = (512, 128)
    code_dim: int = 3072
    num_codes: int = 8192
    num_res_blocks: int = 3
    downsample_time: tuple[int, int] = (2, 2)
    downsample_joint: tuple[int, int] = (1, 1)
    upsample_time: tuple[int, int] = (2, 2)
    upsample_joint: tuple[int, int] = (1, 1)
    norm_groups: int = 32
    # ResBlock dilation d = max(1, dilation_base // out_channels - 1): 3 at 128 channels, 1 at 512.
    dilation_base: int = 512
    num_joints: int = 24
    encoder_chunk: int = 8  # frames per encoder chunk; the first chunk absorbs T mod encoder_chunk
    decoder_chunk: int = 2  # latent frames per decoder chunk; the first absorbs the remainder

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (tuple, list)):
                if len(value) != 2:
                    raise ValueError(f"4DMoT config: {f.name} needs 2 values, got {value!r:.60}")
                value = tuple(_checked_int(f.name, v) for v in value)
            elif f.name in ("encoder_channels", "decoder_channels", "downsample_time", "downsample_joint",
                            "upsample_time", "upsample_joint"):
                raise ValueError(f"4DMoT config: {f.name} needs 2 values, got {value!r:.60}")
            else:
                value = _checked_int(f.name, value)
            object.__setattr__(self, f.name, value)
        for ch in self.encoder_channels + self.decoder_channels:
            if ch % self.norm_groups:
                raise ValueError(f"4DMoT config: {ch} channels are not divisible by {self.norm_groups} norm groups")
        if self.encoder_chunk < 1 or self.decoder_chunk < 1:
            raise ValueError("4DMoT config: chunk sizes must be >= 1")

    @property
    def time_compression(self) -> int:
        return self.downsample_time[0] * self.downsample_time[1]

    @property
    def latent_joints(self) -> int:
        """Joints per latent frame (24 for the released model: joints are kept)."""
        j = self.num_joints
        for rate in self.downsample_joint:
            j = (j + 2 - 3) // rate + 1  # Conv1d k=3, padding 1, stride = rate
        return j

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames the encoder gives for ``num_frames`` input frames (13 for 49)."""
        return sum(_down_frames(n, self.downsample_time) for n in chunk_sizes(num_frames, self.encoder_chunk))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TokenizerConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"4DMoT config: unknown fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], **overrides: Any) -> "TokenizerConfig":
        """Infer the sizes from state-dict key shapes; rates and chunking from ``overrides`` or defaults.

        Raises ValueError naming the missing keys when ``shapes`` is not a 4DMoT state dict.
        """
        missing = [k for k in SIGNATURE_KEYS if k not in shapes]
        if missing:
            raise ValueError(f"not a 4DMoT motion tokenizer state dict: missing {', '.join(missing)}")
        codebook = tuple(shapes["vq.codebook"])
        enc_in = tuple(shapes["encoder.conv_in.weight"])
        dec_out = tuple(shapes["decoder.conv_out.weight"])
        dec_in = tuple(shapes.get("decoder.conv_in.weight", ()))
        mid_enc = tuple(shapes.get("encoder.resnet2.block.2.weight", ()))
        mid_dec = tuple(shapes.get("decoder.resnet2.block.2.weight", ()))
        if not (mid_enc and mid_dec and dec_in) or len(codebook) != 2 or min(len(enc_in), len(dec_out)) < 2:
            raise ValueError("not a 4DMoT motion tokenizer state dict: no encoder/decoder resnet2 or bad codebook")
        if dec_out[0] != enc_in[1]:
            raise ValueError(f"4DMoT decoder writes {dec_out[0]} channels but the encoder reads {enc_in[1]}")
        pattern = re.compile(r"encoder\.resnet1\.(\d{1,6})\.")
        blocks = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
        if blocks and blocks != set(range(len(blocks))):
            raise ValueError(f"4DMoT encoder res-block indices are not 0..{len(blocks) - 1}")
        inferred = dict(
            in_channels=enc_in[1],
            encoder_channels=(enc_in[0], mid_enc[0]),
            decoder_channels=(dec_in[0], mid_dec[0]),
            code_dim=codebook[1],
            num_codes=codebook[0],
            num_res_blocks=len(blocks) or 3,
        )
        inferred.update(overrides)
        return cls(**inferred)


def chunk_sizes(length: int, chunk: int) -> list[int]:
    """Upstream chunking: ``length // chunk`` chunks of ``chunk``, the first absorbing ``length % chunk``.

    Shorter sequences (upstream would fail on them) form one chunk.
    """
    if length < 1:
        raise ValueError(f"cannot chunk {length} frames")
    count = length // chunk
    if count == 0:
        return [length]
    return [chunk + length % chunk] + [chunk] * (count - 1)


def _down_frames(n: int, rates: tuple[int, ...]) -> int:
    for rate in rates:
        if rate > 1:
            n = 1 + (n - 1) // rate if n % 2 else n // 2
    return n
