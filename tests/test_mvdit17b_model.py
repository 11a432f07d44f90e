"""MV-DiT-17B structure: the released key list on the meta device, config inference, input checks."""

import json

import numpy as np
import pytest
import torch
from conftest import reference_dir

from mtv_pack.mtv_core.dit.config_17b import MVDiT17BConfig, motion_interval_from_keys
from mtv_pack.mtv_core.dit.fp8_ops import FP8Linear, FP8Operations
from mtv_pack.mtv_core.dit.loading_17b import build_17b, is_mvdit17b_keys
from mtv_pack.mtv_core.dit.rope_17b import motion_rope_17b, vision_rope_17b
from mtv_pack.mtv_core.dit.tiny_17b import random_state_dict_17b, tiny_mvdit17b_config
from mtv_pack.mtv_core.dit.transformer_17b import MVDiT17B, pad_text_context

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FULL_KEYS = reference_dir() / "mvdit17b" / "mvdit17b_full_keys.json"


@pytest.fixture(scope="module")
def full_shapes():
    return {k: tuple(v) for k, v in json.loads(FULL_KEYS.read_text())["params"].items()}


def test_released_model_on_meta_has_exactly_the_released_keys(full_shapes):
    model = build_17b(MVDiT17BConfig())
    assert next(model.parameters()).device.type == "meta"
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == full_shapes
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(int(np.prod(s)) for s in full_shapes.values())
    assert round(count / 1e9, 3) == 17.444
    assert MVDiT17BConfig().motion_blocks == tuple(range(0, 40, 4))


def test_config_inferred_from_the_released_shapes(full_shapes):
    assert MVDiT17BConfig.infer_from_shapes(full_shapes) == MVDiT17BConfig()


def test_fp8_operations_add_one_scale_per_linear(full_shapes):
    model = build_17b(MVDiT17BConfig(), FP8Operations)
    linears = [name for name, m in model.named_modules() if isinstance(m, FP8Linear)]
    assert set(model.state_dict()) == set(full_shapes) | {f"{n}.scale_weight" for n in linears}
    # per block: self-attention 4, cross-attention 6, FFN 2; motion attention 4 in 10 blocks; text 2, time 2,
    # time projection 1, head 1, image embedding 2
    assert len(linears) == 40 * 12 + 10 * 4 + 2 + 2 + 1 + 1 + 2


def test_recognises_17b_keys_with_any_prefix(full_shapes):
    keys = list(full_shapes)
    assert is_mvdit17b_keys(keys)
    assert is_mvdit17b_keys(["model.diffusion_model." + k for k in keys] + ["scaled_fp8"])
    assert not is_mvdit17b_keys([k for k in keys if ".motion_attn." not in k])
    assert not is_mvdit17b_keys(["unconditional_motion_token", "transformer_blocks.0.attn0.to_q.weight"])


def test_motion_interval_from_keys():
    keys = [f"blocks.{i}.motion_attn.q.weight" for i in (0, 4, 8)]
    assert motion_interval_from_keys(keys) == 4
    assert motion_interval_from_keys([f"blocks.{i}.motion_attn.q.weight" for i in (0, 2)]) == 2
    assert motion_interval_from_keys(["blocks.0.motion_attn.q.weight"], num_layers=7) == 7
    with pytest.raises(ValueError, match="every 4th"):
        motion_interval_from_keys([f"blocks.{i}.motion_attn.q.weight" for i in (0, 4, 9)])


def test_wan_config_json_keys():
    released = {"_class_name": "WanModel", "dim": 5120, "eps": 1e-06, "ffn_dim": 13824, "freq_dim": 256, "in_dim": 36,
                "model_type": "i2v", "num_heads": 40, "num_layers": 40, "out_dim": 16, "text_len": 512,
                "patch_size": [1, 2, 2], "use_2d": False, "in_channels": 16, "hidden_size": 2048}
    assert MVDiT17BConfig.from_wan_config(released) == MVDiT17BConfig()
    round_trip = MVDiT17BConfig.from_wan_config(tiny_mvdit17b_config().to_wan_config(), motion_token_dim=192)
    assert round_trip == tiny_mvdit17b_config()
    with pytest.raises(ValueError, match="image-to-video"):
        MVDiT17BConfig.from_wan_config({**released, "model_type": "t2v"})
    with pytest.raises(ValueError, match="use_2d"):
        MVDiT17BConfig.from_wan_config({**released, "use_2d": True})


