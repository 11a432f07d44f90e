"""Activation memory estimates (bytes) for the models, for whoever places weights (ComfyUI's
``load_models_gpu(memory_required=...)``, the CLI's logs).

These are the memory a call needs *besides* the weights, from the sizes of the tensors it holds at its peak:

MV-DiT-7B, one forward of ``batch`` samples (2 with motion guidance, 1 without)::

    tokens = latent_frames * (latent_h / patch) * (latent_w / patch)
    bytes  = batch * tokens * (2 * hidden + 2 * ff_inner) * itemsize(compute dtype)

The peak is in a block's feed-forward: the residual stream and its normalised copy (2 x hidden) and the GELU's
input and output (2 x ff_inner = 8 x hidden) per token. The attention path holds less (residual, normalised
input, q, k, v, output: about 7 x hidden), assuming a memory-efficient kernel (xformers or PyTorch SDPA's flash /
efficient kernels, which CUDA uses in bf16/fp16) that never materialises the tokens x tokens scores. The motion
tokens (latent_frames x 24) and the RoPE tables are small next to this. 49 frames at 512 x 512 in bf16 with
guidance: 2 * 13312 * (2 * 3072 + 2 * 12288) * 2 = 1.64 GB.

CogVideoX VAE (diffusers ``AutoencoderKLCogVideoX``, which decodes 2 latent frames = 8 video frames and encodes
8 video frames at a time, with their conv caches)::

    decode bytes = 2800 * min(8, 4 * (latent_frames - 1) + 1) * area * itemsize
    encode bytes = 1400 * min(9, frames) * area * itemsize

with ``area`` the pixel area of one tile (the whole frame without tiling): the per-pixel factors ComfyUI uses
for its own CogVideoX VAE (``comfy/sd.py``), plus the decoded output (frames x 3 x H x W floats). Measured for
diffusers' implementation (``benchmarks/bench_vae_memory.py``, CPU fp32, 120 x 184): 2156 values per pixel and
frame decoding, 1023 encoding, so these factors hold with about 30 % to spare.

MV-DiT-17B, one forward of ``batch`` samples (2 with text CFG, 1 distilled; the pass without motion of motion
guidance is a separate forward of batch 1, so it adds time, not memory)::

    tokens = latent_frames * (latent_h / 2) * (latent_w / 2)
    bytes  = batch * tokens * (2 * dim + 2 * ffn_dim) * itemsize(compute dtype)
           + batch * (text_len + clip_tokens) * 2 * dim * itemsize   (cross-attention keys and values)

As for the 7B the peak is a block's feed-forward (residual + normalised copy, GELU input + output) with a
memory-efficient attention kernel. 49 frames at 512 x 512 in bf16 with text CFG: 2 * 13312 * (2 * 5120 + 2 * 13824)
* 2 = 2.02 GB, plus 0.03 GB of cross-attention keys and values.

Wan2.1 VAE (ComfyUI's own factors for it, ``comfy/sd.py``, per pixel of one frame)::

    encode bytes = 6000 * H * W * itemsize      (1500 for at most 4 frames)
    decode bytes = 7000 * h * w * 64 * itemsize (2200 for at most 4 latent frames), h, w = latent size

4DMoT tokenizer, one window of ``frames`` frames: a residual block's few live feature maps at the widest width,
the im2col matrix of the widest 3x3 conv, and one block of the code search::

    bytes = 6 * frames * joints * max_channels * itemsize
          + latent_frames * latent_joints * 9 * max(code_dim, widest) * itemsize
          + min(rows, 2048) * num_codes * 4
"""

from __future__ import annotations

import torch

TOKENIZER_LIVE_MAPS = 6  # feature maps alive at once in a residual block (input, norm, conv, norm, conv, sum)
VAE_DECODE_PER_PIXEL = 2800  # ComfyUI's factor for its CogVideoX VAE decode, per output pixel and frame
VAE_ENCODE_PER_PIXEL = 1400  # ... and encode, per input pixel and frame
VAE_DECODE_FRAMES = 8  # video frames decoded at once (2 latent frames)
VAE_ENCODE_FRAMES = 9  # video frames encoded at once (8, plus the causal first frame)


