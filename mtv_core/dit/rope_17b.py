"""Rotary position tables of MV-DiT-17B (interleaved pairs, theta 10000, float32).

Tables are (cos, sin) pairs of shape (tokens, head_dim) in the convention of ``rope.apply_rope``: pair i of a
band of width D rotates with frequency 1 / theta**(2i / D) and dims (2i, 2i+1) form one rotated pair (Wan's
complex multiplication of ``view_as_complex`` pairs is the same rotation).

- Vision (queries and keys of self-attention, queries of motion attention): Wan's 3D RoPE with bands
  t | h | w of head_dim - 4 (head_dim // 6) | 2 (head_dim // 6) | 2 (head_dim // 6) = 44 | 42 | 42 at head_dim 128,
  on the integer patch grid (frame, row, column). Token order: frame, row, column.
- Motion (keys of motion attention): t | x | y | z of 44 | 28 | 28 | 28 at head_dim 128: the t band equals the
  vision t band (latent frame index), x/y/z are the dataset-mean joint positions in millimetres minus their
  per-axis mean over the joints, fixed per joint. Token order: frame-major, joint-minor (f * 24 + j).

The tables stay float32 whatever the model dtype: the motion x/y/z positions span hundreds of millimetres
with frequencies up to 1 rad/mm, which bf16 angles or tables cannot represent.
"""

from __future__ import annotations

import numpy as np
import torch

from .rope import _rope_1d, motion_rope_positions


def wan_rope_bands(head_dim: int) -> tuple[int, int, int]:
    """Widths of Wan's t / h / w RoPE bands for ``head_dim`` (44 / 42 / 42 at 128)."""
    hw = 2 * (head_dim // 6)
    t = head_dim - 2 * hw
    if head_dim % 2 or t % 2 or t <= 0:
        raise ValueError(f"head_dim {head_dim} cannot be split into Wan's t/h/w RoPE bands")
    return t, hw, hw


def vision_rope_17b(
    latent_frames: int, grid_h: int, grid_w: int, head_dim: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan 3D RoPE for F x gh x gw patch tokens -> (cos, sin), each (F*gh*gw, head_dim) float32."""
    dim_t, dim_h, dim_w = wan_rope_bands(head_dim)
    bands = (
        _rope_1d(dim_t, torch.arange(latent_frames, dtype=torch.float32)),
        _rope_1d(dim_h, torch.arange(grid_h, dtype=torch.float32)),
        _rope_1d(dim_w, torch.arange(grid_w, dtype=torch.float32)),
    )
    out = []
    for part in (0, 1):  # cos, sin
        t, h, w = (band[part] for band in bands)
        table = torch.cat(
            [
                t[:, None, None, :].expand(-1, grid_h, grid_w, -1),
                h[None, :, None, :].expand(latent_frames, -1, grid_w, -1),
                w[None, None, :, :].expand(latent_frames, grid_h, -1, -1),
            ],
            dim=-1,
        )
        out.append(table.reshape(latent_frames * grid_h * grid_w, head_dim))
    return out[0], out[1]


def motion_rope_17b(
    latent_frames: int, joint_mean_mm: np.ndarray, head_dim: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """4D RoPE for F x joints motion tokens -> (cos, sin), each (F*joints, head_dim) float32.

    ``joint_mean_mm``: (joints, 3) dataset-mean joint positions in mm (``mtv_core.motion.load_stats``).
    """
    dim_t = wan_rope_bands(head_dim)[0]
    dim_xyz = (head_dim - dim_t) // 3
    if 3 * dim_xyz != head_dim - dim_t or dim_xyz % 2:
        raise ValueError(f"head_dim {head_dim} cannot be split into t/x/y/z RoPE bands")
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
        out.append(table.reshape(latent_frames * num_joints, head_dim))
    return out[0], out[1]
