"""MV-DiT-7B: the CogVideoX-5B transformer with motion attention (upstream ``Transformer7B``).

Parameter names match the released checkpoint (diffusers ``CogVideoXTransformer3DModel`` naming plus
``transformer_blocks.N.attn0`` and ``unconditional_motion_token``). The text path is removed as upstream:
``patch_embed.text_proj`` exists as weights but is never used.

Block order: AdaLN-zero (``norm1``) -> self-attention with 3D RoPE on q and k -> gated residual;
motion attention ``attn0`` (query = the un-normalised residual stream, keys/values = motion tokens at the
hidden size, per-head LayerNorm on q and k, vision RoPE on q, 4D motion RoPE on k) added with no gate and
no norm; AdaLN-zero (``norm2``) -> GELU-tanh feed-forward -> gated residual. Only the first three of the
six modulation chunks of ``norm1``/``norm2`` are used (shift, scale, gate), as upstream.

Every layer with weights (Linear, Conv2d, LayerNorm) is built from an ``operations`` namespace, ``torch.nn`` by
default, as ComfyUI's own ``comfy/ldm`` models are: a host that places weights itself passes its casting layers
(``comfy.ops``) so that the model can be loaded partially, offloaded, or stored in another dtype than it computes
in. Weights are only used inside their own layer's forward (the one free parameter, ``unconditional_motion_token``,
is cast by the sampler where it is used); ``device`` and ``dtype`` say where and in what the model computes: the
weights' by default, else what such a host sets (``device``, ``compute_dtype``).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from typing import Any

from torch import nn

from ..attention import attention, check_backend
from .config import MVDiT7BConfig
from .fused_linear import fuse_linears, fused_projection
from .step_cache import FirstBlockCache, run_blocks
from .rope import apply_rope

logger = logging.getLogger(__name__)

RopeTables = tuple[torch.Tensor, torch.Tensor]
Operations = Any  # a namespace with Linear, Conv2d and LayerNorm classes: torch.nn, comfy.ops.manual_cast, ...


def timestep_sinusoids(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float32 sinusoidal embedding (diffusers ``Timesteps`` formula)."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / (half - shift)
    angles = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.linear_1 = operations.Linear(in_dim, out_dim)
        self.linear_2 = operations.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class PatchEmbed(nn.Module):
    """Per-frame Conv2d patchify; ``text_proj`` is kept only for key compatibility (unused)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int, text_embed_dim: int,
                 operations: Operations = nn) -> None:
        super().__init__()
        self.proj = operations.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)
        self.text_proj = operations.Linear(text_embed_dim, embed_dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F*h/p*w/p, dim), token order frame, row, column."""
        batch, frames = latents.shape[:2]
        x = self.proj(latents.flatten(0, 1))  # (B*F, dim, h/p, w/p)
        return x.flatten(2).transpose(1, 2).reshape(batch, -1, x.shape[1])


class LayerNormZero(nn.Module):
    """AdaLN-zero of CogVideoX: SiLU(temb) -> Linear -> 6 chunks, of which (shift, scale, gate) are used."""

    def __init__(self, conditioning_dim: int, dim: int, eps: float, operations: Operations = nn) -> None:
        super().__init__()
        self.linear = operations.Linear(conditioning_dim, 6 * dim)
        self.norm = operations.LayerNorm(dim, eps=eps, elementwise_affine=True)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale, gate = self.linear(F.silu(temb)).chunk(6, dim=1)[:3]
        return self.norm(hidden) * (1 + scale[:, None]) + shift[:, None], gate[:, None]


class AdaLayerNormOut(nn.Module):
    """Output AdaLN (diffusers ``AdaLayerNorm`` with chunk_dim 1: shift first, then scale)."""

    def __init__(self, conditioning_dim: int, dim: int, eps: float, operations: Operations = nn) -> None:
        super().__init__()
        self.linear = operations.Linear(conditioning_dim, 2 * dim)
        self.norm = operations.LayerNorm(dim, eps=eps, elementwise_affine=True)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(temb)).chunk(2, dim=1)
        return self.norm(hidden) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention with per-head LayerNorm on q and k (diffusers ``Attention`` key names)."""

    def __init__(self, dim: int, heads: int, head_dim: int, bias: bool, qk_eps: float,
                 operations: Operations = nn) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.backend: str | None = None  # None: the pack-wide default of mtv_core.attention
        inner = heads * head_dim
        self.norm_q = operations.LayerNorm(head_dim, eps=qk_eps, elementwise_affine=True)
        self.norm_k = operations.LayerNorm(head_dim, eps=qk_eps, elementwise_affine=True)
        self.to_q = operations.Linear(dim, inner, bias=bias)
        self.to_k = operations.Linear(dim, inner, bias=bias)
        self.to_v = operations.Linear(dim, inner, bias=bias)
        self.to_out = nn.ModuleList([operations.Linear(inner, dim, bias=True)])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, heads, L, head_dim)

    def forward(
        self,
        hidden: torch.Tensor,
        context: torch.Tensor | None = None,
        q_rope: RopeTables | None = None,
        k_rope: RopeTables | None = None,
    ) -> torch.Tensor:
        if context is None:  # self-attention: one GEMM when the projections are fused (see ``fuse_qkv``)
            q, k, v = fused_projection((self.to_q, self.to_k, self.to_v), hidden)
        else:
            q, k, v = self.to_q(hidden), self.to_k(context), self.to_v(context)
        q = self.norm_q(self._heads(q))
        k = self.norm_k(self._heads(k))
        v = self._heads(v)
        if q_rope is not None:
            q = apply_rope(q, *q_rope)
        if k_rope is not None:
            k = apply_rope(k, *k_rope)
        out = attention(q, k, v, backend=self.backend)
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    """GELU(tanh) MLP with diffusers key names ``net.0.proj`` / ``net.2``."""

    def __init__(self, dim: int, inner_dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(dim, inner_dim, operations), nn.Identity(),
                                  operations.Linear(inner_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class _GeluProj(nn.Module):
    def __init__(self, dim: int, inner_dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.proj = operations.Linear(dim, inner_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class MVDiT7BBlock(nn.Module):
    def __init__(self, config: MVDiT7BConfig, operations: Operations = nn) -> None:
        super().__init__()
        dim, heads, head_dim = config.inner_dim, config.num_attention_heads, config.attention_head_dim
        self.attn0 = Attention(dim, heads, head_dim, config.attention_bias, config.qk_norm_eps, operations)
        self.norm1 = LayerNormZero(config.time_embed_dim, dim, config.norm_eps, operations)
        self.attn1 = Attention(dim, heads, head_dim, config.attention_bias, config.qk_norm_eps, operations)
        self.norm2 = LayerNormZero(config.time_embed_dim, dim, config.norm_eps, operations)
        self.ff = FeedForward(dim, config.ff_dim, operations)

    def forward(
        self,
        hidden: torch.Tensor,
        motion_tokens: torch.Tensor,
        temb: torch.Tensor,
        vision_rope: RopeTables,
        motion_rope: RopeTables,
    ) -> torch.Tensor:
        normed, gate = self.norm1(hidden, temb)
        hidden = hidden + gate * self.attn1(normed, q_rope=vision_rope, k_rope=vision_rope)
        hidden = hidden + self.attn0(hidden, motion_tokens, q_rope=vision_rope, k_rope=motion_rope)
        normed, gate = self.norm2(hidden, temb)
        return hidden + gate * self.ff(normed)


class MVDiT7B(nn.Module):
    """MV-DiT-7B denoiser (v-prediction). See the module docstring for the block layout.

    ``operations``: the namespace the layers with weights come from (``torch.nn``; ComfyUI passes ``comfy.ops``).
    """

    def __init__(self, config: MVDiT7BConfig | None = None, operations: Operations = nn) -> None:
        super().__init__()
        self.config = config = config or MVDiT7BConfig()
        dim = config.inner_dim
        self.unconditional_motion_token = nn.Parameter(torch.empty(config.num_unconditional_tokens, dim))
        self.patch_embed = PatchEmbed(config.patch_size, config.in_channels, dim, config.text_embed_dim, operations)
        self.time_embedding = TimestepEmbedding(dim, config.time_embed_dim, operations)
        self.transformer_blocks = nn.ModuleList([MVDiT7BBlock(config, operations) for _ in range(config.num_layers)])
        self.norm_final = operations.LayerNorm(dim, eps=config.norm_eps, elementwise_affine=True)
        self.norm_out = AdaLayerNormOut(config.time_embed_dim, dim, config.norm_eps, operations)
        self.proj_out = operations.Linear(dim, config.patch_size**2 * config.out_channels)
        # Where and in what it computes when that is not where/what the weights are (see ``device``, ``dtype``).
        self._execution_device: torch.device | None = None
        self.compute_dtype: torch.dtype | None = None
        self.step_cache: FirstBlockCache | None = None  # optional, lossy step caching (``step_cache.step_caching``)
        if self.unconditional_motion_token.device.type != "meta":
            nn.init.normal_(self.unconditional_motion_token)

    def set_attention_backend(self, name: str | None) -> None:
        """Attention backend of every layer: "auto", "sdpa", "xformers", "sage", or None for the pack-wide default."""
        if name is not None:
            check_backend(name)
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = name

    def fuse_qkv(self) -> int:
        """Put each self-attention's to_q/to_k/to_v weights back to back so that they run as one GEMM (same
        outputs, same state-dict keys, no extra memory; see ``fused_linear``). Call after loading and placing
        the weights; returns the number of layers fused (0 for layers that bring their own forward)."""
        return sum(fuse_linears(group) for group in self.qkv_groups())

    def qkv_groups(self) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
        """The (q, k, v) self-attention projections of every block: what ``fuse_qkv`` fuses."""
        return [(b.attn1.to_q, b.attn1.to_k, b.attn1.to_v) for b in self.transformer_blocks]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it computes in: ``compute_dtype`` when set (weights stored in another dtype, e.g. fp8), else
        the weights' dtype."""
        return self.compute_dtype or self.proj_out.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device it computes on: the one set by whoever places the weights (ComfyUI's ModelPatcher, the
        CLI's group offloading), else the weights' device."""
        return self._execution_device if self._execution_device is not None else self.proj_out.weight.device

    @device.setter
    def device(self, value: torch.device | str | None) -> None:
        self._execution_device = None if value is None else torch.device(value)

    def forward(
        self,
        latents_in: torch.Tensor,
        timestep: torch.Tensor,
        motion_tokens: torch.Tensor,
        vision_rope: RopeTables,
        motion_rope: RopeTables,
    ) -> torch.Tensor:
        """Predict v.

        latents_in (B, F, in_channels, h, w): noisy latents and reference latents concatenated on channels
        (h, w = pixels / 8); timestep (B,) integer diffusion timesteps; motion_tokens (B, F*24, inner_dim);
        vision_rope / motion_rope: (cos, sin) tables from ``rope.vision_rope_7b`` / ``rope.motion_rope_7b``.
        Returns (B, F, out_channels, h, w) in the model dtype.
        """
        cfg = self.config
        batch, frames, channels, height, width = latents_in.shape
        p = cfg.patch_size
        if channels != cfg.in_channels:
            raise ValueError(f"latents_in has {channels} channels, the model expects {cfg.in_channels}")
        if height % p or width % p:
            raise ValueError(f"latent size {height}x{width} is not a multiple of the patch size {p}")
        dtype = self.dtype
        num_tokens = frames * (height // p) * (width // p)
        if vision_rope[0].shape[0] != num_tokens or motion_rope[0].shape[0] != motion_tokens.shape[1]:
            raise ValueError(
                f"RoPE tables ({vision_rope[0].shape[0]} vision, {motion_rope[0].shape[0]} motion rows) do not match "
                f"the inputs ({num_tokens} patch tokens, {motion_tokens.shape[1]} motion tokens)"
            )
        # upstream builds the tables in the latents dtype and rotates in float32
        vision_rope = tuple(t.to(self.device, dtype) for t in vision_rope)
        motion_rope = tuple(t.to(self.device, dtype) for t in motion_rope)

        timestep = timestep.to(self.device).reshape(-1).expand(batch)
        t_emb = timestep_sinusoids(timestep, cfg.inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = self.time_embedding(t_emb.to(dtype))

        hidden = self.patch_embed(latents_in.to(self.device, dtype))
        motion_tokens = motion_tokens.to(self.device, dtype)
        if self.step_cache is not None:
            self.step_cache.begin(timestep)
        hidden = run_blocks(self, self.transformer_blocks, hidden,
                            lambda block, h: block(h, motion_tokens, temb, vision_rope, motion_rope))

        hidden = self.norm_out(self.norm_final(hidden), temb)
        hidden = self.proj_out(hidden)  # (B, tokens, C*p*p)
        out = hidden.reshape(batch, frames, height // p, width // p, -1, p, p)
        return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, frames, -1, height, width)
