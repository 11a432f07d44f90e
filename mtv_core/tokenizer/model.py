"""4DMoT: the motion VQ-VAE of MTVCrafter (encoder, EMA vector quantizer, decoder).

Module and parameter names match upstream ``models/motion4d/vqvae.py`` so that the released
state dict (``encoder.*``, ``decoder.*``, ``vq.codebook``) loads strictly.

Layouts: joints are (B, T, J, 3) normalised; inside the networks features are (B, C, T, J)
(xyz are channels, the "image" is time x joints). Tokens are (B, T' * J', code_dim),
frame-major / joint-minor (index = f * J' + j).

Upstream runs the encoder over chunks of 8 frames (the first chunk absorbing T mod 8) and the
decoder over chunks of 2 latent frames (the first absorbing the remainder); chunks never see
each other. The chunks are independent, so equal-sized chunks run here as one batch.

Every layer with weights (Conv1d, Conv2d, GroupNorm) is built from an ``operations`` namespace, ``torch.nn`` by
default; a host that places weights itself (ComfyUI) passes its casting layers (``comfy.ops``). The fast paths
that use a layer's weight directly (``_joint_conv``) do so only for layers that run torch's own
forward; a layer whose class brings its own forward (which may move, cast or patch its weight per call) is called
as a layer. The codebook search runs where the codebook is.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from typing import Any

from torch import nn

from ..precision import exact_fp32_matmul
from .config import TokenizerConfig, chunk_sizes
from .search import nearest_codes

logger = logging.getLogger(__name__)

Operations = Any  # a namespace with Conv1d, Conv2d and GroupNorm classes: torch.nn, comfy.ops.disable_weight_init, ...


def runs_torch_forward(layer: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``layer`` computes with ``base``'s own forward, so that its weight may be used directly.

    Layers of a casting operations namespace (ComfyUI's ``comfy.ops``) override ``forward`` to bring their weight
    to the input's device and dtype, or to patch it, on every call; such layers must be called as layers.
    """
    return type(layer).forward is base.forward


def _dilation(out_channels: int, base: int) -> int:
    return max(1, base // out_channels - 1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 dilated conv -> GroupNorm -> SiLU -> 1x1 conv, plus a residual."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32, dilation_base: int = 512,
                 operations: Operations = nn) -> None:
        super().__init__()
        d = _dilation(out_channels, dilation_base)
        ops = operations
        self.block = nn.Sequential(
            ops.GroupNorm(groups, in_channels, eps=1e-6, affine=True),
            nn.SiLU(),
            ops.Conv2d(in_channels, out_channels, kernel_size=3, padding=d, dilation=d),
            ops.GroupNorm(groups, out_channels, eps=1e-6, affine=True),
            nn.SiLU(),
            ops.Conv2d(out_channels, out_channels, kernel_size=1),
        )
        self.conv_short = ops.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        if self.conv_short is not None:
            x = self.conv_short(x)
        return x + h


def _joint_conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """Apply a Conv1d over the joint axis of every frame of (B, C, T, J): as a (1, k) conv2d with the layer's
    weight, without reshaping, or through the layer on (B*T, C, J) when it brings its own forward."""
    if runs_torch_forward(conv, nn.Conv1d):
        return F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]),
                        padding=(0, conv.padding[0]))
    batch, frames = x.shape[0], x.shape[2]
    out = conv(x.transpose(1, 2).flatten(0, 1))  # (B*T, C', J')
    return out.unflatten(0, (batch, frames)).transpose(1, 2)


class Downsample(nn.Module):
    """Causal time downsampling (frame 0 kept when T is odd) then a joint Conv1d (k=3)."""

    def __init__(self, in_channels: int, out_channels: int, time_rate: int, joint_rate: int,
                 operations: Operations = nn) -> None:
        super().__init__()
        self.time_rate = int(time_rate)
        self.joint_downsample = operations.Conv1d(in_channels, out_channels, kernel_size=3, stride=joint_rate,
                                                  padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_rate > 1:
            frames = x.shape[2]
            if frames % 2:  # odd: keep frame 0, pool the rest with kernel = stride = rate
                first, rest = x[:, :, :1], x[:, :, 1:]
                if rest.shape[2] >= self.time_rate:
                    rest = F.avg_pool2d(rest, kernel_size=(self.time_rate, 1), stride=(self.time_rate, 1))
                    x = torch.cat([first, rest], dim=2)
                else:
                    x = first
            else:  # even: upstream pools by 2 whatever the rate
                x = F.avg_pool2d(x, kernel_size=(2, 1), stride=(2, 1))
        return _joint_conv(self.joint_downsample, x)


class Upsample(nn.Module):
    """Bilinear time upsampling (frame 0 kept when T is odd, align_corners) then a joint Conv1d (k=3)."""

    def __init__(self, in_channels: int, out_channels: int, time_rate: float, joint_rate: float,
                 operations: Operations = nn) -> None:
        super().__init__()
        self.scale = (float(time_rate), float(joint_rate))
        self.upsampler = operations.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        if frames > 1 and frames % 2:
            rest = F.interpolate(x[:, :, 1:], scale_factor=self.scale, mode="bilinear", align_corners=True)
            x = torch.cat([x[:, :, :1], rest], dim=2)
        elif frames > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)
        elif self.scale[1] != 1.0:  # a single frame: upstream fails here; keep the frame, resample joints
            x = F.interpolate(x, scale_factor=(1.0, self.scale[1]), mode="bilinear", align_corners=True)
        return _joint_conv(self.upsampler, x)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in channels-last memory (a no-op when it already is): torch's CPU convolutions, norms and
    pools then run on (positions, channels) rows, which suits the tokenizer's many channels over few positions."""
    return x.contiguous(memory_format=torch.channels_last)


