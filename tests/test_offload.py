"""CLI offloading with diffusers' hooks on CPU: group / leaf offloading (onload device = CPU, the path that runs
here) leaves results unchanged, fp8 weight storage with layerwise casting stays close to the compute dtype, and
``python -m mtv_core animate --offload group --weight-dtype fp8_e4m3fn`` runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtv_pack.mtv_core.offload as offload_module
from mtv_pack.mtv_core.cli import main
from mtv_pack.mtv_core.commands import animate as animate_cmd
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B
from mtv_pack.mtv_core.motion import procedural_motion, save_motion
from mtv_pack.mtv_core.offload import apply_offload, apply_weight_dtype, place_dit, weight_dtype
from mtv_pack.mtv_core.video import read_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = 13  # the unconditional tokens' length, so motion guidance runs


def _model(dtype=torch.float32) -> MVDiT7B:
    model = MVDiT7B(tiny_mvdit7b_config())
    model.load_state_dict(random_state_dict_7b(tiny_mvdit7b_config(), seed=7))
    return model.to(dtype).eval().requires_grad_(False)


def _denoise(model) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, FRAMES, 16, 4, 4, generator=g)
    ref = torch.randn(1, FRAMES, 16, 4, 4, generator=g)
    motion = torch.randn(1, FRAMES * 24, 128, generator=g)
    joint_mean = np.zeros((24, 3), np.float32) + [0, 0, 2000]
    return denoise_7b(model, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=joint_mean,
                      generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def plain_result():
    return _denoise(_model())


@pytest.mark.parametrize("mode", ["group", "leaf"])
def test_group_offloading_leaves_the_result_unchanged(mode, plain_result):
    model = _model()
    apply_offload(model, mode, "cpu")
    assert any(hasattr(m, "_diffusers_hook") for m in model.transformer_blocks[0].modules())  # hooks attached
    assert model.device == torch.device("cpu")
    assert torch.equal(_denoise(model), plain_result)


def test_fp8_weight_storage_stays_close_to_the_compute_dtype():
    reference = _denoise(_model(torch.bfloat16)).float()
    model = _model(torch.bfloat16)
    apply_weight_dtype(model, torch.float8_e4m3fn, torch.bfloat16)
    block = model.transformer_blocks[0]
    assert block.attn1.to_q.weight.dtype == torch.float8_e4m3fn and block.ff.net[2].weight.dtype == torch.float8_e4m3fn
    # diffusers' default skip patterns: norms, patch embedding and output projection keep the compute dtype
    assert block.norm1.linear.weight.dtype == torch.bfloat16 and model.proj_out.weight.dtype == torch.bfloat16
    assert model.unconditional_motion_token.dtype == torch.bfloat16 and model.dtype == torch.bfloat16
    result = _denoise(model).float()
    relative = ((result - reference).norm() / reference.norm()).item()
    assert 0 < relative < 0.1, relative  # fp8 (3 mantissa bits) rounds the weights, a few percent overall
    combined = _model(torch.bfloat16)
    place_dit(combined, "cpu", offload="group", storage_dtype=torch.float8_e4m3fn)
    assert torch.equal(_denoise(combined), result.to(torch.float32))


def test_weight_dtype_and_offload_names_are_checked():
    assert weight_dtype(None) is None and weight_dtype("fp8_e5m2") == torch.float8_e5m2
    with pytest.raises(ValueError, match="fp8_e4m3fn"):
        weight_dtype("int4")
    with pytest.raises(ValueError, match="none, group, leaf"):
        apply_offload(_model(), "disk", "cpu")


def test_cli_animate_with_group_offload_and_fp8_weights(tmp_path, monkeypatch):
    paths = animate_cmd.write_tiny_models(tmp_path / "models")
    save_motion(procedural_motion("wave", frames=49, fps=20.0), tmp_path / "wave.npz")
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "ref.png")
    placed = []

    def spy(model, device, offload="none", storage_dtype=None):  # loaded in CPU RAM, then hooked
        placed.append((str(device), offload, storage_dtype, model.proj_out.weight.device.type))
        return place_dit(model, device, offload=offload, storage_dtype=storage_dtype)

    monkeypatch.setattr(offload_module, "place_dit", spy)
    out = tmp_path / "out.mp4"
    code = main(["animate", "--ref", str(tmp_path / "ref.png"), "--motion", str(tmp_path / "wave.npz"),
                 "--models", str(paths.tokenizer.parents[1]), "--out", str(out), "--steps", "2", "--width", "64",
                 "--height", "64", "--device", "cpu", "--dtype", "fp32", "--offload", "group",
                 "--weight-dtype", "fp8_e4m3fn"])
    assert code == 0 and placed == [("cpu", "group", torch.float8_e4m3fn, "cpu")]
    frames, _ = read_video(out)
    assert frames.shape == (49, 64, 64, 3)
