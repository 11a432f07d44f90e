"""Train a 4DMoT motion tokenizer (upstream ``train_vqvae.py`` recipe, with its schedule and EMA bugs fixed).

Recipe: L1(reconstruction, normalised input) + 0.5 x commitment MSE; AdamW lr 2e-4, betas (0.9, 0.99),
weight decay 1e-4; linear warm-up over 5k steps, then MultiStep (x0.05 at 300k) — stepped, unlike
upstream; EMA codebook (mu 0.99) initialised from the first batch, with a dead-code reset every 20
updates that also resets the EMA statistics of the restarted codes; batches of 32 windows of 49 frames.

    python -m mtv_core.tokenizer.train --data motions/ --out runs/4dmot
    accelerate launch -m mtv_core.tokenizer.train --data motions/ --out runs/4dmot   # multi-GPU / multi-node

Checkpoints (``checkpoint_{step}.safetensors``) hold the model, the EMA codebook state, the optimizer
state and the step, and resume with ``--resume auto``. ``tokenizer.safetensors`` next to them is the
inference file (upstream key names, config and normalisation statistics as metadata) that the
Load Motion Tokenizer node reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..constants import WINDOW_FRAMES
from ..limits import read_json_file
from .config import TokenizerConfig
from .model import MotionVQVAE

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"checkpoint_(\d+)\.safetensors$")


@dataclass
class TrainConfig:
    data: str = ""
    out: str = "runs/4dmot"
    steps: int = 500_000
    batch_size: int = 32
    window: int = WINDOW_FRAMES
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup: int = 5_000
    milestones: tuple[int, ...] = (300_000,)
    gamma: float = 0.05
    commit_weight: float = 0.5
    ema_decay: float = 0.99
    reset_every: int = 20
    dead_threshold: float = 1.0  # a code is dead when its EMA count falls below this
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    init_from: str | None = None  # fine-tune from a tokenizer checkpoint (e.g. the released one)
    stats: str = "compute"  # "compute" | "released" | path of an .npz with mean/std (24, 3)
    smpl_model: str | None = None
    save_every: int = 20_000
    log_every: int = 200
    num_workers: int = 0
    seed: int = 6666
    resume: str = "auto"  # "auto" (latest in out), "none", or a checkpoint path
    max_grad_norm: float = 0.0  # 0 = no clipping (upstream)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up lr*(step+1)/(warmup+1) as upstream, then MultiStep decay by ``gamma`` at each milestone."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    return cfg.lr * cfg.gamma ** sum(step >= m for m in cfg.milestones)


class EMACodebook(nn.Module):
    """EMA state of the codebook: per-code vector sums and counts, updated from each batch.

    Data-dependent init: the first batch's vectors (tiled with 0.01/sqrt(dim) jitter when fewer than
    the codes) become the codebook. Every ``reset_every`` updates, codes whose EMA count is below
    ``dead_threshold`` restart at random batch vectors and their sums/counts restart with them
    (upstream left the old statistics, so restarted codes fell back at the next update).
    Under multi-process training the batch statistics are summed over processes and restarts are
    taken from process 0, so every process keeps the same codebook.
    """

    def __init__(self, num_codes: int, code_dim: int, decay: float, reset_every: int, dead_threshold: float):
        super().__init__()
        self.decay, self.reset_every, self.dead_threshold = decay, reset_every, dead_threshold
        self.register_buffer("code_sum", torch.zeros(num_codes, code_dim))
        self.register_buffer("code_count", torch.zeros(num_codes))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _distributed() -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def _random_vectors(self, vectors: torch.Tensor, count: int) -> torch.Tensor:
        n, dim = vectors.shape
        if n < count:
            vectors = vectors.repeat((count + n - 1) // n, 1)
            vectors = vectors + torch.randn_like(vectors) * (0.01 / math.sqrt(dim))
        out = vectors[torch.randperm(vectors.shape[0], device=vectors.device)[:count]]
        if self._distributed():
            torch.distributed.broadcast(out, src=0)
        return out

    @torch.no_grad()
    def initialise(self, codebook: torch.Tensor, vectors: torch.Tensor) -> None:
        codebook.copy_(self._random_vectors(vectors, codebook.shape[0]))
        self.code_sum.copy_(codebook)
        self.code_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def adopt(self, codebook: torch.Tensor) -> None:
        """Start the EMA from an existing codebook (fine-tuning), keeping its codes and their order."""
        self.code_sum.copy_(codebook)
        self.code_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def update(self, codebook: torch.Tensor, vectors: torch.Tensor, indices: torch.Tensor) -> dict[str, float]:
        """EMA step for ``codebook`` (in place) from ``vectors`` (N, D) assigned to ``indices`` (N,)."""
        num_codes = codebook.shape[0]
        batch_count = torch.bincount(indices, minlength=num_codes).to(vectors.dtype)
        batch_sum = torch.zeros_like(self.code_sum).index_add_(0, indices, vectors)
        if self._distributed():
            torch.distributed.all_reduce(batch_count)
            torch.distributed.all_reduce(batch_sum)
        self.code_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        self.code_count.mul_(self.decay).add_(batch_count, alpha=1 - self.decay)
        codebook.copy_(self.code_sum / self.code_count.clamp_min(1e-12).unsqueeze(1))
        self.updates += 1
        reset = 0
        if self.reset_every and int(self.updates) % self.reset_every == 0:
            dead = self.code_count < self.dead_threshold
            reset = int(dead.sum())
            if reset:
                fresh = self._random_vectors(vectors, reset)
                codebook[dead] = fresh
                self.code_sum[dead] = fresh
                self.code_count[dead] = 1.0
        prob = batch_count / batch_count.sum()
        perplexity = float(torch.exp(-(prob * torch.log(prob + 1e-6)).sum()))
        return {"perplexity": perplexity, "codes_in_batch": int((batch_count > 0).sum()),
                "codes_alive": int((self.code_count >= self.dead_threshold).sum()), "codes_reset": reset}


class TokenizerTrainer(nn.Module):
    """VQ-VAE + EMA state; ``forward`` is one training (or evaluation) pass on normalised windows."""

    def __init__(self, model: MotionVQVAE, cfg: TrainConfig) -> None:
        super().__init__()
        self.vqvae = model
        self.ema = EMACodebook(model.config.num_codes, model.config.code_dim, cfg.ema_decay, cfg.reset_every,
                               cfg.dead_threshold)
        self.commit_weight = cfg.commit_weight

    def forward(self, joints_normalized: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        model = self.vqvae
        features = model.encode_features(joints_normalized)  # (B, C, T', J') fp32
        b, c, t, j = features.shape
        flat = features.permute(0, 2, 3, 1).reshape(-1, c)
        book = model.vq.codebook
        if self.training and not bool(self.ema.initialised):
            self.ema.initialise(book, flat.detach())
        indices, _ = model.vq.nearest(flat.detach())
        codes = F.embedding(indices, book).detach()  # dequantised with the codebook before this step's update
        stats: dict[str, float] = {}
        if self.training:
            stats = self.ema.update(book, flat.detach().float(), indices)
        commit = F.mse_loss(flat, codes)
        quantized = flat + (codes - flat).detach()  # straight-through estimator
        recon = model.decode_tokens(quantized.view(b, t * j, c), t)
        recon_loss = F.l1_loss(recon, joints_normalized.float())
        loss = recon_loss + self.commit_weight * commit
        stats.update(recon_l1=float(recon_loss.detach()), commit=float(commit.detach()))
        return loss, stats


class _SingleProcess:
    """The subset of ``accelerate.Accelerator`` used here, for runs without accelerate."""

    is_main_process = True
    num_processes = 1

    def __init__(self) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare(self, *objects):
        return tuple(o.to(self.device) if isinstance(o, nn.Module) else o for o in objects)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm_(self, params, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def wait_for_everyone(self) -> None:
        pass


def _accelerator(use_accelerate: bool):
    if use_accelerate:
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs
        except ImportError:
            logger.info("accelerate not installed: training on one device")
        else:
            # the VQ path does not touch every parameter each step in edge cases; buffers are kept in sync by us
            kwargs = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
            return Accelerator(kwargs_handlers=[kwargs])
    return _SingleProcess()


# -- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(path: Path, trainer: TokenizerTrainer, optimizer: torch.optim.Optimizer, step: int,
                    cfg: TrainConfig) -> None:
    """Model + EMA state + optimizer state + step in one safetensors file (written atomically)."""
    from .loading import CONFIG_METADATA_KEY, STATS_METADATA_KEY, stats_to_metadata, write_safetensors

    tensors = {k: v.detach().cpu().contiguous() for k, v in trainer.vqvae.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in trainer.ema.state_dict().items()})
    names = {id(p): n for n, p in trainer.vqvae.named_parameters()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{names[id(param)]}.{key}"] = value.detach().cpu().contiguous()
    tensors["step"] = torch.tensor(step, dtype=torch.long)
    metadata = {
        CONFIG_METADATA_KEY: trainer.vqvae.config.to_json(),
        STATS_METADATA_KEY: stats_to_metadata(trainer.vqvae.stats),
        "mtv_train_config": json.dumps(asdict(cfg), default=str),
        "format": "pt",
    }
    write_safetensors(tensors, path, metadata)
    logger.info("saved %s", path)


def load_checkpoint(path: Path, trainer: TokenizerTrainer, optimizer: torch.optim.Optimizer) -> int:
    """Restore a :func:`save_checkpoint` file in place; returns the step to continue from."""
    from safetensors.torch import load_file

    from ..checkpoint import CheckpointError

    data = load_file(str(path))
    model_keys = set(trainer.vqvae.state_dict())
    missing = sorted(model_keys - set(data))
    if missing or "step" not in data:
        raise CheckpointError(f"{path}: not a 4DMoT training checkpoint (missing {missing[:4] or ['step']})")
    trainer.vqvae.load_state_dict({k: data[k] for k in model_keys})
    trainer.ema.load_state_dict({k[4:]: v for k, v in data.items() if k.startswith("ema.")})
    params = dict(trainer.vqvae.named_parameters())
    for key, value in data.items():
        if key.startswith("optim."):
            name, _, slot = key[6:].rpartition(".")
            param = params[name]
            # AdamW keeps its step counter on the CPU unless capturable
            optimizer.state[param][slot] = value if slot == "step" else value.to(param.device)
    return int(data["step"])


def latest_checkpoint(out: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint_*.safetensors") if (m := CHECKPOINT_RE.search(p.name))]
    return max(found)[1] if found else None


# -- the loop -----------------------------------------------------------------------------------------
def _stats(cfg: TrainConfig, sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if cfg.stats == "compute":
        from .dataset import compute_stats

        return compute_stats(sequences)
    if cfg.stats == "released":
        from ..motion.stats import load_stats

        mean, std = load_stats()
        return np.array(mean), np.array(std)
    with np.load(cfg.stats, allow_pickle=False) as data:
        if "mean" not in data.files or "std" not in data.files:
            raise ValueError(f"{cfg.stats}: a statistics file needs 'mean' and 'std' arrays, found {data.files}")
        mean, std = data["mean"].astype(np.float32), data["std"].astype(np.float32)
    if mean.shape != (24, 3) or std.shape != (24, 3) or not (std > 0).all():
        raise ValueError(f"{cfg.stats}: 'mean' and 'std' must be (24, 3) mm with std > 0, got {mean.shape} and "
                         f"{std.shape}")
    return mean, std


def train(cfg: TrainConfig, use_accelerate: bool = True) -> list[dict[str, float]]:
    """Run training; returns the logged records (also appended to ``out/log.jsonl``)."""
    from torch.utils.data import DataLoader

    from .dataset import MotionWindowDataset, load_sequences
    from .loading import load_tokenizer, save_tokenizer

    accelerator = _accelerator(use_accelerate)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    sequences = load_sequences(cfg.data, cfg.window, cfg.smpl_model)
    mean, std = _stats(cfg, sequences)
    repeats = math.ceil(cfg.batch_size / len(sequences))
    dataset = MotionWindowDataset(sequences, mean, std, cfg.window, repeats=repeats)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.num_workers)

    if cfg.init_from:
        model = load_tokenizer(cfg.init_from)
        model.requires_grad_(True)
        if cfg.stats == "compute":
            logger.warning("fine-tuning %s with statistics computed from the data: inputs are normalised "
                           "differently from its training (use --stats released, or the file it was trained with, "
                           "to keep them)", cfg.init_from)
    else:
        model = MotionVQVAE(cfg.model)
    model.stats = (mean, std)
    trainer = TokenizerTrainer(model, cfg).train()
    if cfg.init_from:
        trainer.ema.adopt(model.vq.codebook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    trainer, optimizer, loader = accelerator.prepare(trainer, optimizer, loader)
    core: TokenizerTrainer = accelerator.unwrap_model(trainer)
    step = 0
    resume = latest_checkpoint(out) if cfg.resume == "auto" else (None if cfg.resume == "none" else Path(cfg.resume))
    if resume is not None:
        step = load_checkpoint(resume, core, getattr(optimizer, "optimizer", optimizer))
        logger.info("resumed from %s at step %d", resume, step)
    history: list[dict[str, float]] = []
    log_file = out / "log.jsonl"
    window_sums: dict[str, float] = {}
    window_n, started = 0, time.time()
    while step < cfg.steps:
        for batch in loader:
            if step >= cfg.steps:
                break
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, stats = trainer(batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(core.vqvae.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step += 1
            stats["loss"] = float(loss.detach())
            for key, value in stats.items():
                window_sums[key] = window_sums.get(key, 0.0) + value
            window_n += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {"step": step, "lr": lr, **{k: v / window_n for k, v in window_sums.items()},
                          "sec_per_step": (time.time() - started) / window_n}
                history.append(record)
                window_sums, window_n, started = {}, 0, time.time()
                if accelerator.is_main_process:
                    logger.info("step %d lr %.2e loss %.4f l1 %.4f commit %.4f perplexity %.1f alive %d/%d",
                                step, lr, record["loss"], record["recon_l1"], record["commit"],
                                record.get("perplexity", 0.0), record.get("codes_alive", 0), cfg.model.num_codes)
                    with open(log_file, "a") as f:
                        f.write(json.dumps(record) + "\n")
            if step % cfg.save_every == 0 or step == cfg.steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save_checkpoint(out / f"checkpoint_{step:07d}.safetensors", core, optimizer, step, cfg)
                    save_tokenizer(core.vqvae, out / "tokenizer.safetensors")
    return history


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m mtv_core.tokenizer.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of motion files (.npz, .pkl, .npy; searched recursively)")
    p.add_argument("--out", default=d.out, help="output folder for checkpoints, tokenizer.safetensors, log.jsonl")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per step and process")
    p.add_argument("--window", type=int, default=d.window, help="frames per training window")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--betas", type=float, nargs=2, default=d.betas)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--milestones", type=int, nargs="*", default=d.milestones)
    p.add_argument("--gamma", type=float, default=d.gamma)
    p.add_argument("--commit-weight", type=float, default=d.commit_weight)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--reset-every", type=int, default=d.reset_every, help="dead-code reset period (0 = never)")
    p.add_argument("--model-config", help="JSON file of TokenizerConfig fields (default: the released sizes)")
    p.add_argument("--init-from", help="start from this tokenizer checkpoint (fine-tuning)")
    p.add_argument("--stats", default=d.stats, help="'compute' (from the data), 'released', or an .npz with mean/std")
    p.add_argument("--smpl-model", help="SMPL model file, for SMPL-parameter motion files")
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", default=d.resume, help="'auto' (latest checkpoint in --out), 'none', or a path")
    p.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    p.add_argument("--no-accelerate", action="store_true", help="plain single-device loop even if accelerate exists")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed :func:`build_parser` arguments (each option is named like its field)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values.update(betas=tuple(args.betas), milestones=tuple(args.milestones))
    if args.model_config:
        values["model"] = TokenizerConfig.from_dict(read_json_file(args.model_config, "model config"))
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(config_from_args(args), use_accelerate=not args.no_accelerate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
