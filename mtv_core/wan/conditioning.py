"""What MV-DiT-17B is conditioned on besides noise, text and motion: ``y``, ``clip_fea`` and ``seq_len``.

Upstream (``infer_17b.py`` + ``MTVCrafterPipeline17B``), Wan-Fun-InP style:

* window 0: the pixel mask is 0 on frame 0 and 1 after it; the VAE input is the reference in frame 0 and
  zeros (mid-grey) after it. ``y`` (1, 20, F, h, w) = 4 mask channels (the pixel mask with frame 0 repeated
  4x, viewed as F latent frames x 4 channels, inverted, trilinearly resized: 1 on latent frame 0) + the 16
  normalised latent channels of that video. CLIP sees the reference after a *truncating* uint8 round trip
  (``np.uint8((x * 0.5 + 0.5) * 255)``), which the reference data reproduces.
* window k > 0: the previous window's last ``overlap`` frames (in [0, 1]) then zeros form the VAE input;
  ``y``'s mask channels are 1 on the overlap's ``(overlap - 1) // 4 + 1`` latent frames and its latent
  channels encode that video (the reference no longer enters ``y``). CLIP sees the last overlap frame.
* ``seq_len`` = ceil(F * h * w / (patch_h * patch_w)).

Layouts: pixels channel-first (1, 3, T, H, W); ``pixel_mask`` (1, T, 1, H, W) uint8 (1 = to generate), as
upstream passes it; ``clip_input`` (3, 1, H, W) in [-1, 1]; ``clip_fea`` (1, tokens, width) float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .vae import TEMPORAL_COMPRESSION, latent_frames

PATCH_SIZE_17B = (1, 2, 2)


@dataclass
class Conditioning17B:
    """The transformer's conditioning for one window, with the intermediates upstream computes."""

    y: torch.Tensor  # (1, 4 + 16, F, h, w) float32
    clip_fea: torch.Tensor  # (1, tokens, width) float32
    seq_len: int
    pixel_mask: torch.Tensor  # (1, T, 1, H, W) uint8, 0 = the reference frame
    vae_input: torch.Tensor  # (1, 3, T, H, W) in [-1, 1], the video encoded into y's latent channels
    clip_input: torch.Tensor  # (3, 1, H, W) in [-1, 1]
    clip_image_uint8: torch.Tensor | None  # (H, W, 3) uint8 for window 0, else None