class Encoder(nn.Module):
    """(B, 3, T, J) -> (B, code_dim, T', J')."""

    def __init__(self, config: TokenizerConfig, operations: Operations = nn) -> None:
        super().__init__()
        c0, c1 = config.encoder_channels
        g, base, n, ops = config.norm_groups, config.dilation_base, config.num_res_blocks, operations
        self.conv_in = ops.Conv2d(config.in_channels, c0, kernel_size=3, padding=1)
        self.resnet1 = nn.ModuleList([ResBlock(c0, c0, g, base, ops) for _ in range(n)])
        self.downsample1 = Downsample(c0, c0, config.downsample_time[0], config.downsample_joint[0], ops)
        self.resnet2 = ResBlock(c0, c1, g, base, ops)
        self.resnet3 = nn.ModuleList([ResBlock(c1, c1, g, base, ops) for _ in range(n)])
        self.downsample2 = Downsample(c1, c1, config.downsample_time[1], config.downsample_joint[1], ops)
        self.conv_out = ops.Conv2d(c1, config.code_dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.resnet1:
            x = block(x)
        x = self.downsample1(x)
        x = self.resnet2(x)
        for block in self.resnet3:
            x = block(x)
        return self.conv_out(self.downsample2(x))


class Decoder(nn.Module):
    """(B, code_dim, T', J') -> (B, 3, T, J); the encoder in reverse."""

    def __init__(self, config: TokenizerConfig, operations: Operations = nn) -> None:
        super().__init__()
        c0, c1 = config.decoder_channels
        g, base, n, ops = config.norm_groups, config.dilation_base, config.num_res_blocks, operations
        self.conv_in = ops.Conv2d(config.code_dim, c0, kernel_size=3, padding=1)
        self.resnet1 = nn.ModuleList([ResBlock(c0, c0, g, base, ops) for _ in range(n)])
        self.upsample1 = Upsample(c0, c0, config.upsample_time[0], config.upsample_joint[0], ops)
        self.resnet2 = ResBlock(c0, c1, g, base, ops)
        self.resnet3 = nn.ModuleList([ResBlock(c1, c1, g, base, ops) for _ in range(n)])
        self.upsample2 = Upsample(c1, c1, config.upsample_time[1], config.upsample_joint[1], ops)
        self.conv_out = ops.Conv2d(c1, config.in_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.resnet1:
            x = block(x)
        x = self.upsample1(x)
        x = self.resnet2(x)
        for block in self.resnet3:
            x = block(x)
        x = self.upsample2(x)
        return self.conv_out(x)


class VectorQuantizer(nn.Module):
    """Nearest-code quantizer with an (num_codes, code_dim) codebook, always kept and searched in fp32.

    Inference only needs ``codebook``; the EMA training state lives in :mod:`.train`.
    """

    def __init__(self, num_codes: int, code_dim: int) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.register_buffer("codebook", torch.zeros(num_codes, code_dim))
        # the bf16 screen of the search (search.nearest_codes): None = where measured faster, False = never
        self.screen: bool | None = None

    def _apply(self, fn, recurse=True):
        # Keep the codebook fp32 under .to(dtype) / .half(): code selection is always fp32.
        book = self.codebook
        super()._apply(fn, recurse)
        if self.codebook.dtype != torch.float32 and book.dtype == torch.float32:
            self.codebook = book.to(device=self.codebook.device)
        elif self.codebook.is_floating_point() and self.codebook.dtype != torch.float32:
            self.codebook = self.codebook.float()
        return self

    @torch.no_grad()
    def nearest(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (N,) of the nearest codes to ``vectors`` (N, code_dim) and the squared distances (N,).

        Distances are ||x||^2 - 2 x.c + ||c||^2 in fp32, as upstream, without TF32 on CUDA (it would make
        the search inexact); see :mod:`.search` (a bf16 screen on CPUs where it is faster, same answer).
        Nothing is cached: the codebook may be swapped or modified at any time.
        """
        with exact_fp32_matmul(vectors.device):
            return nearest_codes(vectors, self.codebook, screen=self.screen)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (..., code_dim) fp32 for integer ``indices`` (...)."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ValueError(f"codebook indices must be in [0, {self.num_codes}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return F.embedding(indices, self.codebook)


class MotionVQVAE(nn.Module):
    """The 4DMoT VQ-VAE (upstream ``SMPL_VQVAE``) with chunked, batched encode/decode.

    ``operations``: the namespace the layers with weights come from (``torch.nn``; ComfyUI passes ``comfy.ops``).
    """

    def __init__(self, config: TokenizerConfig | None = None, operations: Operations = nn) -> None:
        super().__init__()
        self.config = config or TokenizerConfig()
        self.encoder = Encoder(self.config, operations)
        self.decoder = Decoder(self.config, operations)
        self.vq = VectorQuantizer(self.config.num_codes, self.config.code_dim)
        # (mean, std) (24, 3) mm the checkpoint was trained with; None = the released statistics
        self.stats = None
        self._execution_device: torch.device | None = None  # see ``device``
        # 2-D conv weights stored channels-last, the layout the networks compute in (see ``channels_last``): torch's
        # CPU convolution otherwise reorders each weight on every call (a third of the encoder's time at 49 frames).
        # Loaders that assign contiguous tensors convert again (``loading.load_tokenizer``).
        self.encoder.to(memory_format=torch.channels_last)
        self.decoder.to(memory_format=torch.channels_last)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device it computes on: the one set by whoever places the weights (ComfyUI's ModelPatcher), else the
        weights' device."""
        return self._execution_device if self._execution_device is not None else self.encoder.conv_in.weight.device

    @device.setter
    def device(self, value: torch.device | str | None) -> None:
        self._execution_device = None if value is None else torch.device(value)

    # -- chunked networks -------------------------------------------------------------------------
    @staticmethod
    def _split_chunks(x: torch.Tensor, chunk: int) -> list[torch.Tensor]:
        """Upstream's time chunks of (B, C, T, J) as at most two batches: the first chunk, the equal rest.

        The rest is (B*n, C, chunk, J), batch-major (chunk k of item i is row i*n + k).
        """
        sizes = chunk_sizes(x.shape[2], chunk)
        groups = [x[:, :, : sizes[0]]]
        if len(sizes) > 1:
            n = len(sizes) - 1
            groups.append(x[:, :, sizes[0] :].unflatten(2, (n, chunk)).transpose(1, 2).flatten(0, 1))
        return groups

    @staticmethod
    def _join_chunks(groups: list[torch.Tensor], batch: int) -> torch.Tensor:
        if len(groups) == 1:
            return groups[0]
        first, rest = groups
        rest = rest.unflatten(0, (batch, rest.shape[0] // batch)).transpose(1, 2).flatten(2, 3)
        return torch.cat([first, rest], dim=2)

    def encode_features(self, joints_normalized: torch.Tensor) -> torch.Tensor:
        """(B, T, J, 3) normalised joints -> (B, code_dim, T', J') pre-quantisation encoder output (fp32)."""
        x = joints_normalized.to(device=self.device, dtype=self.dtype).permute(0, 3, 1, 2)
        groups = [self.encoder(channels_last(g)) for g in self._split_chunks(x, self.config.encoder_chunk)]
        return self._join_chunks(groups, x.shape[0]).float().contiguous()

    def quantize(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, T', J') features -> tokens (B, T'*J', C) fp32, indices (B, T'*J') int64, commit loss ()."""
        b, c, t, j = features.shape
        flat = features.float().permute(0, 2, 3, 1).reshape(-1, c)
        # the search runs where the codebook is (a partially loaded model may keep it off the compute device)
        indices, _ = self.vq.nearest(flat.to(self.vq.codebook.device))
        tokens = self.vq.lookup(indices).to(flat.device)
        indices = indices.to(flat.device)
        commit = (flat - tokens).square().mean()  # upstream's commitment MSE (reported as "vq loss")
        return tokens.view(b, t * j, c), indices.view(b, t * j), commit

    def decode_tokens(self, tokens: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """(B, T'*J', C) tokens -> (B, T, J, 3) normalised joints (fp32)."""
        b, n, c = tokens.shape
        if n % latent_frames:
            raise ValueError(f"{n} tokens do not split into {latent_frames} latent frames")
        x = tokens.to(device=self.device, dtype=self.dtype).view(b, latent_frames, n // latent_frames, c)
        groups = self._split_chunks(x.permute(0, 3, 1, 2), self.config.decoder_chunk)
        groups = [self.decoder(channels_last(g)) for g in groups]
        return self._join_chunks(groups, b).permute(0, 2, 3, 1).float().contiguous()

    def decode_indices(self, indices: torch.Tensor, latent_frames: int) -> torch.Tensor:
        """(B, T'*J') codebook indices -> (B, T, J, 3) normalised joints."""
        return self.decode_tokens(self.vq.lookup(indices.to(self.vq.codebook.device)), latent_frames)

    def forward(self, joints_normalized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, quantise and decode: returns (reconstruction (B,T,J,3), indices (B,T'*J'), commit loss)."""
        features = self.encode_features(joints_normalized)
        tokens, indices, commit = self.quantize(features)
        recon = self.decode_tokens(tokens, features.shape[2])
        return recon, indices, commit
