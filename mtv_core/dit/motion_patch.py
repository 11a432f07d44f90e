"""MV-DiT-17B's motion layers on their own, to add motion to a Wan2.1 I2V-14B / Fun-14B-InP transformer.

MTVCrafter's 17B is a frozen Wan2.1 I2V transformer plus, in every 4th block, a motion attention between the
cross-attention and the FFN (only these layers were trained):

    x = x + strength * motion_attn(norm4(x), motion tokens)      (ungated; strength 1 is upstream)

``MotionAdapter17B`` holds exactly those layers under their checkpoint names (``blocks.N.norm4.*``,
``blocks.N.motion_attn.*``), so an adapter file or the motion tensors of a full MV-DiT-17B load into it
strictly. Its layers run the same ``transformer_17b.motion_attention`` as the full model (upstream's key
reshape included); the caller supplies the vision-RoPE rotation of the queries and the attention function,
so a host transformer (ComfyUI's native Wan) can use its own.

``MotionTimeline`` addresses the motion tokens of an ``MTV_MOTION`` by video frame: a call that covers the
frames of one tokenizer window gets that window's tokens exactly (each window is encoded on its own, as in
training); other spans (context windows, offsets between windows) are cut from the windows stitched in time.
Token layout: (latent frames * 24, C), frame-major / joint-minor; latent frame j of a span starting at video
frame s covers frames s + 4j - 3 .. s + 4j (frame s alone for j = 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError
from ..tokenizer.tokens import MotionTokens
from .config_17b import WAN_HEAD_DIM
from .loading_17b import MotionLayersInfo, read_motion_layers
from ..constants import NUM_JOINTS, TEMPORAL_COMPRESSION
from .rope_17b import motion_rope_17b
from .transformer_17b import MotionAttention, RopeTables, motion_attention, pad_motion_tokens

logger = logging.getLogger(__name__)

class MotionLayer17B(nn.Module):
    """The motion layers of one block: ``norm4`` (affine LayerNorm) and ``motion_attn``."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, cross_attn_norm: bool, eps: float, operations) -> None:
        super().__init__()
        self.norm4 = (
            operations.LayerNorm(dim, eps=eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        )
        self.motion_attn = MotionAttention(dim, num_heads, qk_norm, eps, operations)

    def forward(
        self,
        x: torch.Tensor,
        motion: torch.Tensor,
        rotate_q: Callable[[torch.Tensor], torch.Tensor],
        k_rope: RopeTables,
        attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """x (B, L, dim) residual stream -> (B, L, dim) update ``motion_attn(norm4(x), motion)``."""
        return motion_attention(self.motion_attn, self.norm4(x), motion, rotate_q, k_rope, attend)


class MotionAdapter17B(nn.Module):
    """The motion layers of MV-DiT-17B, keyed ``blocks.N.*`` as in the checkpoints.

    ``operations``: the layer namespace (``torch.nn``, or ComfyUI's ``comfy.ops.manual_cast`` so weights are
    cast to the activations' dtype and device per call).
    """

    def __init__(self, info: MotionLayersInfo, eps: float = 1e-6, operations=nn) -> None:
        super().__init__()
        self.info = info
        self.blocks = nn.ModuleDict({
            str(i): MotionLayer17B(info.dim, info.num_heads, info.qk_norm, info.cross_attn_norm, eps, operations)
            for i in info.block_ids
        })

    @property
    def block_ids(self) -> tuple[int, ...]:
        return self.info.block_ids

    def layer(self, index: int) -> MotionLayer17B:
        return self.blocks[str(index)]


def load_motion_adapter(
    path: str | Path, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = "cpu", operations=nn
) -> MotionAdapter17B:
    """The motion layers of ``path`` (an adapter or a full MV-DiT-17B, any precision) in ``dtype`` on ``device``.

    Built on the meta device; the tensors read from the mapped file are assigned, not copied.
    """
    tensors, info = read_motion_layers(path, dtype, device)
    with torch.device("meta"):
        adapter = MotionAdapter17B(info, operations=operations)
    missing, unexpected = adapter.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise CheckpointError(f"{info.path}: motion layers do not match the expected layout; missing "
                              f"{sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")
    logger.info("motion layers of %s: width %d, blocks %s, %s", info.path, info.dim,
                ",".join(map(str, info.block_ids)), dtype)
    return adapter.eval().requires_grad_(False)


def check_adapter_fits(info: MotionLayersInfo, dim: int, num_layers: int, what: str = "the model") -> None:
    """ValueError naming the adapter when its layers do not fit a Wan transformer of ``dim`` x ``num_layers``."""
    if info.dim != dim:
        raise ValueError(f"{info.path}: motion layers of width {info.dim} do not fit {what} of width {dim} "
                         f"({info.dim // WAN_HEAD_DIM} vs {dim // WAN_HEAD_DIM} heads)")
    if info.block_ids[-1] >= num_layers:
        raise ValueError(f"{info.path}: motion layers up to block {info.block_ids[-1]}, but {what} has "
                         f"{num_layers} blocks")
    if info.num_layers is not None and info.num_layers != num_layers:
        raise ValueError(f"{info.path}: motion layers of a {info.num_layers}-block model; {what} has {num_layers}")


@dataclass
class _Window:
    start: int  # first video frame
    tokens: torch.Tensor  # (latent frames * 24, C) float32
    indices: torch.Tensor | None  # (latent frames * 24,) int64 codebook indices, if known

    @property
    def latent_frames(self) -> int:
        return self.tokens.shape[0] // NUM_JOINTS


class MotionTimeline:
    """The motion tokens of an ``MTV_MOTION``, addressed by video frame and latent frame."""

    def __init__(self, windows: Sequence[tuple[int, torch.Tensor, torch.Tensor | None]]) -> None:
        if not windows:
            raise ValueError("motion holds no token windows")
        self.windows = [
            _Window(int(s), t.detach().reshape(-1, t.shape[-1]).float().cpu(),
                    None if i is None else i.detach().reshape(-1).cpu())
            for s, t, i in windows
        ]
        widths = {w.tokens.shape[-1] for w in self.windows}
        if len(widths) != 1:
            raise ValueError(f"motion windows of different token widths {sorted(widths)}")
        self.width = widths.pop()
        for w in self.windows:
            if w.tokens.shape[0] % NUM_JOINTS or w.start % TEMPORAL_COMPRESSION:
                raise ValueError(f"motion window at frame {w.start} with {w.tokens.shape[0]} tokens: expected a "
                                 f"multiple of {NUM_JOINTS} tokens starting on a frame multiple of {TEMPORAL_COMPRESSION}")
        self.latent_frames = max(w.start // TEMPORAL_COMPRESSION + w.latent_frames for w in self.windows)

    @classmethod
    def from_motion(cls, motion: MotionTokens) -> "MotionTimeline":
        return cls([(w.start, w.tokens[0], w.indices[0] if w.indices is not None else None) for w in motion.windows])

    @property
    def num_frames(self) -> int:
        """Video frames the tokens cover (4k + 1)."""
        return TEMPORAL_COMPRESSION * (self.latent_frames - 1) + 1

    def _rows(self, start_frame: int, latent_indices: Sequence[int]) -> list[tuple[_Window, int]]:
        """(window, latent frame in it) for each latent frame of the span (see ``tokens``)."""
        indices = [int(i) for i in latent_indices]
        if start_frame < 0 or start_frame % TEMPORAL_COMPRESSION:
            raise ValueError(f"start frame {start_frame} must be a non-negative multiple of {TEMPORAL_COMPRESSION}")
        if not indices or min(indices) < 0:
            raise ValueError(f"latent frame indices {indices[:8]} must be non-negative and not empty")
        for w in self.windows:
            if w.start == start_frame and max(indices) < w.latent_frames:
                return [(w, i) for i in indices]
        offset = start_frame // TEMPORAL_COMPRESSION
        last = offset + max(indices)
        if last >= self.latent_frames:
            needed = TEMPORAL_COMPRESSION * last + 1
            raise ValueError(f"the video needs motion up to frame {needed} (latent frame {last}), but the motion "
                             f"tokens cover {self.num_frames} frames ({self.latent_frames} latent frames)")
        rows = []
        for i in indices:
            g = offset + i
            w = next(w for w in self.windows if w.start // TEMPORAL_COMPRESSION <= g
                     < w.start // TEMPORAL_COMPRESSION + w.latent_frames)
            rows.append((w, g - w.start // TEMPORAL_COMPRESSION))
        return rows

    def tokens(self, start_frame: int, latent_indices: Sequence[int]) -> torch.Tensor:
        """(len(latent_indices) * 24, C) tokens of the span starting at video frame ``start_frame``.

        ``latent_indices``: latent frames of the span (0 = frame ``start_frame``), e.g. a context window's.
        A window starting at ``start_frame`` that covers them gives its own tokens; otherwise the stitched
        timeline (each latent frame from the first window covering it) does.
        """
        return torch.cat([w.tokens[j * NUM_JOINTS: (j + 1) * NUM_JOINTS] for w, j in self._rows(start_frame, latent_indices)])

    def indices(self, start_frame: int, latent_indices: Sequence[int]) -> torch.Tensor | None:
        """The codebook indices of the same span (None when a window has none)."""
        rows = self._rows(start_frame, latent_indices)
        if any(w.indices is None for w, _ in rows):
            return None
        return torch.cat([w.indices[j * NUM_JOINTS: (j + 1) * NUM_JOINTS] for w, j in rows])


class MotionInputs:
    """Motion tokens (zero-padded to the model width) and their float32 RoPE tables for one model call.

    The motion RoPE's t band counts the call's latent frames from 0, like the vision RoPE of the call.
    """

    def __init__(self, timeline: MotionTimeline, dim: int, head_dim: int = WAN_HEAD_DIM,
                 token_dim: int | None = None, joint_mean_mm: np.ndarray | None = None) -> None:
        if joint_mean_mm is None:
            from ..motion.stats import load_stats

            joint_mean_mm = load_stats()[0]
        self.timeline, self.dim, self.head_dim, self.token_dim = timeline, dim, head_dim, token_dim
        self.joint_mean_mm = joint_mean_mm
        pad_motion_tokens(timeline.windows[0].tokens[None, :1], dim, token_dim)  # width check, before any sampling
        self._rope: dict[tuple, RopeTables] = {}
        self._tokens: tuple[tuple, torch.Tensor] | None = None  # the last call's (key, padded tokens)

    def __call__(self, start_frame: int, latent_indices: Sequence[int], batch: int, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, RopeTables]:
        """(B, F * 24, dim) tokens in ``dtype`` and (cos, sin) float32 (F * 24, head_dim) on ``device``.

        Every step of a window asks for the same tokens: the last call's are kept, so they are gathered, padded and
        copied to the device once per window."""
        key = (start_frame, tuple(latent_indices), dtype, str(device))
        if self._tokens is None or self._tokens[0] != key:
            tokens = self.timeline.tokens(start_frame, latent_indices)[None]
            self._tokens = key, pad_motion_tokens(tokens, self.dim, self.token_dim).to(device, dtype)
        tokens = self._tokens[1].expand(batch, -1, -1)
        frames = len(latent_indices)
        key = (frames, str(device))
        if key not in self._rope:
            cos, sin = motion_rope_17b(frames, self.joint_mean_mm, self.head_dim)
            self._rope[key] = (cos.to(device), sin.to(device))
        return tokens, self._rope[key]


def next_window_start(previous_frames: int, overlap: int, length: int) -> int:
    """First video frame of the next window when ``previous_frames`` frames exist and the new window of
    ``length`` frames re-uses their last ``overlap`` (all on the 4k + 1 grid of the Wan VAE)."""
    for name, value in (("overlap", overlap), ("window length", length)):
        if value < 1 or (value - 1) % TEMPORAL_COMPRESSION:
            raise ValueError(f"{name} {value} must be 4k + 1 frames (e.g. 9, 49)")
    if overlap >= length:
        raise ValueError(f"overlap {overlap} must be shorter than the window ({length} frames)")
    if previous_frames < overlap:
        raise ValueError(f"{previous_frames} previous frames, fewer than the overlap of {overlap}")
    start = previous_frames - overlap
    if start % TEMPORAL_COMPRESSION:
        raise ValueError(f"{previous_frames} previous frames with an overlap of {overlap}: the next window would "
                         f"start at frame {start}, not a multiple of {TEMPORAL_COMPRESSION} (keep every window 4k + 1 "
                         "frames long and chain them with Next Window)")
    return start


def window_motion(motion: MotionTokens, start_frame: int, num_frames: int) -> MotionTokens:
    """The motion tokens of video frames ``start_frame`` .. ``start_frame + num_frames - 1`` as a one-window
    ``MotionTokens`` starting at frame 0 (the tokenizer window starting there, when there is one)."""
    from ..motion.edit import trim
    from ..tokenizer.tokens import TokenWindow

    if num_frames < 1 or (num_frames - 1) % TEMPORAL_COMPRESSION:
        raise ValueError(f"window length {num_frames} must be 4k + 1 frames")
    latent = (num_frames - 1) // TEMPORAL_COMPRESSION + 1
    timeline = MotionTimeline.from_motion(motion)
    tokens = timeline.tokens(start_frame, range(latent))[None]
    indices = timeline.indices(start_frame, range(latent))
    joints = motion.joints
    stop = min(joints.num_frames, start_frame + num_frames)
    if start_frame < stop:
        joints = trim(joints, start_frame, stop)
    window = TokenWindow(start=0, num_frames=num_frames, tokens=tokens,
                         indices=indices[None] if indices is not None else None)
    meta = {**motion.meta, "window_of": f"frames {start_frame}-{start_frame + num_frames - 1}"}
    return MotionTokens(windows=[window], joints=joints, plan=None, meta=meta)
