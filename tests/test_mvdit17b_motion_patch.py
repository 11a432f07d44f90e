"""MV-DiT-17B's motion layers on their own (mtv_core.dit.motion_patch): reading them from adapters and full
files, the layers against the full model's, motion tokens by frame (windows, stitching, offsets), next windows."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.dit.loading_17b import extract_adapter, read_motion_layers
from mtv_pack.mtv_core.dit.motion_patch import (
    MotionInputs,
    MotionTimeline,
    check_adapter_fits,
    load_motion_adapter,
    next_window_start,
    window_motion,
)
from mtv_pack.mtv_core.dit.rope import apply_rope
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b, vision_rope_17b
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config, write_tiny_mvdit17b
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B, _merge_heads, pad_motion_tokens
from mtv_pack.mtv_core.motion.sequence import JointSequence
from mtv_pack.mtv_core.motion.stats import load_stats
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens, TokenWindow

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("motion_layers")
    return {
        "full": write_tiny_mvdit17b(folder / "full.safetensors", seed=3),
        "scaled": write_tiny_mvdit17b(folder / "full_fp8.safetensors", seed=3, fp8="scaled",
                                      prefix="model.diffusion_model."),
        "adapter": write_tiny_mvdit17b(folder / "adapter.safetensors", seed=3, part="adapter"),
        "base": write_tiny_mvdit17b(folder / "base.safetensors", seed=3, part="base"),
        "folder": folder,
    }


def test_reads_the_motion_layers_of_adapters_and_full_files(files):
    config = tiny_mvdit17b_config()
    adapter, info = read_motion_layers(files["adapter"], torch.float32)
    full, full_info = read_motion_layers(files["full"], torch.float32)
    assert set(adapter) == set(full) and all(k.startswith(("blocks.0.", "blocks.4.")) for k in adapter)
    assert all(torch.equal(adapter[k], full[k]) for k in adapter)
    assert (info.dim, info.block_ids, info.num_heads, info.num_layers) == (config.dim, (0, 4), 2, None)
    assert full_info.num_layers == config.num_layers and info.qk_norm and info.cross_attn_norm
    assert info.motion_token_dim is None  # the tiny files record no token width
    scaled, scaled_info = read_motion_layers(files["scaled"], torch.float32)  # fp8 dequantised, prefix stripped
    assert set(scaled) == set(full) and scaled_info.block_ids == (0, 4)
    rel = max(((scaled[k] - full[k]).norm() / full[k].norm()).item() for k in full)
    assert 0 < rel < 0.08


def test_refuses_files_without_motion_layers(files, tmp_path):
    with pytest.raises(CheckpointError, match="base.safetensors: a Wan2.1 transformer, not a motion adapter"):
        read_motion_layers(files["base"])
    mixed = dict(read_motion_layers(files["adapter"], torch.float32)[0])
    mixed["blocks.4.norm4.weight"] = torch.ones(128)
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(CheckpointError, match="inconsistent widths"):
        read_motion_layers(tmp_path / "mixed.safetensors")


def test_extracted_adapter_records_its_layout(files, tmp_path):
    from safetensors import safe_open

    out = extract_adapter(files["full"], tmp_path / "a.safetensors", dtype=torch.float32)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["motion_blocks"] == "0,4" and meta["dim"] == "256" and "motion_token_dim" not in meta
    save_file(read_motion_layers(out)[0], str(tmp_path / "b.safetensors"), metadata={"motion_token_dim": "192"})
    assert read_motion_layers(tmp_path / "b.safetensors")[1].motion_token_dim == 192


def test_adapter_layers_equal_the_full_models_motion_attention(files):
    """The adapter's layer (norm4 + motion attention, caller's RoPE and attention) is the full model's."""
    config = tiny_mvdit17b_config()
    model = MVDiT17B(config)
    model.load_state_dict(random_state_dict_17b(config, seed=3))
    adapter = load_motion_adapter(files["adapter"], dtype=torch.float32)
    assert adapter.block_ids == config.motion_blocks
    g = torch.Generator().manual_seed(1)
    frames, gh, gw = 3, 2, 3
    x = torch.randn(2, frames * gh * gw, config.dim, generator=g)
    motion = pad_motion_tokens(torch.randn(2, frames * 24, 192, generator=g), config.dim)
    q_rope = vision_rope_17b(frames, gh, gw, config.head_dim)
    k_rope = motion_rope_17b(frames, load_stats()[0], config.head_dim)
    with torch.no_grad():
        for i in config.motion_blocks:
            block = model.blocks[i]
            expected = block.motion_attn(block.norm4(x), motion, q_rope, k_rope)
            got = adapter.layer(i)(
                x, motion, lambda q: apply_rope(q, *q_rope), k_rope,
                lambda q, k, v: _merge_heads(torch.nn.functional.scaled_dot_product_attention(q, k, v)))
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_check_adapter_fits(files):
    info = read_motion_layers(files["full"])[1]
    check_adapter_fits(info, 256, 5)
    with pytest.raises(ValueError, match="width 256 do not fit the model of width 512"):
        check_adapter_fits(info, 512, 5)
    with pytest.raises(ValueError, match="up to block 4, but the model has 3 blocks"):
        check_adapter_fits(info, 256, 3)
    with pytest.raises(ValueError, match="of a 5-block model; the model has 8"):
        check_adapter_fits(info, 256, 8)


