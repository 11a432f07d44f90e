"""Tokenizer nodes on a tiny checkpoint in a temporary models folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mtv_pack.mtv_core.motion import JointSequence
from mtv_pack.mtv_core.tokenizer.tokens import MotionTokens
from mtv_pack.mtv_core.tokenizer.testing import write_tiny_checkpoint
from mtv_pack.nodes import tokenizer as nodes
from mtv_pack.nodes._comfy import ManagedModel, Placement


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MTV_MODELS_DIR", str(tmp_path))
    write_tiny_checkpoint(tmp_path / "mtvcrafter" / "4dmot_tiny.safetensors")
    (tmp_path / "vae").mkdir()
    save_file({"decoder.up_blocks.0.resnets.0.conv1.weight": torch.zeros(2, 2, 3, 3)},
              str(tmp_path / "vae" / "other_vae.safetensors"))
    return tmp_path


def _joints(frames: int) -> JointSequence:
    rng = np.random.default_rng(frames)
    return JointSequence(rng.normal(0, 100, (frames, 24, 3)).astype(np.float32) + [0, 200, 1800], fps=30.0)


def test_schemas():
    for cls in nodes.NODES:
        schema = cls.define_schema()
        assert schema.node_id.startswith("MTV") and schema.category == "MTVCrafter/Tokenizer"
    ids = [cls.define_schema().node_id for cls in nodes.NODES]
    assert ids == ["MTVLoadMotionTokenizer", "MTVEncodeMotion", "MTVDecodeMotionTokens"]


def test_load_encode_decode(models_dir):
    choices = nodes.tokenizer_file_choices()
    assert choices == ["4dmot_tiny.safetensors"]  # the VAE beside it is not offered (tests/test_loader_choices.py)
    (tokenizer,) = nodes.MTVLoadMotionTokenizer.execute(tokenizer_file=choices[0], dtype="fp32", device="cpu").args
    motion, recon, text = nodes.MTVEncodeMotion.execute(tokenizer=tokenizer, joints=_joints(100)).args
    assert isinstance(motion, MotionTokens) and len(motion.windows) == 3
    assert recon.num_frames == 97 and recon.fps == 30.0
    assert text.startswith("MPJPE ") and "mm over 97 frames" in text
    (decoded,) = nodes.MTVDecodeMotionTokens.execute(tokenizer=tokenizer, motion=motion).args
    np.testing.assert_allclose(decoded.joints_mm, recon.joints_mm, atol=1e-3)

    motion0, recon0, _ = nodes.MTVEncodeMotion.execute(tokenizer=tokenizer, joints=_joints(30), window=0).args
    assert len(motion0.windows) == 1 and recon0.num_frames == 30


def test_errors(models_dir):
    (tokenizer,) = nodes.MTVLoadMotionTokenizer.execute(tokenizer_file="4dmot_tiny.safetensors", device="cpu").args
    with pytest.raises(ValueError, match="4k\\+1"):
        nodes.MTVEncodeMotion.execute(tokenizer=tokenizer, joints=_joints(60), window=48)
    with pytest.raises(ValueError, match="window to 0"):
        nodes.MTVEncodeMotion.execute(tokenizer=tokenizer, joints=_joints(20), window=49)
    with pytest.raises(Exception, match="4DMoT"):
        nodes.MTVLoadMotionTokenizer.execute(tokenizer_file="other_vae.safetensors", device="cpu")
    with pytest.raises(FileNotFoundError):
        nodes.MTVLoadMotionTokenizer.execute(tokenizer_file="nope.safetensors", device="cpu")


def test_tokenizer_is_loaded_for_each_run_and_offloaded_after_when_placed_so(models_dir):
    (tokenizer,) = nodes.MTVLoadMotionTokenizer.execute(tokenizer_file="4dmot_tiny.safetensors", device="cpu").args
    assert tokenizer.placement == Placement(torch.device("cpu"), torch.device("cpu"))
    moves = []
    real_to = tokenizer.model.to
    tokenizer.model.to = lambda device: moves.append(str(device)) or real_to(device)
    motion = nodes.MTVEncodeMotion.execute(tokenizer=tokenizer, joints=_joints(49)).args[0]
    nodes.MTVDecodeMotionTokens.execute(tokenizer=tokenizer, motion=motion)
    assert moves == ["cpu", "cpu"]  # onto the load device for each node; it stays there (not unload_after)
    moves.clear()
    offloaded = ManagedModel(tokenizer.model, tokenizer.patcher,
                             Placement(torch.device("cpu"), torch.device("cpu"), unload_after=True))
    with pytest.raises(ValueError, match="window to 0"):  # also unloaded when the node fails
        nodes.MTVEncodeMotion.execute(tokenizer=offloaded, joints=_joints(20))
    assert moves == ["cpu", "cpu"]  # to the load device, then back to the offload device
