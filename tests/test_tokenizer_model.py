"""4DMoT model behaviour on tiny random weights: chunking, lengths, loading, encode/decode API, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.checkpoint import CheckpointError
from mtv_pack.mtv_core.motion import JointSequence
from mtv_pack.mtv_core.tokenizer import encode as enc
from mtv_pack.mtv_core.tokenizer.config import TokenizerConfig, chunk_sizes
from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer, save_tokenizer
from mtv_pack.mtv_core.tokenizer.model import MotionVQVAE
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG, tiny_model, write_tiny_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> MotionVQVAE:
    return tiny_model()


def _naive_encode(model, x):
    """Upstream's loop: one chunk at a time through the plain module forward."""
    x = x.permute(0, 3, 1, 2)
    outs, pos = [], 0
    for size in chunk_sizes(x.shape[2], model.config.encoder_chunk):
        outs.append(model.encoder(x[:, :, pos : pos + size]))
        pos += size
    return torch.cat(outs, dim=2)


def _naive_decode(model, feats):
    outs, pos = [], 0
    for size in chunk_sizes(feats.shape[2], model.config.decoder_chunk):
        outs.append(model.decoder(feats[:, :, pos : pos + size]))
        pos += size
    return torch.cat(outs, dim=2).permute(0, 2, 3, 1)


def test_chunk_rule():
    assert chunk_sizes(49, 8) == [9, 8, 8, 8, 8, 8]
    assert chunk_sizes(13, 2) == [3, 2, 2, 2, 2, 2]
    assert chunk_sizes(16, 8) == [8, 8]
    assert chunk_sizes(5, 8) == [5]


@pytest.mark.parametrize("frames,latent", [(49, 13), (17, 5), (81, 21), (97, 25), (8, 2), (1, 1)])
def test_latent_frames_of_released_config(frames, latent):
    assert TokenizerConfig().latent_frames(frames) == latent


def test_resblock_dilation_rule():
    with torch.device("meta"):
        released = MotionVQVAE(TokenizerConfig())
    assert released.encoder.resnet1[0].block[2].dilation == (3, 3)
    assert released.encoder.resnet3[0].block[2].dilation == (1, 1)
    assert released.decoder.resnet3[0].block[2].dilation == (3, 3)