def _motion(starts=(0, 40), frames=49, width=8):
    windows = []
    for k, start in enumerate(starts):
        latent = (frames - 1) // 4 + 1
        tokens = torch.arange(latent * 24, dtype=torch.float32)[:, None].repeat(1, width) + 1000 * k
        windows.append(TokenWindow(start, frames, tokens[None], (torch.arange(latent * 24) + 1000 * k)[None]))
    total = starts[-1] + frames
    joints = JointSequence(np.zeros((total, 24, 3), np.float32), fps=20.0)
    return MotionTokens(windows=windows, joints=joints)


def test_timeline_gives_window_tokens_or_stitches_them():
    timeline = MotionTimeline.from_motion(_motion())
    assert timeline.latent_frames == 23 and timeline.num_frames == 89 and timeline.width == 8
    # a span that is a tokenizer window gets that window's own tokens (window 1 starts at frame 40)
    own = timeline.tokens(40, range(13))
    assert torch.equal(own[:, 0], torch.arange(13 * 24, dtype=torch.float32) + 1000)
    # a context window inside it: its latent frames of that window
    picked = timeline.tokens(40, [2, 3, 7])
    assert torch.equal(picked.view(3, 24, 8)[:, 0, 0], torch.tensor([2.0, 3.0, 7.0]) * 24 + 1000)
    # the whole video: latent frames 0-12 from window 0, 13-22 from window 1 (its frames 3-12)
    stitched = timeline.tokens(0, range(23)).view(23, 24, 8)[:, 0, 0]
    assert torch.equal(stitched[:13], torch.arange(13.0) * 24)
    assert torch.equal(stitched[13:], torch.arange(3, 13.0) * 24 + 1000)
    # an offset between windows (frame 20 = latent 5): stitched
    assert torch.equal(timeline.tokens(20, [0, 9]).view(2, 24, 8)[:, 0, 0], torch.tensor([5.0 * 24, 1000 + 24 * 4]))
    assert torch.equal(timeline.indices(40, [1]), torch.arange(24, 48) + 1000)


def test_timeline_errors():
    timeline = MotionTimeline.from_motion(_motion())
    with pytest.raises(ValueError, match="needs motion up to frame 93"):
        timeline.tokens(0, range(24))
    with pytest.raises(ValueError, match="multiple of 4"):
        timeline.tokens(2, range(3))
    with pytest.raises(ValueError, match="different token widths"):
        MotionTimeline([(0, torch.zeros(24, 8), None), (40, torch.zeros(24, 9), None)])


def test_motion_inputs_pad_tokens_and_build_float32_rope():
    timeline = MotionTimeline.from_motion(_motion(width=192))
    inputs = MotionInputs(timeline, dim=256, head_dim=128, token_dim=192)
    tokens, (cos, sin) = inputs(40, range(5), batch=2, dtype=torch.bfloat16, device=torch.device("cpu"))
    assert tokens.shape == (2, 120, 256) and tokens.dtype == torch.bfloat16
    assert torch.count_nonzero(tokens[..., 192:]) == 0
    assert cos.dtype == torch.float32 and cos.shape == (120, 128)
    torch.testing.assert_close(cos, motion_rope_17b(5, load_stats()[0], 128)[0])
    with pytest.raises(ValueError, match="expected \\(B, tokens, 3072\\)"):
        MotionInputs(timeline, dim=5120, token_dim=3072)
    with pytest.raises(ValueError, match="<= 128"):
        MotionInputs(timeline, dim=128)


def test_next_window_start_and_window_motion():
    assert next_window_start(49, 9, 49) == 40
    assert next_window_start(89, 9, 49) == 80
    with pytest.raises(ValueError, match="not a multiple of 4"):
        next_window_start(50, 9, 49)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        next_window_start(49, 8, 49)
    with pytest.raises(ValueError, match="fewer than the overlap"):
        next_window_start(5, 9, 49)
    motion = _motion()
    window = window_motion(motion, 40, 49)
    assert len(window.windows) == 1 and window.windows[0].start == 0
    assert torch.equal(window.windows[0].tokens, motion.windows[1].tokens)
    assert torch.equal(window.windows[0].indices, motion.windows[1].indices)
    assert window.joints.num_frames == 49
    short = window_motion(motion, 20, 17)
    assert short.windows[0].tokens.shape == (1, 5 * 24, 8)
    with pytest.raises(ValueError, match="needs motion up to frame"):
        window_motion(motion, 80, 49)
