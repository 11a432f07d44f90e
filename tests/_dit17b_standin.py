"""A stand-in for ``mtv_core.dit.transformer_17b`` (which another branch adds) with the interface the benchmarks
use: ``MVDiT17BConfig`` (Wan field names, released defaults) and ``MVDiT17B(config, operations=torch.nn)`` with a
Wan-layout forward. Only for the benchmark smoke test: it has the shape of the model, not its arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MVDiT17BConfig:
    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 36
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512


class _Block(torch.nn.Module):
    def __init__(self, config: MVDiT17BConfig, motion: bool, nn) -> None:
        super().__init__()
        d = config.dim
        self.heads = config.num_heads
        self.norm1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.cross = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, d))
        self.motion_attn = nn.Linear(d, d) if motion else None

    def forward(self, x, context, motion):
        b, n, d = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        x = x + self.cross(context.mean(1, keepdim=True))
        if self.motion_attn is not None:
            x = x + self.motion_attn(motion.mean(1, keepdim=True))
        return x + self.ffn(x)


class MVDiT17B(torch.nn.Module):
    def __init__(self, config: MVDiT17BConfig | None = None, operations=torch.nn) -> None:
        super().__init__()
        self.config = config = config or MVDiT17BConfig()
        nn = operations
        self.patch_embedding = nn.Conv3d(config.in_dim, config.dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text_embedding = nn.Linear(config.text_dim, config.dim)
        self.img_emb = nn.Linear(1280, config.dim)
        self.motion_proj = nn.Linear(3072 if config.dim >= 3072 else 192, config.dim)
        self.blocks = nn.ModuleList(_Block(config, i % 4 == 0, nn) for i in range(config.num_layers))
        self.head = nn.Linear(config.dim, config.out_dim * 4)

    def forward(self, x, t, context, clip_fea, y, motion_tokens, motion_rope=None):
        b, _, frames, h, w = x.shape
        dtype = self.head.weight.dtype
        tokens = self.patch_embedding(torch.cat([x, y], 1).to(dtype)).flatten(2).transpose(1, 2)
        ctx = torch.cat([self.img_emb(clip_fea.to(dtype)), self.text_embedding(context.to(dtype))], 1)
        motion = self.motion_proj(motion_tokens.to(dtype))
        for block in self.blocks:
            tokens = block(tokens, ctx, motion)
        out = self.head(tokens).view(b, frames, h // 2, w // 2, -1, 2, 2)
        return out.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, -1, frames, h, w)