def seq_len_17b(num_frames: int, height: int, width: int, patch_size: tuple[int, int, int] = PATCH_SIZE_17B) -> int:
    """Transformer tokens of a window: ceil(F * (H/8) * (W/8) / (p_h * p_w))."""
    tokens = latent_frames(num_frames) * (height // 8) * (width // 8)
    return -(-tokens // (patch_size[1] * patch_size[2]))


def _check_frames(num_frames: int) -> None:
    if num_frames < 1 or (num_frames - 1) % TEMPORAL_COMPRESSION:
        raise ValueError(f"num_frames must be 4k + 1, got {num_frames}")


def reference_pixel_mask(num_frames: int, height: int, width: int) -> torch.Tensor:
    """(1, T, 1, H, W) uint8: 0 on frame 0 (the reference), 1 on the frames to generate."""
    mask = torch.ones((1, num_frames, 1, height, width), dtype=torch.uint8)
    mask[:, 0] = 0
    return mask


def latent_mask(pixel_mask: torch.Tensor, latent_size: tuple[int, int, int]) -> torch.Tensor:
    """(1, T, 1, H, W) pixel mask (1 = generate) -> (1, 4, F, h, w) float32 mask channels (1 = given).

    Frame 0 repeated 4x, the T + 3 frames viewed as F latent frames x 4 channels, inverted and resized
    trilinearly (align_corners False), the first latent frame on its own, as upstream's ``resize_mask``.
    """
    batch, frames, _, height, width = pixel_mask.shape
    m = pixel_mask.float().permute(0, 2, 1, 3, 4)  # (B, 1, T, H, W)
    m = torch.cat([m[:, :, :1].repeat_interleave(TEMPORAL_COMPRESSION, dim=2), m[:, :, 1:]], dim=2)
    m = m.view(batch, m.shape[2] // TEMPORAL_COMPRESSION, TEMPORAL_COMPRESSION, height, width).transpose(1, 2)
    m = 1 - m
    f, h, w = latent_size
    first = F.interpolate(m[:, :, :1], size=(1, h, w), mode="trilinear", align_corners=False)
    if f == 1:
        return first
    rest = F.interpolate(m[:, :, 1:], size=(f - 1, h, w), mode="trilinear", align_corners=False)
    return torch.cat([first, rest], dim=2)


def clip_image_uint8(ref_pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) reference in [-1, 1] -> (H, W, 3) uint8 by upstream's truncating conversion."""
    values = (ref_pixels.float().permute(1, 2, 0) * 0.5 + 0.5) * 255
    return values.clamp(0, 255).floor().to(torch.uint8)


def _as_reference(ref_pixels: torch.Tensor) -> torch.Tensor:
    ref = ref_pixels
    while ref.ndim > 3 and ref.shape[0] == 1:
        ref = ref[0]
    if ref.ndim != 3 or ref.shape[0] != 3:
        raise ValueError(f"reference must be (3, H, W) (or with leading 1-dims), got {tuple(ref_pixels.shape)}")
    return ref.float()


def _y(vae, video_pm1: torch.Tensor, pixel_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    latents = vae.encode(video_pm1)
    mask = latent_mask(pixel_mask, tuple(latents.shape[2:])).to(latents.device)
    return torch.cat([mask, latents], dim=1), latents


def first_window_conditioning(
    vae, clip, ref_pixels: torch.Tensor, num_frames: int, patch_size: tuple[int, int, int] = PATCH_SIZE_17B
) -> Conditioning17B:
    """Window 0: ``ref_pixels`` (3, H, W) in [-1, 1] at the output size; ``vae`` a :class:`WanVAE`,
    ``clip`` a :class:`ClipVisionEncoder`."""
    _check_frames(num_frames)
    ref = _as_reference(ref_pixels)
    _, height, width = ref.shape
    pixel_mask = reference_pixel_mask(num_frames, height, width)
    keep = (1 - pixel_mask).to(ref.device, ref.dtype)  # (1, T, 1, H, W)
    vae_input = (ref[None, None] * keep).permute(0, 2, 1, 3, 4)  # reference at frame 0, zeros after
    y, _ = _y(vae, vae_input, pixel_mask)
    image_uint8 = clip_image_uint8(ref)
    clip_input = ((image_uint8.permute(2, 0, 1).float() / 255 - 0.5) / 0.5)[:, None]
    clip_fea = clip.encode(clip_input[:, 0][None])
    return Conditioning17B(y=y, clip_fea=clip_fea, seq_len=seq_len_17b(num_frames, height, width, patch_size),
                           pixel_mask=pixel_mask, vae_input=vae_input, clip_input=clip_input,
                           clip_image_uint8=image_uint8)


def next_window_conditioning(
    vae, clip, previous_frames: torch.Tensor, num_frames: int,
    patch_size: tuple[int, int, int] = PATCH_SIZE_17B,
) -> Conditioning17B:
    """Window k > 0: ``previous_frames`` (1, 3, overlap, H, W) in [0, 1], the previous window's last frames."""
    _check_frames(num_frames)
    if previous_frames.ndim != 5 or previous_frames.shape[:2] != (1, 3):
        raise ValueError(f"previous_frames must be (1, 3, overlap, H, W), got {tuple(previous_frames.shape)}")
    overlap, height, width = previous_frames.shape[2:]
    if not 1 <= overlap <= num_frames:
        raise ValueError(f"overlap {overlap} must be between 1 and num_frames {num_frames}")
    prev = previous_frames.float()
    video = torch.cat([prev, prev[:, :, -1:].expand(-1, -1, num_frames - overlap, -1, -1)], dim=2) * 2 - 1
    video[:, :, overlap:] = 0
    pixel_mask = reference_pixel_mask(num_frames, height, width)
    y, _ = _y(vae, video, pixel_mask)
    y[:, :4, : latent_frames(overlap)] = 1
    clip_input = video[0, :, overlap - 1: overlap].clone()
    clip_fea = clip.encode(clip_input[:, 0][None])
    return Conditioning17B(y=y, clip_fea=clip_fea, seq_len=seq_len_17b(num_frames, height, width, patch_size),
                           pixel_mask=pixel_mask, vae_input=video, clip_input=clip_input, clip_image_uint8=None)
