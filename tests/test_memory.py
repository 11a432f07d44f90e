"""Activation memory estimates passed to ComfyUI's load_models_gpu (mtv_core.memory)."""

from __future__ import annotations

import types

import numpy as np
import torch

from mtv_pack.mtv_core.dit.config import MVDiT7BConfig
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.dit.vae import CogVideoXVAE, tiny_vae_config
from mtv_pack.mtv_core.memory import (
    cogvideox_vae_activation_bytes,
    decode_7b_activation_bytes,
    dit7b_activation_bytes,
    sample_7b_activation_bytes,
    tokenizer_activation_bytes,
)
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.tokenizer.config import TokenizerConfig
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow
from mtv_pack.mtv_core.windows import plan_windows


def test_dit_estimate_is_tokens_times_width_times_dtype():
    released = MVDiT7BConfig()
    # 49 frames at 512 x 512: 13 x 32 x 32 tokens, hidden 3072, feed-forward 12288, bf16, motion guidance
    assert dit7b_activation_bytes(released, 13, 64, 64, batch=2, dtype=torch.bfloat16) == \
        2 * 13 * 32 * 32 * (2 * 3072 + 2 * 12288) * 2 == 1_635_778_560
    one = dit7b_activation_bytes(released, 13, 64, 64, batch=1, dtype=torch.bfloat16)
    assert dit7b_activation_bytes(released, 13, 64, 64, batch=1, dtype=torch.float32) == 2 * one
    assert dit7b_activation_bytes(released, 13, 128, 64, batch=1, dtype=torch.bfloat16) == 2 * one


def test_vae_estimate_is_bounded_by_the_tile_and_the_frame_batch():
    full = cogvideox_vae_activation_bytes(49, 512, 512, dtype=torch.bfloat16)
    tiled = cogvideox_vae_activation_bytes(49, 512, 512, dtype=torch.bfloat16, tile=(240, 360))
    assert tiled < full
    output = 49 * 3 * 512 * 512 * 4
    assert full - output == 2800 * 8 * 512 * 512 * 2  # 8 frames decoded at once, whatever the length
    assert cogvideox_vae_activation_bytes(97, 512, 512, dtype=torch.bfloat16) - 97 * 3 * 512 * 512 * 4 == full - output
    encode = cogvideox_vae_activation_bytes(49, 512, 512, dtype=torch.bfloat16, decode=False)
    assert encode - output == 1400 * 9 * 512 * 512 * 2


def test_tokenizer_estimate_grows_with_frames_and_stays_small():
    released = TokenizerConfig()
    window = tokenizer_activation_bytes(released, 49, dtype=torch.float32)
    assert 0 < window < 200 << 20  # tens of MB for a 49-frame window
    assert tokenizer_activation_bytes(released, 97, dtype=torch.float32) > window


def test_sampler_estimate_takes_the_larger_need_and_halves_the_dit_without_guidance():
    with torch.device("meta"):
        model = MVDiT7B(MVDiT7BConfig())  # the released width, no memory
    joints = JointSequence(np.zeros((89, 24, 3), np.float32), fps=20.0)
    plan = plan_windows(89)
    windows = [TokenWindow(s, 49, torch.zeros(1, 312, 8), torch.zeros(1, 312, dtype=torch.long)) for s in plan.starts]
    motion = MotionTokens(windows, joints, plan)
    small_tiles = types.SimpleNamespace(use_tiling=True, tile_sample_min_height=16, tile_sample_min_width=16)
    vae = types.SimpleNamespace(dtype=torch.bfloat16, vae=small_tiles,
                                latent_format=types.SimpleNamespace(spatial_compression=8))
    dit = dit7b_activation_bytes(model.config, 13, 64, 64, batch=2, dtype=model.dtype)
    assert sample_7b_activation_bytes(model, vae, motion, 512, 512, guidance=3.0) == dit  # the DiT needs more
    assert sample_7b_activation_bytes(model, vae, motion, 512, 512, guidance=1.0) == dit // 2
    vae.vae = types.SimpleNamespace(use_tiling=False)
    decode = cogvideox_vae_activation_bytes(49, 512, 512, dtype=torch.bfloat16)
    assert decode > dit and sample_7b_activation_bytes(model, vae, motion, 512, 512, guidance=3.0) == decode


def test_decode_estimate_reads_the_latents_and_the_vaes_tiling():
    from diffusers import AutoencoderKLCogVideoX

    config = {k: v for k, v in tiny_vae_config().items() if not k.startswith("_")}
    vae = CogVideoXVAE(AutoencoderKLCogVideoX.from_config(config), tiling=True)
    tile = (vae.vae.tile_sample_min_height, vae.vae.tile_sample_min_width)
    latents = types.SimpleNamespace(window=49, width=640, height=480)  # the MTVLatent fields it reads
    assert decode_7b_activation_bytes(vae, latents) == cogvideox_vae_activation_bytes(
        49, 480, 640, dtype=torch.float32, tile=tile)
    vae.set_tiling(False)
    assert decode_7b_activation_bytes(vae, latents) == cogvideox_vae_activation_bytes(49, 480, 640,
                                                                                     dtype=torch.float32)
