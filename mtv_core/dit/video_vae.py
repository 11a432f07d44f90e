"""The video-VAE interface the pipelines use (the ``MTV_VAE`` wire type), and frames <-> pixels.

A VAE implementation (CogVideoX in ``vae.py``; Wan for the 17B) subclasses ``VideoVAE``: ``encode`` /
``decode`` work on *raw* posterior latents in the layout of its ``latent_format``; ``encode_normalized`` /
``decode_normalized`` add the format's normalisation (what the DiTs see). Layouts:

    frames  (T, H, W, 3) float32 in 0..1 (ComfyUI IMAGE batches)
    pixels  (1, 3, T, H, W) float in [-1, 1], T = 4k + 1, at the VAE
    latents ``latent_format.latent_shape(T, H, W)``
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .latents import LatentFormat


def frames_to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) in 0..1 -> (1, 3, T, H, W) in [-1, 1]."""
    return (frames.permute(3, 0, 1, 2)[None] * 2.0 - 1.0).contiguous()


def pixels_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, T, H, W) in [-1, 1] -> (T, H, W, 3) float32 in 0..1 on CPU."""
    return (pixels[0].permute(1, 2, 3, 0).float().cpu() * 0.5 + 0.5).clamp(0.0, 1.0)


class VideoVAE(ABC):
    """A loaded video VAE. Subclasses set ``latent_format`` and ``source`` and implement the abstract methods."""

    latent_format: LatentFormat
    source: str = ""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @abstractmethod
    def to(self, device: torch.device | str) -> "VideoVAE": ...

    @abstractmethod
    def encode(self, pixels: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
        """(1, 3, T, H, W) pixels in [-1, 1] -> raw float32 latents (posterior sample with ``generator``, or its
        mode when ``sample`` is False) in the layout of ``latent_format``."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents -> (1, 3, T, H, W) float32 pixels in [-1, 1]."""

    def encode_normalized(self, pixels: torch.Tensor, generator: torch.Generator | None = None,
                          sample: bool = False) -> torch.Tensor:
        """Pixels -> latents in the DiT's (normalised) space."""
        return self.latent_format.normalize(self.encode(pixels, generator=generator, sample=sample))

    def decode_normalized(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the DiT's space -> pixels."""
        return self.decode(self.latent_format.denormalize(latents))

    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents in the DiT's space -> (T, H, W, 3) float32 frames in 0..1 on the CPU."""
        return pixels_to_frames(self.decode_normalized(latents))

    def identity(self) -> str:
        """Names this loaded VAE (object and weights), to tell whether frames were decoded by it."""
        return f"{type(self).__name__}@{id(self):x}:{self.source}:{self.dtype}"


class DiffusersVAEModule:
    """Holds a diffusers autoencoder as ``vae`` (eval mode, no gradients) and answers for its dtype, device, moves,
    tiling and slicing: what the CogVideoX and Wan wrappers share."""

    def __init__(self, vae: torch.nn.Module, source: str = "", tiling: bool = False, slicing: bool = True) -> None:
        self.vae = vae.eval().requires_grad_(False)
        self.source = source
        self.set_tiling(tiling)
        if slicing:
            self.vae.enable_slicing()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def to(self, device: torch.device | str):
        self.vae.to(device)
        return self

    def set_tiling(self, enabled: bool) -> None:
        """diffusers' spatial tiling of the autoencoder, on or off."""
        if enabled:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
