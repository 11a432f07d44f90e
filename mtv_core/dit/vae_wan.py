"""The Wan2.1 VAE of MV-DiT-17B behind the pack's ``VideoVAE`` interface.

Latent format ``wan2.1``: channel-first ``(B, 16, F, H/8, W/8)``, F = (T - 1) // 4 + 1; the DiT sees
``(raw - mean) * (1 / std)`` per channel with Wan2.1's released tables (the same 16 + 16 values upstream hard-codes,
diffusers' ``AutoencoderKLWan`` config carries and ComfyUI's ``latent_formats.Wan21`` uses). ``encode`` / ``decode``
work on *raw* posterior latents as the interface says; ``encode_normalized`` / ``decode_normalized`` add the
normalisation.

Two implementations:

- ``WanVideoVAE``: the pack's own loader (``mtv_core.wan.vae.load_wan_vae``: ``Wan2.1_VAE.pth``, ComfyUI's
  ``wan_2.1_vae.safetensors`` or a diffusers folder), for the command line.
- ``FramesVideoVAE``: any VAE with the frames interface of ComfyUI's ``comfy.sd.VAE`` (``encode(frames)`` with
  frames (T, H, W, 3) in 0..1 -> raw latents (1, 16, F, h, w); ``decode(raw)`` -> (1, T, H, W, 3) in 0..1), i.e.
  the native **Load VAE** node's Wan VAE. ComfyUI's ``VAE.encode`` returns the raw posterior mean (its model
  samplers normalise with ``latent_formats.Wan21`` afterwards), so the same format applies.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..wan.vae import LATENT_FORMAT_NAME, WanVAE, wan_latent_format  # noqa: F401 (LATENT_FORMAT_NAME re-exported)
from .video_vae import VideoVAE

logger = logging.getLogger(__name__)

WAN21 = wan_latent_format()


class WanVideoVAE(VideoVAE):
    """``mtv_core.wan.vae.WanVAE`` (diffusers ``AutoencoderKLWan``) as a ``VideoVAE``; ``vae`` is the torch module."""

    def __init__(self, wan: WanVAE) -> None:
        self.wan = wan
        self.vae = wan.vae
        self.source = wan.source
        self.latent_format = wan.latent_format

    @property
    def dtype(self) -> torch.dtype:
        return self.wan.dtype

    @property
    def device(self) -> torch.device:
        return self.wan.device

    def to(self, device: torch.device | str) -> "WanVideoVAE":
        self.wan.to(device)
        return self

    def set_tiling(self, enabled: bool) -> None:
        self.wan.set_tiling(enabled)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """(1, 3, T, H, W) in [-1, 1] -> raw (1, 16, F, H/8, W/8) float32 (posterior sample, or its mode)."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, T, H, W), got {tuple(pixels.shape)}")
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return (dist.sample(generator=generator) if sample else dist.mode()).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw (1, 16, F, h, w) -> (1, 3, 4(F-1)+1, 8h, 8w) float32 pixels clamped to [-1, 1]."""
        channels = self.latent_format.channels
        if latents.ndim != 5 or latents.shape[1] != channels:
            raise ValueError(f"latents must be (B, {channels}, F, h, w), got {tuple(latents.shape)}")
        return self.vae.decode(latents.to(self.device, self.dtype)).sample.float().clamp(-1.0, 1.0)


def load_wan_video_vae(path: str | Path, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu",
                       tiling: bool = False) -> WanVideoVAE:
    """``mtv_core.wan.vae.load_wan_vae`` as a ``VideoVAE`` (the 17B variant's ``load_vae``)."""
    from ..wan.vae import load_wan_vae

    return WanVideoVAE(load_wan_vae(path, dtype=dtype, device=device, tiling=tiling))


class FramesVideoVAE(VideoVAE):
    """A Wan2.1 VAE with ComfyUI's frames interface (``comfy.sd.VAE``) as a ``VideoVAE``.

    The wrapped VAE places itself (ComfyUI loads it for each call); ``to`` does nothing. Only posterior modes are
    available (what ComfyUI's Wan VAE returns), which is all the 17B uses. ``source`` names it in errors.
    """

    latent_format = WAN21

    def __init__(self, native: Any, source: str = "native Wan VAE") -> None:
        self.native, self.source = native, source

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.native, "vae_dtype", torch.float32)

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.native, "device", "cpu"))

    def to(self, device: torch.device | str) -> "FramesVideoVAE":
        return self

    def identity(self) -> str:
        """The wrapped VAE's identity: a new wrapper of the same native VAE (another node) reuses its frames."""
        return f"{type(self.native).__name__}@{id(self.native):x}:{self.dtype}"

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """(1, 3, T, H, W) in [-1, 1] -> raw (1, 16, F, H/8, W/8) float32 posterior mode (``sample`` must be False)."""
        if sample:
            raise ValueError(f"{self.source}: only posterior modes are available (encode with sample=False)")
        if pixels.ndim != 5 or pixels.shape[:2] != (1, 3):
            raise ValueError(f"pixels must be (1, 3, T, H, W), got {tuple(pixels.shape)}")
        frames = (pixels[0].permute(1, 2, 3, 0).float() * 0.5 + 0.5).clamp(0.0, 1.0)  # (T, H, W, 3), ComfyUI's IMAGE
        latents = self.native.encode(frames)
        expected = self.latent_format.latent_shape(frames.shape[0], frames.shape[1], frames.shape[2])
        if tuple(latents.shape) != expected:
            raise ValueError(f"{self.source} encoded {tuple(frames.shape)} frames into latents of shape "
                             f"{tuple(latents.shape)}, expected {expected}: it is not the Wan2.1 VAE")
        return latents.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw (1, 16, F, h, w) -> (1, 3, T, 8h, 8w) float32 pixels in [-1, 1]."""
        channels = self.latent_format.channels
        if latents.ndim != 5 or latents.shape[:2] != (1, channels):
            raise ValueError(f"latents must be (1, {channels}, F, h, w), got {tuple(latents.shape)}")
        frames = self.native.decode(latents)
        while frames.ndim > 4 and frames.shape[0] == 1:  # (1, T, H, W, 3) for video latents
            frames = frames[0]
        return (frames.float().permute(3, 0, 1, 2)[None] * 2.0 - 1.0).clamp(-1.0, 1.0)
