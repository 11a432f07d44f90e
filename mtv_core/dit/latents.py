"""Video latents: their format (which VAE, how they are normalised, their layout) and the sampler's wire value.

Two layouts exist: CogVideoX / MV-DiT-7B latents are frame-major ``(B, F, C, h, w)``; Wan / MV-DiT-17B
latents are channel-first ``(B, C, F, h, w)``. The DiTs see *normalised* latents: CogVideoX multiplies the
VAE posterior by a scaling factor (0.7), Wan subtracts a per-channel mean and multiplies by the inverse
per-channel std. ``LatentFormat`` carries all of that, so code that handles latents never needs a VAE's
constants; ``MTVLatent`` is what a sampler returns (the ``MTV_LATENT`` wire type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..constants import TEMPORAL_COMPRESSION

if TYPE_CHECKING:
    from .video_vae import VideoVAE

FRAMES_FIRST = "BFCHW"  # (batch, frames, channels, h, w): CogVideoX, MV-DiT-7B
CHANNELS_FIRST = "BCFHW"  # (batch, channels, frames, h, w): Wan, MV-DiT-17B


@dataclass(frozen=True)
class LatentFormat:
    """How a video VAE's latents look and are normalised for its DiT.

    ``normalize(raw) = raw * scaling_factor`` when there are no per-channel statistics, else
    ``(raw - mean) * (1 / std)`` per channel (Wan's and diffusers' formula); ``denormalize`` inverts it.
    """

    name: str  # the VAE family, e.g. "cogvideox", "wan2.1"
    channels: int = 16
    layout: str = FRAMES_FIRST
    spatial_compression: int = 8
    temporal_compression: int = TEMPORAL_COMPRESSION
    scaling_factor: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.layout not in (FRAMES_FIRST, CHANNELS_FIRST):
            raise ValueError(f"latent layout must be {FRAMES_FIRST} or {CHANNELS_FIRST}, got {self.layout!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("per-channel latent statistics need both mean and std")
        if self.mean is not None and not len(self.mean) == len(self.std) == self.channels:
            raise ValueError(f"latent mean/std need {self.channels} values each")

    @property
    def frame_axis(self) -> int:
        return 1 if self.layout == FRAMES_FIRST else 2

    @property
    def channel_axis(self) -> int:
        return 2 if self.layout == FRAMES_FIRST else 1

    def describe(self) -> str:
        how = "per-channel mean/std" if self.mean is not None else f"scale {self.scaling_factor:g}"
        return f"{self.name} latents ({self.layout}, {self.channels} channels, {how})"

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` video frames (4k + 1 grid of the causal VAEs)."""
        return (num_frames - 1) // self.temporal_compression + 1

    def latent_shape(self, num_frames: int, height: int, width: int, batch: int = 1) -> tuple[int, ...]:
        """Shape of the latents of ``num_frames`` frames of ``height`` x ``width`` pixels."""
        f = self.latent_frames(num_frames)
        h, w = height // self.spatial_compression, width // self.spatial_compression
        if self.layout == FRAMES_FIRST:
            return (batch, f, self.channels, h, w)
        return (batch, self.channels, f, h, w)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = [1] * like.ndim
        shape[self.channel_axis] = self.channels
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        inv_std = 1.0 / torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, inv_std

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """VAE posterior latents -> the DiT's latent space."""
        if self.mean is None:
            return raw * self.scaling_factor
        mean, inv_std = self._stats(raw)
        return (raw - mean) * inv_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """The DiT's latents -> what the VAE decodes."""
        if self.mean is None:
            return latents / self.scaling_factor
        mean, inv_std = self._stats(latents)
        return latents / inv_std + mean

    def frames(self, latents: torch.Tensor, start: int, count: int) -> torch.Tensor:
        """``count`` latent frames from ``start`` (a view)."""
        return latents.narrow(self.frame_axis, start, count)

    def frames_first(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) view of latents in either layout."""
        return latents if self.layout == FRAMES_FIRST else latents.transpose(1, 2)


@dataclass
class MTVLatent:
    """What an MTV sampler returns (the ``MTV_LATENT`` wire type): every window's latents and how to join them.

    ``samples`` holds one window per batch row in the format's layout and normalised space, float32 on the
    CPU. Window k covers frames ``starts[k] .. starts[k] + window - 1``; the output takes each window up to
    where the next begins, then the last window entirely (``num_frames`` in all). ``frames``, when the
    sampler already decoded every window (it decodes each window but the last to carry the overlap anyway),
    is the joined (num_frames, height, width, 3) float32 video in 0..1, decoded by the VAE ``decoded_by``
    names (``VideoVAE.identity``).
    """

    variant: str  # the DiT variant that made it, e.g. "7b"
    latent_format: LatentFormat
    samples: torch.Tensor
    starts: tuple[int, ...]
    window: int
    num_frames: int
    fps: float
    width: int
    height: int
    seed: int
    frames: torch.Tensor | None = None
    decoded_by: str | None = None

    def __post_init__(self) -> None:
        self.starts = tuple(int(s) for s in self.starts)
        if self.samples.shape[0] != len(self.starts):
            raise ValueError(f"{self.samples.shape[0]} latent windows for {len(self.starts)} window starts")
        if self.starts[-1] + self.window != self.num_frames:
            raise ValueError(f"the last window ({self.starts[-1]} + {self.window} frames) does not end at frame "
                             f"{self.num_frames}")

    def decoded_with(self, vae: VideoVAE) -> bool:
        """Whether ``frames`` already holds this video decoded by ``vae`` (decoding again would give the same)."""
        return self.frames is not None and self.decoded_by == vae.identity()
