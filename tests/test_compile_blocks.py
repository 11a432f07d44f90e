"""compile_blocks: per-block torch.compile in place (backend "eager" here: traced by dynamo, no inductor build)."""

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.dit.compile import compile_blocks
from mtv_pack.mtv_core.dit.sampler_7b import denoise_7b
from mtv_pack.mtv_core.dit.tiny import random_state_dict_7b, tiny_mvdit7b_config
from mtv_pack.mtv_core.dit.transformer_7b import MVDiT7B

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _denoise(model, frames, size):
    g = torch.Generator().manual_seed(frames * 100 + size)
    latents = torch.randn(1, frames, 16, size, size, generator=g)
    ref = torch.randn(1, frames, 16, size, size, generator=g)
    motion = torch.randn(1, frames * 24, 128, generator=g)
    mean = np.random.default_rng(0).normal(0, 200, (24, 3)).astype(np.float32)
    with torch.no_grad():
        return denoise_7b(model, latents, ref, motion, num_steps=2, guidance=3.0, joint_mean_mm=mean,
                          generator=torch.Generator().manual_seed(0))


def test_compiled_blocks_give_the_same_denoising_at_two_resolutions():
    torch.compiler.reset()
    config = tiny_mvdit7b_config()
    model = MVDiT7B(config)
    model.load_state_dict(random_state_dict_7b(config, seed=5))
    model.eval()
    keys = list(model.state_dict())
    expected = [_denoise(model, 13, 4), _denoise(model, 13, 6)]
    assert compile_blocks(model, backend="eager") == config.num_layers
    assert list(model.state_dict()) == keys  # in place: no _orig_mod prefixes
    for got, want in zip([_denoise(model, 13, 4), _denoise(model, 13, 6)], expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_unknown_mode_and_model_are_refused():
    with pytest.raises(ValueError, match="compile mode"):
        compile_blocks(MVDiT7B(tiny_mvdit7b_config()), mode="fastest")
    with pytest.raises(TypeError, match="no transformer_blocks"):
        compile_blocks(torch.nn.Linear(2, 2))


def test_cli_compile_flag_compiles_the_loaded_dit(tmp_path, monkeypatch):
    from mtv_pack.mtv_core.cli import main
    from mtv_pack.mtv_core.commands.animate import write_tiny_models
    from mtv_pack.mtv_core.dit import compile as compile_mod
    from mtv_pack.mtv_core.motion import procedural_motion, save_motion
    from PIL import Image

    compiled = []
    monkeypatch.setattr(compile_mod, "compile_blocks", lambda model, **kw: compiled.append(type(model).__name__))
    write_tiny_models(tmp_path / "models")
    save_motion(procedural_motion("dance", frames=49, fps=20.0), tmp_path / "m.npz")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "ref.png")
    args = ["animate", "--variant", "7b", "--ref", str(tmp_path / "ref.png"), "--motion", str(tmp_path / "m.npz"),
            "--models", str(tmp_path / "models"), "--out", str(tmp_path / "o.mp4"), "--steps", "1", "--width", "64",
            "--height", "64", "--device", "cpu", "--dtype", "fp32", "--compile"]
    assert main(args) == 0
    assert compiled == ["MVDiT7B"]