def test_rope_bands_of_the_release():
    cos, sin = vision_rope_17b(2, 3, 4, 128)
    assert cos.shape == (24, 128) and cos.dtype == torch.float32
    # t band (44 dims) depends on the frame only, h (42) on the row, w (42) on the column
    grid = cos.reshape(2, 3, 4, 128)
    assert torch.equal(grid[:, 0, 0, :44], grid[:, 2, 3, :44]) and not torch.equal(grid[0, 0, 0, :44], grid[1, 0, 0, :44])
    assert torch.equal(grid[0, :, 0, 44:86], grid[1, :, 3, 44:86]) and torch.equal(grid[0, 0, :, 86:], grid[1, 2, :, 86:])
    mean = np.load(reference_dir() / "motion" / "mean.npy")
    mcos, _ = motion_rope_17b(3, mean, 128)
    assert mcos.shape == (72, 128)
    # the motion t band is the vision t band of the token's latent frame (frame-major, joint-minor order)
    assert torch.equal(mcos[:, :44], vision_rope_17b(3, 1, 1, 128)[0][:, :44].repeat_interleave(24, 0))


@pytest.fixture(scope="module")
def tiny():
    config = tiny_mvdit17b_config()
    model = MVDiT17B(config)
    model.load_state_dict(random_state_dict_17b(config, seed=3))
    return model.eval()


def _inputs(frames=2, h=4, w=6, text=64, tokens=192, batch=1):
    g = torch.Generator().manual_seed(0)
    return dict(
        latents=torch.randn(batch, 16, frames, h, w, generator=g), y=torch.randn(1, 20, frames, h, w, generator=g),
        context=torch.randn(batch, 5, text, generator=g), clip_fea=torch.randn(1, 257, 1280, generator=g),
        motion_tokens=torch.randn(1, frames * 24, tokens, generator=g),
        motion_rope=motion_rope_17b(frames, np.load(reference_dir() / "motion" / "mean.npy")),
    )


def test_forward_shape_broadcast_and_context_padding(tiny):
    inputs = _inputs(batch=2)
    with torch.no_grad():
        out = tiny(timestep=torch.tensor([300.0, 300.0]), **inputs)
        assert out.shape == (2, 16, 2, 4, 6)
        # conditioning with batch 1 is broadcast; a list of unpadded contexts equals the zero-padded tensor
        listed = tiny(timestep=300.0, **{**inputs, "context": list(inputs["context"])})
        padded = pad_text_context(inputs["context"], 512)
        assert padded.shape == (2, 512, 64) and torch.count_nonzero(padded[:, 5:]) == 0
        torch.testing.assert_close(listed, out, atol=1e-5, rtol=0)
        # zero padding is part of the model's input (the padded rows are attended to, as in Wan)
        shorter = tiny(timestep=300.0, **{**inputs, "context": inputs["context"][:, :3]})
        assert (shorter - out).abs().max() > 1e-4


def test_forward_rejects_bad_inputs(tiny):
    inputs = _inputs()
    with pytest.raises(ValueError, match="channel-first"):
        tiny(timestep=1.0, **{**inputs, "y": None})
    with pytest.raises(ValueError, match="motion tokens"):
        tiny(timestep=1.0, **{**inputs, "motion_tokens": torch.zeros(1, 48, 100)})
    with pytest.raises(ValueError, match="RoPE"):
        tiny(timestep=1.0, **{**inputs, "motion_rope": tuple(t[:24] for t in inputs["motion_rope"])})
    with pytest.raises(ValueError, match="at most 512"):
        tiny(timestep=1.0, **{**inputs, "context": torch.zeros(1, 513, 64)})


def test_motion_rope_stays_float32_in_bf16(tiny):
    """bf16 model: the motion tables reach the rotation in float32 (bf16 tables would wreck the x/y/z bands)."""
    import copy

    model = copy.deepcopy(tiny).to(torch.bfloat16)
    seen = []
    attn = model.blocks[0].motion_attn
    original = attn.forward

    def spy(x, motion, q_rope, k_rope):
        seen.append((q_rope[0].dtype, k_rope[0].dtype, x.dtype))
        return original(x, motion, q_rope, k_rope)

    attn.forward = spy
    with torch.no_grad():
        out = model(timestep=500.0, **_inputs())
    assert seen == [(torch.float32, torch.float32, torch.bfloat16)]
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        ref = tiny(timestep=500.0, **_inputs())
    assert ((out.float() - ref).norm() / ref.norm()) < 0.03  # bf16 rounding, not a broken rotation
