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

from .rope import grid_rope, joint_rope


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
    return grid_rope(latent_frames, grid_h, grid_w, wan_rope_bands(head_dim))


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
    return joint_rope(latent_frames, joint_mean_mm, dim_t, dim_xyz)