def dit7b_activation_bytes(config, latent_frames: int, latent_height: int, latent_width: int, *, batch: int,
                           dtype: torch.dtype) -> int:
    """Peak activation memory of one MV-DiT-7B forward (see the module docstring); ``config`` an MVDiT7BConfig."""
    p = config.patch_size
    tokens = latent_frames * (latent_height // p) * (latent_width // p)
    return batch * tokens * (2 * config.inner_dim + 2 * config.ff_dim) * dtype.itemsize


def dit17b_activation_bytes(config, latent_frames: int, latent_height: int, latent_width: int, *, batch: int,
                            dtype: torch.dtype, clip_tokens: int = 257) -> int:
    """Peak activation memory of one MV-DiT-17B forward (see the module docstring); ``config`` an MVDiT17BConfig."""
    _, ph, pw = config.patch_size
    tokens = latent_frames * (latent_height // ph) * (latent_width // pw)
    itemsize = dtype.itemsize
    feed_forward = batch * tokens * (2 * config.dim + 2 * config.ffn_dim) * itemsize
    cross = batch * (config.text_len + clip_tokens) * 2 * config.dim * itemsize
    return feed_forward + cross


def wan_vae_activation_bytes(frames: int, height: int, width: int, *, dtype: torch.dtype, decode: bool = True) -> int:
    """Peak activation memory of a Wan2.1 VAE decode (or encode) of ``frames`` video frames of height x width pixels,
    with ComfyUI's factors for its Wan VAE, plus the decoded / input video in float32."""
    output = frames * 3 * height * width * 4
    if decode:
        from .constants import latent_frames

        factor = 2200 if latent_frames(frames) <= 4 else 7000
        return factor * (height // 8) * (width // 8) * 64 * dtype.itemsize + output
    factor = 1500 if frames <= 4 else 6000
    return factor * height * width * dtype.itemsize + output


def sample_17b_activation_bytes(model, motion, width: int, height: int, *, text_cfg: bool = True,
                                vae_dtype: torch.dtype | None = None) -> int:
    """The most ``pipeline_17b.sample_17b`` holds besides the weights: the larger of one MV-DiT-17B forward (batch 2
    with text CFG) and the Wan VAE encoding or decoding one window (``vae_dtype`` None: the VAE is placed
    elsewhere, e.g. ComfyUI's native VAE, which asks for its own room). ``model`` an MVDiT17B."""
    from .constants import latent_frames

    frames = motion.window_frames
    dit = dit17b_activation_bytes(model.config, latent_frames(frames), height // 8, width // 8,
                                  batch=2 if text_cfg else 1, dtype=model.dtype)
    if vae_dtype is None:
        return dit
    return max(dit, wan_vae_activation_bytes(frames, height, width, dtype=vae_dtype, decode=False),
               wan_vae_activation_bytes(frames, height, width, dtype=vae_dtype))


def cogvideox_vae_activation_bytes(frames: int, height: int, width: int, *, dtype: torch.dtype,
                                   tile: tuple[int, int] | None = None, decode: bool = True) -> int:
    """Peak activation memory of a CogVideoX VAE decode (or encode) of ``frames`` video frames of height x width
    pixels; ``tile`` (tile_height, tile_width) in pixels when tiling is on."""
    tile_h, tile_w = tile if tile is not None else (height, width)
    area = min(height, tile_h) * min(width, tile_w)
    output = frames * 3 * height * width * 4  # the decoded / input video in float32
    if decode:
        return VAE_DECODE_PER_PIXEL * min(VAE_DECODE_FRAMES, frames) * area * dtype.itemsize + output
    return VAE_ENCODE_PER_PIXEL * min(VAE_ENCODE_FRAMES, frames) * area * dtype.itemsize + output


def tokenizer_activation_bytes(config, frames: int, *, dtype: torch.dtype) -> int:
    """Peak activation memory of encoding and decoding one window of ``frames`` frames with 4DMoT;
    ``config`` a TokenizerConfig."""
    widest = max(*config.encoder_channels, *config.decoder_channels)
    latent_rows = config.latent_frames(frames) * config.latent_joints
    maps = TOKENIZER_LIVE_MAPS * frames * config.num_joints * widest * dtype.itemsize
    # encoder output, its fp32 (rows, code_dim) copy and the looked-up tokens
    features = 3 * latent_rows * config.code_dim * 4
    # codebook search (tokenizer/search.py): fp32 lower bounds and flags per (row, code), or the full search's
    # fp32 distances, for at most 2048 rows at a time
    search = min(latent_rows, 2048) * config.num_codes * 6
    return maps + features + search


def vae_tile(vae_module) -> tuple[int, int] | None:
    """(height, width) in pixels of a diffusers CogVideoX VAE's tiles when its tiling is on, else None."""
    if not getattr(vae_module, "use_tiling", False):
        return None
    return int(vae_module.tile_sample_min_height), int(vae_module.tile_sample_min_width)


def sample_7b_activation_bytes(model, vae, motion, width: int, height: int, guidance: float) -> int:
    """The most ``pipeline_7b.sample_7b`` holds besides the weights: the larger of one MV-DiT-7B forward (batch 2
    with motion guidance) and the VAE encoding or decoding one window. ``model`` an MVDiT7B, ``vae`` a VideoVAE,
    ``motion`` the MotionTokens to sample."""
    from .constants import latent_frames

    frames = motion.window_frames  # 0 (no window): sample_7b reports it
    s = vae.latent_format.spatial_compression
    dit = dit7b_activation_bytes(model.config, latent_frames(frames), height // s, width // s,
                                 batch=1 if guidance == 1.0 else 2, dtype=model.dtype)
    encode = cogvideox_vae_activation_bytes(frames, height, width, dtype=vae.dtype, tile=vae_tile(vae.vae),
                                            decode=False)
    decode = cogvideox_vae_activation_bytes(frames, height, width, dtype=vae.dtype, tile=vae_tile(vae.vae))
    return max(dit, encode, decode)


def decode_7b_activation_bytes(vae, latents) -> int:
    """What decoding the sampler's latents (an ``MTVLatent``) holds besides the VAE's weights, one window at a
    time; ``vae`` a CogVideoXVAE."""
    frames, width, height = latents.window, latents.width, latents.height
    return cogvideox_vae_activation_bytes(frames, height, width, dtype=vae.dtype, tile=vae_tile(vae.vae))