@pytest.mark.parametrize("frames", [1, 2, 5, 8, 9, 16, 17, 49, 50, 57])
def test_batched_chunks_match_upstream_loop(model, frames):
    x = torch.randn(2, frames, 24, 3, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        feats = model.encode_features(x)
        ref = _naive_encode(model, x)
        assert feats.shape == ref.shape
        assert feats.shape[2] == model.config.latent_frames(frames)
        torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
        tokens, indices, _ = model.quantize(feats)
        recon = model.decode_tokens(tokens, feats.shape[2])
        codes = tokens.view(2, feats.shape[2], 24, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(recon, _naive_decode(model, codes), atol=1e-5, rtol=1e-5)
    # the latent time rule of upstream: 4k+1 frames -> k+1 latent frames per 8k+1 block
    if frames % 8 == 1:
        assert recon.shape[1] == frames


def test_code_selection_is_exact_nearest_and_frame_major(model):
    feats = torch.randn(1, model.config.code_dim, 3, 24)
    tokens, indices, commit = model.quantize(feats)
    flat = feats.permute(0, 2, 3, 1).reshape(-1, model.config.code_dim)  # (f, j) order
    expected = torch.cdist(flat.double(), model.vq.codebook.double()).argmin(dim=1)
    assert torch.equal(indices[0], expected)
    assert torch.equal(tokens[0], model.vq.codebook[expected])
    assert commit == pytest.approx(float((flat - tokens[0]).square().mean()), rel=1e-5)


def test_codebook_stays_fp32_in_half_models():
    model = tiny_model().to(torch.bfloat16)
    assert model.vq.codebook.dtype == torch.float32
    assert model.encoder.conv_in.weight.dtype == torch.bfloat16
    joints = np.random.default_rng(0).normal(0, 100, (17, 24, 3)).astype(np.float32) + [0, 0, 2000]
    out = enc.encode_joints(model, joints)
    assert out.tokens.dtype == torch.float32 and out.indices.dtype == torch.int64


@pytest.mark.parametrize("suffix,with_config", [(".safetensors", True), (".pt", True), (".safetensors", False)])
def test_load_formats_roundtrip(tmp_path, suffix, with_config):
    path = write_tiny_checkpoint(tmp_path / f"tok{suffix}", with_config=with_config)
    overrides = {}
    if suffix == ".pt" or not with_config:  # upstream/kijai files carry no config: sizes come from shapes
        overrides = {"norm_groups": TINY_CONFIG.norm_groups, "dilation_base": TINY_CONFIG.dilation_base}
    loaded = load_tokenizer(path, **overrides)
    assert loaded.config == TINY_CONFIG
    reference = tiny_model()
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not any(p.requires_grad for p in loaded.parameters())


def test_saved_stats_travel_with_the_checkpoint(tmp_path):
    model = tiny_model()
    model.stats = (np.full((24, 3), 5.0, np.float32), np.full((24, 3), 2.0, np.float32))
    path = save_tokenizer(model, tmp_path / "own.safetensors")
    loaded = load_tokenizer(path)
    np.testing.assert_array_equal(loaded.stats[1], 2.0)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def half_written(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(100)
        raise OSError("disk full")

    (tmp_path / "own.safetensors").write_bytes(b"previous")
    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_tokenizer(tiny_model(), tmp_path / "own.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["own.safetensors"]
    assert (tmp_path / "own.safetensors").read_bytes() == b"previous"  # the old file is untouched


def test_wrong_checkpoint_names_what_was_expected(tmp_path):
    from safetensors.torch import save_file

    dit = tmp_path / "dit.safetensors"
    save_file({"transformer_blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, str(dit))
    with pytest.raises(CheckpointError, match="4DMoT") as info:
        load_tokenizer(dit)
    assert "dit.safetensors" in str(info.value) and "vq.codebook" in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.safetensors")


def test_mis_shaped_checkpoint_lists_keys(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_model().state_dict().items()}
    state["encoder.resnet1.0.block.2.weight"] = torch.zeros(32, 32, 1, 1)
    del state["decoder.conv_out.bias"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(path)
    text = str(info.value)
    assert "bad.safetensors" in text and "decoder.conv_out.bias" in text and "resnet1.0.block.2.weight" in text


def test_bad_joint_input_is_rejected(model):
    with pytest.raises(ValueError, match="24, 3"):
        enc.encode_joints(model, np.zeros((49, 17, 3), np.float32))
    with pytest.raises(ValueError, match="at least 1 frame"):
        enc.encode_joints(model, np.zeros((0, 24, 3), np.float32))


def test_encode_decode_mm_and_mpjpe(model, caplog):
    rng = np.random.default_rng(1)
    joints = rng.normal(0, 150, (30, 24, 3)).astype(np.float32) + np.array([0, 200, 1800], np.float32)
    with caplog.at_level(logging.WARNING):
        recon, encoded = enc.reconstruct(model, joints)
    assert "not of the form 8k+1" in caplog.text
    assert encoded.tokens.shape == (1, encoded.latent_frames * 24, model.config.code_dim)
    assert recon.shape == (1, 30, 24, 3)
    from_indices = enc.decode_to_mm(model, indices=encoded.indices, num_frames=30)
    np.testing.assert_allclose(from_indices, recon, atol=1e-3)
    per_frame, mean = enc.mpjpe(recon[0], joints)
    assert per_frame.shape == (30,)
    manual = np.linalg.norm(recon[0] - joints, axis=-1).mean()
    assert mean == pytest.approx(manual, rel=1e-5)
    assert enc.mpjpe(joints, joints)[1] == 0.0


def test_encode_windows_follows_the_plan(model):
    rng = np.random.default_rng(2)
    seq = JointSequence(rng.normal(0, 100, (100, 24, 3)).astype(np.float32) + [0, 0, 2000], fps=25.0)
    calls = []
    motion = enc.encode_windows(model, seq, window=49, overlap=9, callback=lambda s, t, p: calls.append((s, t)))
    assert motion.plan is not None and [w.start for w in motion.windows] == list(motion.plan.starts)
    assert motion.joints.num_frames == motion.plan.used_frames == 97
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for win in motion.windows:
        assert win.num_frames == 49 and win.latent_frames == 13 and win.tokens.shape == (1, 312, 48)
        alone = enc.encode_joints(model, seq.joints_mm[win.start : win.start + 49])
        assert torch.equal(win.indices, alone.indices)  # each window is encoded on its own
    decoded = enc.decode_motion(model, motion)
    assert decoded.num_frames == 97 and decoded.fps == 25.0

    whole = enc.encode_windows(model, seq, window=0)
    assert whole.plan is None and len(whole.windows) == 1 and whole.windows[0].num_frames == 100
    with pytest.raises(ValueError, match="window 0"):
        enc.encode_windows(model, JointSequence(seq.joints_mm[:20]), window=49)


def test_weight_changes_take_effect_at_once():
    """Nothing derived from the weights is cached: in-place loads, ``.data`` swaps (which leave a tensor's
    version counter alone) and lossy dtype round trips all change the very next encoding."""
    from mtv_pack.mtv_core.tokenizer.testing import random_state_dict

    x = torch.randn(1, 17, 24, 3, generator=torch.Generator().manual_seed(0))
    model = tiny_model(seed=0)
    with torch.no_grad():
        feats = model.encode_features(x)
        _, indices, _ = model.quantize(feats)
        # a codebook swap through .data: the same indices, permuted
        perm = torch.randperm(model.config.num_codes, generator=torch.Generator().manual_seed(1))
        model.vq.codebook.data = model.vq.codebook.data[perm]
        _, swapped, _ = model.quantize(feats)
        assert torch.equal(swapped, torch.argsort(perm)[indices])
        # a conv weight swap through .data
        fresh = tiny_model(seed=1)
        model.encoder.conv_out.weight.data = fresh.encoder.conv_out.weight.data.clone()
        reference = tiny_model(seed=0)
        reference.encoder.conv_out.weight.data = fresh.encoder.conv_out.weight.data.clone()
        torch.testing.assert_close(model.encode_features(x), reference.encode_features(x))
        # in-place copies
        model.load_state_dict(random_state_dict(TINY_CONFIG, seed=1))
        torch.testing.assert_close(model.encode_features(x), fresh.encode_features(x))
        # a lossy dtype round trip changes the convolutions (the codebook stays fp32)
        model.half().float()
        rounded = tiny_model(seed=1)
        rounded.load_state_dict(model.state_dict())
        torch.testing.assert_close(model.encode_features(x), rounded.encode_features(x), atol=0, rtol=0)
        assert not torch.equal(model.encoder.conv_out.weight, fresh.encoder.conv_out.weight)


def test_model_deepcopies_and_pickles_after_use(tmp_path):
    import copy

    model = tiny_model()
    x = torch.randn(1, 17, 24, 3)
    with torch.no_grad():
        _, indices, _ = model.quantize(model.encode_features(x))
        twin = copy.deepcopy(model)
        torch.save(model, tmp_path / "model.pt")
        assert torch.equal(twin.quantize(twin.encode_features(x))[1], indices)
