"""Rotary position tables of MV-DiT-7B (interleaved pairs, theta 10000, float32).

Each table pair is (cos, sin) of shape (tokens, head_dim); pair i of a band of width D rotates with frequency
1 / theta**(2i / D), and cos/sin are repeated x2 so dims (2i, 2i+1) form one rotated pair.

- Vision (queries and keys of self-attention, queries of motion attention): bands t | h | w of
  head_dim/4 | 3 head_dim/8 | 3 head_dim/8 (16 | 24 | 24 at head_dim 64) on the plain integer latent grid
  t = 0..F-1, h = 0..H/16-1, w = 0..W/16-1 (upstream passes the crop region (0,0)-(gh,gw), unlike stock
  CogVideoX-5B's 45x30 base-grid mapping). Token order: frame, row, column.
- Motion (keys of motion attention): bands t | x | y | z of head_dim/4 each. t is the latent frame index
  (same frequencies as the vision t band); x/y/z are the dataset-mean joint position in millimetres minus the
  per-axis mean over the 24 joints, fixed per joint. Token order: frame-major, joint-minor (f * 24 + j).
"""

from __future__ import annotations

import numpy as np
import torch

THETA = 10000.0


def _rope_1d(dim: int, positions: torch.Tensor, theta: float = THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(positions), dim) cos/sin for one band; positions float32."""
    if dim % 2:
        raise ValueError(f"RoPE band width must be even, got {dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim))
    angles = torch.outer(positions.to(torch.float32), freqs)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def grid_rope(latent_frames: int, grid_h: int, grid_w: int, bands: tuple[int, int, int]
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE on the integer patch grid with band widths ``bands`` = (t, h, w) -> (cos, sin), each
    (F*gh*gw, sum(bands)) float32, token order frame, row, column."""
    dim_t, dim_h, dim_w = bands
    tables = (
        _rope_1d(dim_t, torch.arange(latent_frames, dtype=torch.float32)),
        _rope_1d(dim_h, torch.arange(grid_h, dtype=torch.float32)),
        _rope_1d(dim_w, torch.arange(grid_w, dtype=torch.float32)),
    )
    out = []
    for part in (0, 1):  # cos, sin
        t, h, w = (table[part] for table in tables)
        table = torch.cat(
            [
                t[:, None, None, :].expand(-1, grid_h, grid_w, -1),
                h[None, :, None, :].expand(latent_frames, -1, grid_w, -1),
                w[None, None, :, :].expand(latent_frames, grid_h, -1, -1),
            ],
            dim=-1,
        )
        out.append(table.reshape(latent_frames * grid_h * grid_w, sum(bands)))
    return out[0], out[1]


def joint_rope(latent_frames: int, joint_mean_mm: np.ndarray, dim_t: int, dim_xyz: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """4D RoPE for F x joints motion tokens with bands t | x | y | z of ``dim_t`` | ``dim_xyz`` x 3 -> (cos, sin),
    each (F*joints, dim_t + 3 dim_xyz) float32, token order frame-major, joint-minor. t is the latent frame index,
    x/y/z the centred dataset-mean joint positions in mm (``motion_rope_positions``)."""
    positions = motion_rope_positions(joint_mean_mm)
    num_joints = positions.shape[0]
    t_cos, t_sin = _rope_1d(dim_t, torch.arange(latent_frames, dtype=torch.float32))
    axes = [_rope_1d(dim_xyz, torch.from_numpy(np.ascontiguousarray(positions[:, a]))) for a in range(3)]
    out = []
    for part, t in ((0, t_cos), (1, t_sin)):
        spatial = torch.cat([axis[part] for axis in axes], dim=-1)  # (joints, 3 * dim_xyz)
        table = torch.cat(
            [t[:, None, :].expand(-1, num_joints, -1), spatial[None].expand(latent_frames, -1, -1)], dim=-1
        )
        out.append(table.reshape(latent_frames * num_joints, dim_t + 3 * dim_xyz))
    return out[0], out[1]


def vision_rope_7b(
    latent_frames: int, grid_h: int, grid_w: int, head_dim: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE for F x gh x gw patch tokens -> (cos, sin), each (F*gh*gw, head_dim) float32."""
    dim_t, dim_hw = head_dim // 4, head_dim // 8 * 3
    if dim_t + 2 * dim_hw != head_dim:
        raise ValueError(f"head_dim {head_dim} cannot be split into t/h/w RoPE bands")
    return grid_rope(latent_frames, grid_h, grid_w, (dim_t, dim_hw, dim_hw))


def motion_rope_positions(joint_mean_mm: np.ndarray) -> np.ndarray:
    """(24, 3) dataset-mean joints in mm -> (24, 3) float32 positions centred per axis over the joints."""
    mean = np.asarray(joint_mean_mm, dtype=np.float32)
    if mean.ndim != 2 or mean.shape[1] != 3:
        raise ValueError(f"joint_mean_mm must be (joints, 3) millimetres, got shape {mean.shape}")
    return np.stack([mean[:, a] - mean[:, a].mean() for a in range(3)], axis=1).astype(np.float32)


def motion_rope_7b(
    latent_frames: int, joint_mean_mm: np.ndarray, head_dim: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """4D RoPE for F x 24 motion tokens -> (cos, sin), each (F*24, head_dim) float32."""
    band = head_dim // 4
    if band % 2 or 4 * band != head_dim:
        raise ValueError(f"head_dim {head_dim} cannot be split into t/x/y/z RoPE bands")
    return joint_rope(latent_frames, joint_mean_mm, band, band)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, heads, L, D) by tables (L, D); computed in float32, returned in x.dtype."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    rotated = torch.stack([-x_odd, x_even], dim=-1).flatten(-2)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
