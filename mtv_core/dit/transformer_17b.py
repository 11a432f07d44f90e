"""MV-DiT-17B: the Wan2.1 I2V-14B transformer with motion attention in every 4th block (upstream ``Transformer17B``).

Parameter names are Wan's original ones (``blocks.N.self_attn.q.weight``, ...) plus ``blocks.N.norm4`` and
``blocks.N.motion_attn`` in blocks N % 4 == 0. Every Linear / Conv3d / LayerNorm / RMSNorm is built through
``operations`` (``torch.nn`` by default, ``fp8_ops.FP8Operations`` for fp8 storage, or ComfyUI's ``comfy.ops``).

Block order (e = block.modulation + time projection, six chunks: shift, scale, gate of attention and FFN):
norm1 (LayerNorm, no affine) modulated -> self-attention (RMS qk-norm over the full width, Wan 3D RoPE on q, k)
-> residual gated by e[2]; text + CLIP cross-attention on norm3(x), ungated (the two attention outputs are
summed before ``o``); in motion blocks ``motion_attn(norm4(x), motion tokens)`` ungated; norm2 modulated -> FFN
(GELU-tanh) -> residual gated by e[5]. Head: LayerNorm (no affine) modulated by head.modulation + the time
embedding, Linear to out_dim x patch, unpatchify.

Motion attention reproduces upstream's key layout, which the released weights were trained with: after
``k`` and ``norm_k`` the contiguous (B, L, dim) key buffer is *reinterpreted* as (B, heads, L, head_dim) (a
``view``, not a head split + transpose), the 4D motion RoPE is applied in that layout, and those are the keys
of head h. Queries get the vision RoPE and values the normal head split. Motion tokens (3072 wide in the
release) are zero-padded to ``dim``; the padding is not a parameter.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attention, check_backend
from .config_17b import MVDiT17BConfig
from .fp8_ops import is_fp8
from .fused_linear import fuse_linears, fused_projection
from .step_cache import FirstBlockCache, run_blocks
from .rope import apply_rope
from .rope_17b import vision_rope_17b

logger = logging.getLogger(__name__)

RopeTables = tuple[torch.Tensor, torch.Tensor]


def sinusoidal_embedding_17b(dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) float64 Wan time embedding: [cos | sin] of t * 10000**(-i / (dim / 2))."""
    half = dim // 2
    position = timesteps.detach().to("cpu", torch.float64).reshape(-1)
    sinusoid = torch.outer(position, torch.pow(10000.0, -torch.arange(half, dtype=torch.float64).div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def pad_text_context(context: torch.Tensor | Sequence[torch.Tensor], text_len: int) -> torch.Tensor:
    """Text embeddings -> (B, text_len, C), each sample zero-padded at the end as Wan does.

    ``context``: (B, L, C) or a sequence of (L_i, C) tensors (unpadded umT5 outputs of different lengths).
    """
    items = list(context.unbind(0)) if isinstance(context, torch.Tensor) and context.ndim == 3 else list(context)
    if not items:
        raise ValueError("empty text context")
    padded = []
    for item in items:
        if item.ndim != 2:
            raise ValueError(f"text context rows must be (tokens, width), got shape {tuple(item.shape)}")
        if item.shape[0] > text_len:
            raise ValueError(f"text context has {item.shape[0]} tokens, the model takes at most {text_len}")
        padded.append(F.pad(item, (0, 0, 0, text_len - item.shape[0])))
    return torch.stack(padded)


def pad_motion_tokens(motion_tokens: torch.Tensor, dim: int, expected: int | None = None) -> torch.Tensor:
    """(B, M, C) motion tokens -> (B, M, dim) zero-padded (3072 -> 5120 in the release; no projection).

    ``expected``: the token width the motion layers were trained with (None: any width <= dim).
    """
    width = motion_tokens.shape[-1]
    if motion_tokens.ndim != 3 or width > dim or (expected is not None and width != expected):
        raise ValueError(
            f"motion tokens of shape {tuple(motion_tokens.shape)}; expected (B, tokens, "
            f"{expected if expected is not None else f'<= {dim}'})"
        )
    return F.pad(motion_tokens, (0, dim - width))


def _modulation(chunks: int, dim: int) -> nn.Parameter:
    """(1, chunks, dim) modulation table, initialised as Wan (randn / sqrt(dim)) unless built on the meta device."""
    table = torch.empty(1, chunks, dim)
    if table.device.type != "meta":
        nn.init.normal_(table, std=dim**-0.5)
    return nn.Parameter(table)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, heads*d) -> (B, heads, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, d) -> (B, L, heads*d)."""
    return x.transpose(1, 2).flatten(2)


class _AttentionBase(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, operations) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend: str | None = None  # None: the pack-wide default of mtv_core.attention
        self.q = operations.Linear(dim, dim)
        self.k = operations.Linear(dim, dim)
        self.v = operations.Linear(dim, dim)
        self.o = operations.Linear(dim, dim)
        self.norm_q = operations.RMSNorm(dim, eps=eps, elementwise_affine=True) if qk_norm else nn.Identity()
        self.norm_k = operations.RMSNorm(dim, eps=eps, elementwise_affine=True) if qk_norm else nn.Identity()


class SelfAttention(_AttentionBase):
    """Wan self-attention: RMS qk-norm over the full width, 3D RoPE on queries and keys."""

    def forward(self, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        q, k, v = fused_projection((self.q, self.k, self.v), x)  # one GEMM when fused (``MVDiT17B.fuse_qkv``)
        q = apply_rope(_split_heads(self.norm_q(q), self.num_heads), *rope)
        k = apply_rope(_split_heads(self.norm_k(k), self.num_heads), *rope)
        v = _split_heads(v, self.num_heads)
        return self.o(_merge_heads(attention(q, k, v, backend=self.backend)))


class I2VCrossAttention(_AttentionBase):
    """Wan image-to-video cross-attention: text keys/values and CLIP keys/values, attention outputs summed."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, operations) -> None:
        super().__init__(dim, num_heads, qk_norm, eps, operations)
        self.k_img = operations.Linear(dim, dim)
        self.v_img = operations.Linear(dim, dim)
        self.norm_k_img = operations.RMSNorm(dim, eps=eps, elementwise_affine=True) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        heads = self.num_heads
        q = _split_heads(self.norm_q(self.q(x)), heads)
        k = _split_heads(self.norm_k(self.k(text)), heads)
        v = _split_heads(self.v(text), heads)
        k_img = _split_heads(self.norm_k_img(self.k_img(image)), heads)
        v_img = _split_heads(self.v_img(image), heads)
        out = attention(q, k, v, backend=self.backend) + attention(q, k_img, v_img, backend=self.backend)
        return self.o(_merge_heads(out))


def motion_attention(
    attn: "MotionAttention",
    x: torch.Tensor,
    motion: torch.Tensor,
    rotate_q: Callable[[torch.Tensor], torch.Tensor],
    k_rope: RopeTables,
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Upstream's motion attention with the layers of ``attn`` (q, k, v, o, norm_q, norm_k).

    x (B, L, dim): the normed video tokens (``norm4`` applied); motion (B, M, dim): motion tokens zero-padded to
    dim; rotate_q: applies the vision RoPE to queries (B, heads, L, head_dim); k_rope: float32 (cos, sin)
    tables (M, head_dim) of the motion RoPE; attend(q, k, v) with (B, heads, tokens, head_dim) inputs returns
    the merged (B, L, dim) attention output. Returns (B, L, dim), the ungated update of the residual stream.
    Callers choose the RoPE and attention implementations (ComfyUI passes its own); the key layout is fixed.
    """
    batch, heads = x.shape[0], attn.num_heads
    q = rotate_q(_split_heads(attn.norm_q(attn.q(x)), heads))
    # upstream: k.view(b, n, -1, d): the (B, M, dim) buffer read as (B, heads, M, head_dim) -- keys of head h
    # are the 128-wide chunks h*M .. h*M+M-1 of the flattened buffer, not head h of each token
    k = attn.norm_k(attn.k(motion)).reshape(batch, heads, -1, attn.head_dim)
    k = apply_rope(k, *k_rope)
    v = _split_heads(attn.v(motion), heads)
    return attn.o(attend(q, k, v))


class MotionAttention(_AttentionBase):
    """MTVCrafter motion attention with upstream's key reinterpretation (see the module docstring)."""

    def forward(self, x: torch.Tensor, motion: torch.Tensor, q_rope: RopeTables, k_rope: RopeTables) -> torch.Tensor:
        return motion_attention(
            self, x, motion, lambda q: apply_rope(q, *q_rope), k_rope,
            lambda q, k, v: _merge_heads(attention(q, k, v, backend=self.backend)),
        )


class MVDiT17BBlock(nn.Module):
    def __init__(self, config: MVDiT17BConfig, has_motion: bool, operations) -> None:
        super().__init__()
        dim, eps = config.dim, config.eps
        self.has_motion = has_motion
        self.norm1 = operations.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, config.qk_norm, eps, operations)
        self.norm3 = (
            operations.LayerNorm(dim, eps=eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = I2VCrossAttention(dim, config.num_heads, config.qk_norm, eps, operations)
        if has_motion:
            self.norm4 = (
                operations.LayerNorm(dim, eps=eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
            )
            self.motion_attn = MotionAttention(dim, config.num_heads, config.qk_norm, eps, operations)
        self.norm2 = operations.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            operations.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), operations.Linear(config.ffn_dim, dim)
        )
        self.modulation = _modulation(6, dim)

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        vision_rope: RopeTables,
        text: torch.Tensor,
        image: torch.Tensor,
        motion: torch.Tensor | None,
        motion_rope: RopeTables | None,
    ) -> torch.Tensor:
        # cast where used: a host that places layers one by one (ComfyUI) leaves this table where it was stored
        modulation = self.modulation.to(e0.device, e0.dtype)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (modulation + e0).chunk(6, dim=1)
        x = x + self.self_attn(self.norm1(x) * (1 + scale_msa) + shift_msa, vision_rope) * gate_msa
        x = x + self.cross_attn(self.norm3(x), text, image)
        if self.has_motion and motion is not None:  # None: the pass without motion (motion guidance)
            x = x + self.motion_attn(self.norm4(x), motion, vision_rope, motion_rope)
        return x + self.ffn(self.norm2(x) * (1 + scale_mlp) + shift_mlp) * gate_mlp


class Head(nn.Module):
    def __init__(self, config: MVDiT17BConfig, operations) -> None:
        super().__init__()
        self.norm = operations.LayerNorm(config.dim, eps=config.eps, elementwise_affine=False)
        self.head = operations.Linear(config.dim, math.prod(config.patch_size) * config.out_dim)
        self.modulation = _modulation(2, config.dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.to(e.device, e.dtype) + e[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class MLPProj(nn.Module):
    """CLIP image features (B, 257, 1280) -> (B, 257, dim): LayerNorm, Linear, GELU, Linear, LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, operations) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            operations.LayerNorm(in_dim),
            operations.Linear(in_dim, in_dim),
            nn.GELU(),
            operations.Linear(in_dim, out_dim),
            operations.LayerNorm(out_dim),
        )

    def forward(self, clip_fea: torch.Tensor) -> torch.Tensor:
        return self.proj(clip_fea)


class MVDiT17B(nn.Module):
    """MV-DiT-17B flow-matching denoiser (predicts the velocity). See the module docstring for the layout."""

    def __init__(self, config: MVDiT17BConfig | None = None, operations=nn) -> None:
        super().__init__()
        self.config = config = config or MVDiT17BConfig()
        dim = config.dim
        self.compute_dtype: torch.dtype | None = None  # None: the dtype of the (non-fp8) weights
        self._execution_device: torch.device | None = None  # None: the weights' device
        self.patch_embedding = operations.Conv3d(
            config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.text_embedding = nn.Sequential(
            operations.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), operations.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(
            operations.Linear(config.freq_dim, dim), nn.SiLU(), operations.Linear(dim, dim)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), operations.Linear(dim, 6 * dim))
        motion_blocks = set(config.motion_blocks)
        self.blocks = nn.ModuleList(
            [MVDiT17BBlock(config, i in motion_blocks, operations) for i in range(config.num_layers)]
        )
        self.head = Head(config, operations)
        self.img_emb = MLPProj(config.clip_dim, dim, operations)
        self._rope_cache: tuple[tuple, RopeTables] | None = None
        self.step_cache: FirstBlockCache | None = None  # optional, lossy step caching (``step_cache.step_caching``)

    def set_attention_backend(self, name: str | None) -> None:
        """Attention backend of every layer: "auto", "sdpa", "xformers", "sage", or None for the pack-wide default."""
        if name is not None:
            check_backend(name)
        for module in self.modules():
            if isinstance(module, _AttentionBase):
                module.backend = name

    def fuse_qkv(self) -> int:
        """Put each self-attention's q/k/v weights back to back so that they run as one GEMM (same outputs, same
        state-dict keys, no extra memory; see ``fused_linear``). Call after loading and placing the weights;
        returns the number of layers fused (0 where the layers bring their own forward, e.g. fp8 storage)."""
        return sum(fuse_linears(group) for group in self.qkv_groups())

    def qkv_groups(self) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
        """The (q, k, v) self-attention projections of every block: what ``fuse_qkv`` fuses."""
        return [(b.self_attn.q, b.self_attn.k, b.self_attn.v) for b in self.blocks]

    @property
    def device(self) -> torch.device:
        """The device it computes on: the one set by whoever places the weights (ComfyUI's ModelPatcher sets it),
        else the weights' device."""
        return self._execution_device if self._execution_device is not None else self.patch_embedding.weight.device

    @device.setter
    def device(self, value: torch.device | str | None) -> None:
        self._execution_device = None if value is None else torch.device(value)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (activations); fp8-stored weights are upcast to it per layer."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        dtype = self.patch_embedding.weight.dtype
        return torch.bfloat16 if is_fp8(dtype) else dtype

    def vision_rope(self, frames: int, grid_h: int, grid_w: int) -> RopeTables:
        """Wan 3D RoPE tables (float32, on the model's device) for a frames x grid_h x grid_w patch grid."""
        key = (frames, grid_h, grid_w, self.device)
        if self._rope_cache is None or self._rope_cache[0] != key:
            cos, sin = vision_rope_17b(frames, grid_h, grid_w, self.config.head_dim)
            self._rope_cache = (key, (cos.to(self.device), sin.to(self.device)))
        return self._rope_cache[1]

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        context: torch.Tensor | Sequence[torch.Tensor],
        clip_fea: torch.Tensor,
        motion_tokens: torch.Tensor | None,
        motion_rope: RopeTables | None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the flow-matching velocity.

        latents (B, out_dim, F, h, w): noisy latents, channel-first as Wan (h, w = pixels / 8);
        y (B, in_dim - out_dim, F, h, w): 4 mask + 16 masked-video latent channels, concatenated after the
        latents on channels (None: ``latents`` already hold all in_dim channels);
        timestep: (B,) or scalar diffusion timestep in [0, 1000];
        context: (B, L, text_dim) umT5 embeddings with L <= text_len, or a list of (L_i, text_dim); each is
        zero-padded to text_len (512) as Wan does;
        clip_fea (B, 257, clip_dim): CLIP ViT-H/14 penultimate-block features of the reference;
        motion_tokens (B, F*24, C) with C <= dim (3072 released), zero-padded to dim; None skips motion attention
        (the frozen Wan base's prediction: the pass without motion of motion guidance);
        motion_rope: (cos, sin) float32 tables (F*24, head_dim) from ``rope_17b.motion_rope_17b`` (None with
        ``motion_tokens`` None).
        Conditioning tensors with batch 1 are broadcast to the batch of ``latents``.
        Returns (B, out_dim, F, h, w) in the compute dtype.
        """
        cfg, device, dtype = self.config, self.device, self.dtype
        batch = latents.shape[0]
        x = latents if y is None else torch.cat([latents, _batch(y, batch, "y")], dim=1)
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(
                f"latents (+ y) have shape {tuple(x.shape)}; the model takes (B, {cfg.in_dim}, F, h, w) channel-first"
            )
        pt, ph, pw = cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"latent size {tuple(x.shape[2:])} is not a multiple of the patch size {cfg.patch_size}")
        x = self.patch_embedding(x.to(device, dtype))  # (B, dim, f, gh, gw)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)  # (B, f*gh*gw, dim), token order frame, row, column
        vision_rope = self.vision_rope(*grid)

        timestep = torch.as_tensor(timestep).reshape(-1)
        if timestep.numel() == 1:
            timestep = timestep.expand(batch)
        t_emb = sinusoidal_embedding_17b(cfg.freq_dim, timestep).to(device, dtype)
        e = self.time_embedding(t_emb)  # (B, dim)
        e0 = self.time_projection(e).unflatten(1, (6, cfg.dim))  # (B, 6, dim)

        text = self.text_embedding(_batch(pad_text_context(context, cfg.text_len).to(device, dtype), batch, "context"))
        image = self.img_emb(_batch(clip_fea.to(device, dtype), batch, "clip_fea"))
        motion = None
        if motion_tokens is not None:
            motion = self._pad_motion(_batch(motion_tokens, batch, "motion_tokens").to(device, dtype))
            motion_rope = tuple(t.to(device, torch.float32) for t in motion_rope)  # float32 at any model dtype
            if motion_rope[0].shape != (motion.shape[1], cfg.head_dim):
                raise ValueError(
                    f"motion RoPE tables have shape {tuple(motion_rope[0].shape)}, expected "
                    f"({motion.shape[1]}, {cfg.head_dim}) for {motion.shape[1]} motion tokens"
                )

        if self.step_cache is not None:
            self.step_cache.begin(timestep)
        x = run_blocks(self, self.blocks, x, lambda block, h: block(h, e0, vision_rope, text, image, motion, motion_rope))
        x = self.head(x, e)
        return self._unpatchify(x, grid)

    def _pad_motion(self, motion_tokens: torch.Tensor) -> torch.Tensor:
        return pad_motion_tokens(motion_tokens, self.config.dim, self.config.motion_token_dim)

    def _unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, f*gh*gw, out_dim*pt*ph*pw) -> (B, out_dim, f*pt, gh*ph, gw*pw)."""
        (f, gh, gw), (pt, ph, pw), c = grid, self.config.patch_size, self.config.out_dim
        x = x.reshape(x.shape[0], f, gh, gw, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, f * pt, gh * ph, gw * pw)


def _batch(tensor: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{name} has batch {tensor.shape[0]}, the latents have batch {batch}")
