"""4DMoT training on CPU with a tiny configuration: the loss falls, checkpoints resume, EMA resets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mtv_pack.mtv_core.motion import JointSequence
from mtv_pack.mtv_core.motion.io import save_motion
from mtv_pack.mtv_core.tokenizer import train as tr
from mtv_pack.mtv_core.tokenizer.dataset import MotionWindowDataset, compute_stats, load_sequences
from mtv_pack.mtv_core.tokenizer.loading import load_tokenizer
from mtv_pack.mtv_core.tokenizer.testing import TINY_CONFIG


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_motions(folder, count=6, frames=80):
    rng = np.random.default_rng(0)
    t = np.arange(frames)[:, None, None] / 20.0
    for i in range(count):
        base = rng.normal(0, 200, (1, 24, 3)) + np.array([0, 0, 2000])
        amp = rng.normal(0, 80, (1, 24, 3))
        joints = (base + amp * np.sin(2 * np.pi * (0.5 + 0.2 * i) * t + rng.uniform(0, 6, (1, 24, 3))))
        save_motion(JointSequence(joints.astype(np.float32), fps=20.0), folder / f"clip{i}.npz")
    save_motion(JointSequence(np.zeros((10, 24, 3), np.float32) + 1000), folder / "short.npz")


def _cfg(tmp_path, **kw) -> tr.TrainConfig:
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        _write_motions(data)
    base = dict(data=str(data), out=str(tmp_path / "run"), steps=40, batch_size=8, warmup=5, milestones=(30,),
                lr=2e-3, model=TINY_CONFIG, save_every=20, log_every=10, seed=0)
    base.update(kw)
    return tr.TrainConfig(**base)


def test_learning_rate_schedule_steps():
    cfg = tr.TrainConfig(lr=2e-4, warmup=5000, milestones=(300_000,), gamma=0.05)
    assert tr.learning_rate(cfg, 0) == pytest.approx(2e-4 / 5001)
    assert tr.learning_rate(cfg, 4999) == pytest.approx(2e-4 * 5000 / 5001)
    assert tr.learning_rate(cfg, 5000) == pytest.approx(2e-4)
    assert tr.learning_rate(cfg, 300_000) == pytest.approx(1e-5)


def test_dataset_windows_and_stats(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_motions(data)
    seqs = load_sequences(data, 49)
    assert len(seqs) == 6  # the 10-frame clip is skipped
    mean, std = compute_stats(seqs)
    allframes = np.concatenate(seqs)
    np.testing.assert_allclose(mean, allframes.mean(0), rtol=1e-4, atol=1e-3)
    ds = MotionWindowDataset(seqs, mean, std, 49)
    item = ds[0]
    assert item.shape == (49, 24, 3) and item.dtype == torch.float32


def test_ema_dead_code_reset_also_resets_statistics():
    ema = tr.EMACodebook(num_codes=4, code_dim=2, decay=0.99, reset_every=1, dead_threshold=1.0)
    book = torch.zeros(4, 2)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ema.initialise(book, vectors)
    assert torch.all(ema.code_count == 1)
    stats = ema.update(book, torch.tensor([[5.0, 5.0]] * 8), torch.zeros(8, dtype=torch.long))
    # codes 1..3 got nothing: their counts fell to 0.99 < 1 -> restarted at batch vectors, statistics too
    assert stats["codes_reset"] == 3
    for k in (1, 2, 3):
        assert ema.code_count[k] == 1.0
        assert torch.equal(ema.code_sum[k], book[k])
        assert torch.equal(book[k], torch.tensor([5.0, 5.0]))
    assert ema.code_count[0] > 1.0


def test_tiny_training_loss_falls_and_resumes(tmp_path):
    cfg = _cfg(tmp_path)
    history = tr.train(cfg, use_accelerate=False)
    assert [r["step"] for r in history] == [10, 20, 30, 40]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"], history
    assert all(r["perplexity"] > 1 for r in history) and "codes_alive" in history[-1]
    run = tmp_path / "run"
    assert (run / "checkpoint_0000040.safetensors").is_file()
    assert len((run / "log.jsonl").read_text().splitlines()) == 4

    model = load_tokenizer(run / "tokenizer.safetensors")
    assert model.config == TINY_CONFIG and model.stats is not None

    more = tr.train(_cfg(tmp_path, steps=50), use_accelerate=False)  # resumes at 40
    assert [r["step"] for r in more] == [50]
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == 50


def test_cli_parses_upstream_recipe():
    args = tr.build_parser().parse_args(["--data", "x"])
    assert args.batch_size == 32 and args.window == 49 and args.lr == 2e-4 and tuple(args.betas) == (0.9, 0.99)
    assert args.weight_decay == 1e-4 and args.warmup == 5000 and args.milestones == (300_000,)


def test_cli_options_reach_the_train_config(tmp_path):
    model_config = tmp_path / "model.json"
    model_config.write_text(json.dumps({"num_codes": 16, "code_dim": 8}))
    args = tr.build_parser().parse_args([
        "--data", "d", "--out", "o", "--steps", "7", "--batch-size", "3", "--window", "9", "--lr", "0.5",
        "--betas", "0.8", "0.9", "--weight-decay", "0.1", "--warmup", "2", "--milestones", "4", "5",
        "--gamma", "0.3", "--commit-weight", "0.7", "--ema-decay", "0.6", "--reset-every", "0",
        "--model-config", str(model_config), "--init-from", "t.safetensors", "--stats", "released",
        "--smpl-model", "s.pkl", "--save-every", "11", "--log-every", "12", "--num-workers", "2", "--seed", "13",
        "--resume", "none", "--max-grad-norm", "1.5",
    ])
    cfg = tr.config_from_args(args)
    assert cfg == tr.TrainConfig(
        data="d", out="o", steps=7, batch_size=3, window=9, lr=0.5, betas=(0.8, 0.9), weight_decay=0.1, warmup=2,
        milestones=(4, 5), gamma=0.3, commit_weight=0.7, ema_decay=0.6, reset_every=0,
        model=tr.TokenizerConfig(num_codes=16, code_dim=8), init_from="t.safetensors", stats="released",
        smpl_model="s.pkl", save_every=11, log_every=12, num_workers=2, seed=13, resume="none", max_grad_norm=1.5,
    )
    assert tr.config_from_args(tr.build_parser().parse_args(["--data", "d"])) == tr.TrainConfig(data="d")


def test_module_entry_point_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "mtv_core.tokenizer.train", "--help"], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--data" in result.stdout and "--resume" in result.stdout


def test_fine_tuning_keeps_the_codebook_order(tmp_path):
    from mtv_pack.mtv_core.tokenizer.testing import tiny_model, write_tiny_checkpoint

    init = write_tiny_checkpoint(tmp_path / "init.safetensors")
    cfg = _cfg(tmp_path, steps=1, init_from=str(init), stats="released", log_every=1, save_every=1, lr=1e-6)
    tr.train(cfg, use_accelerate=False)
    tuned = load_tokenizer(tmp_path / "run" / "tokenizer.safetensors")
    before = tiny_model().vq.codebook
    # one EMA step moves codes a little (1% towards their batch means) but never reorders them
    nearest = torch.cdist(tuned.vq.codebook, before).argmin(dim=1)
    assert torch.equal(nearest, torch.arange(before.shape[0]))


def test_stats_file_is_checked(tmp_path):
    good = tmp_path / "stats.npz"
    np.savez(good, mean=np.zeros((24, 3)), std=np.ones((24, 3)))
    mean, std = tr._stats(tr.TrainConfig(stats=str(good)), [])
    assert mean.shape == (24, 3) and mean.dtype == np.float32 and (std == 1).all()
    bad = tmp_path / "bad.npz"
    np.savez(bad, mean=np.zeros((17, 3)), std=np.ones((17, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*\(24, 3\)"):
        tr._stats(tr.TrainConfig(stats=str(bad)), [])
    np.savez(bad, average=np.zeros((24, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*'mean' and 'std'"):
        tr._stats(tr.TrainConfig(stats=str(bad)), [])
