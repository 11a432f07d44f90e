"""Helpers shared by the benchmark scripts: machine description, timing, memory sampling, tables, recording.

Every benchmark prints a table (``Table.print``) and can append it, with the machine, date and commit, to
``benchmarks/RESULTS.md`` (``--record``). Memory figures come from ``/proc/self/status`` (Linux): ``RssAnon``
is process-private memory, ``VmRSS``/``VmHWM`` also count the file pages mapped into the process (memory-mapped
checkpoints); ``VmHWM`` is the kernel's exact high-water mark, reset with ``/proc/self/clear_refs``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MiB = 1 << 20


def cpu_model() -> str:
    """``lscpu``'s model name (or the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    """Short commit of the pack checkout (``+dirty`` when code differs from it; Markdown files do not count), or
    ``unknown``."""
    try:
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)*.md"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_line() -> str:
    """One line naming the machine: CPU model, cores, load, torch version and threads, GPU if any."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_model()}, {os.cpu_count()} cores (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}), {gpu}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def synced(device) -> float:
    """``time.perf_counter()`` once queued CUDA work has finished (CUDA calls return before the work is done)."""
    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def interleaved(fns: Sequence[Callable[[], object]], repeats: int, device="cpu", warmup: int = 1) -> list[float]:
    """Median seconds of each of ``fns`` over ``repeats`` rounds after ``warmup`` untimed calls each; the functions
    are timed in turn within a round, so that load changes on a shared machine hit them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = synced(device)
            fn()
            times[i].append(synced(device) - start)
    return [statistics.median(t) for t in times]


def timed(fn: Callable[[], object], repeats: int, device="cpu", warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    return interleaved([fn], repeats, device, warmup)[0]


def status_kib(field: str) -> int:
    """One ``/proc/self/status`` field in KiB (0 where it does not exist, e.g. not on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset the kernel's ``VmHWM`` to the current RSS; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class MemorySampler:
    """Peak process memory over a ``with`` block, in bytes above the level at its start.

    ``anon``: private memory (sampled every ``interval`` s, and at the end); ``rss``: private memory plus
    mapped file pages (the kernel's exact high-water mark where it can be reset, else sampled).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.anon = self.rss = 0

    def __enter__(self) -> "MemorySampler":
        self._exact = reset_peak_rss()
        self._base_anon, self._base_rss = status_kib("RssAnon"), status_kib("VmRSS")
        self._peak_anon, self._peak_rss = self._base_anon, self._base_rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            self._peak_anon = max(self._peak_anon, status_kib("RssAnon"))
            self._peak_rss = max(self._peak_rss, status_kib("VmRSS"))
            if self._done.wait(self.interval):
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self._peak_anon = max(self._peak_anon, status_kib("RssAnon"))
        peak_rss = status_kib("VmHWM") if self._exact else max(self._peak_rss, status_kib("VmRSS"))
        self.anon = (self._peak_anon - self._base_anon) * 1024
        self.rss = (max(peak_rss, self._peak_rss) - self._base_rss) * 1024


class Table:
    """Rows of named columns, printed aligned and written as Markdown."""

    def __init__(self, title: str, columns: Sequence[str]) -> None:
        self.title, self.columns, self.rows = title, list(columns), []

    def add(self, *values) -> None:
        self.rows.append([_fmt(v) for v in values])

    def text(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        lines = [self.title, "  ".join(c.rjust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in self.rows]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)

    def print(self) -> None:
        print(self.text(), flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def record(tables: Sequence[Table], script: str, argv: Sequence[str], notes: str = "", path: Path = RESULTS) -> None:
    """Append ``tables`` to ``path`` under a heading with the date, machine, commit and command."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"\n### {script} — {stamp}", "",
             f"- machine: {machine_line()}", f"- commit: {commit()}",
             f"- command: `python benchmarks/{script} {' '.join(argv)}`".rstrip()]
    if notes:
        parts.append(f"- notes: {notes}")
    for table in tables:
        parts += ["", table.markdown()]
    with path.open("a") as f:
        f.write("\n".join(parts) + "\n")


def add_common_args(parser) -> None:
    """``--threads``, ``--record`` and ``--tiny`` (shared by every benchmark)."""
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--record", action="store_true", help=f"append the tables to {RESULTS.name}")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, a few seconds (the smoke test)")


def setup_torch(threads: int) -> None:
    if threads:
        torch.set_num_threads(threads)


def ensure_root_on_path() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@torch.no_grad()
def random_init_(model, seed: int = 0):
    """Fill every parameter and buffer of ``model`` in place with deterministic random values of a healthy scale
    (fan-in scaled matrices, norm weights near 1, biases near 0); works on any device, in any dtype."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if not tensor.is_floating_point():
            continue
        values = torch.randn(tensor.shape, generator=generator, device=device, dtype=torch.float32)
        if tensor.ndim >= 2 and "unconditional" not in name:
            values *= tensor[0].numel() ** -0.5
        elif tensor.ndim == 1:
            values = 1 + 0.1 * values if name.endswith("weight") else 0.02 * values
        tensor.copy_(values)
    return model


def build_random(make, dtype, device, seed: int = 0):
    """``make()`` built on the meta device, cast to ``dtype``, materialised on ``device`` and filled in place
    (no host copy of the weights, no float32 detour)."""
    with torch.device("meta"):
        model = make()
    model = model.to(dtype).to_empty(device=device)
    return random_init_(model, seed).eval().requires_grad_(False)


def import_file(path: Path, name: str, package: str | None = None):
    """Import the Python file ``path`` as module ``name`` (inside ``package``, which is created empty if needed,
    so that relative imports between sibling files work without running the package's ``__init__``)."""
    import importlib.util
    import types

    if package is not None:
        if package not in sys.modules:
            pkg = types.ModuleType(package)
            pkg.__path__ = [str(path.parent)]
            sys.modules[package] = pkg
        name = f"{package}.{name}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def dit7b_flops(config, tokens: int, motion_tokens: int, batch: int = 2) -> float:
    """Floating-point operations of one MV-DiT-7B forward (multiply-add = 2), counted analytically.

    Per block and sample: linear layers 2 * rows * in * out (self-attention q, k, v, out on the patch tokens;
    motion attention q, out on the patch tokens and k, v on the motion tokens; the two feed-forward layers),
    attention 4 * heads * Lq * Lk * head_dim (QK^T and PV). Plus patch embedding and output projection; the
    per-sample modulation layers are negligible and left out.
    """
    d, heads, head_dim, ff = config.inner_dim, config.num_attention_heads, config.attention_head_dim, config.ff_dim
    t, m = tokens, motion_tokens
    linear = 2 * t * d * d * 4 + 2 * (t * d * d * 2 + m * d * d * 2) + 2 * t * d * ff * 2
    attention = 4 * heads * t * t * head_dim + 4 * heads * t * m * head_dim
    p = config.patch_size
    edges = 2 * t * (config.in_channels * p * p) * d + 2 * t * d * (config.out_channels * p * p)
    return float(batch * (config.num_layers * (linear + attention) + edges))


def scaled_config_17b(**changes):
    """``MVDiT17BConfig`` (released defaults) with ``changes`` among num_layers, num_heads, ffn_dim, text_dim;
    ``dim`` follows the heads at the released head size and ``ffn_dim`` keeps the released ratio unless given.
    Fields the config does not have are left out."""
    from mtv_core.dit.transformer_17b import MVDiT17BConfig

    base = MVDiT17BConfig()
    names = {f.name for f in dataclasses.fields(base)}
    if "num_heads" in changes:
        heads = changes["num_heads"]
        changes.setdefault("dim", heads * (base.dim // base.num_heads))
        changes.setdefault("ffn_dim", round(base.ffn_dim * heads / base.num_heads))
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if k in names})


def dit17b_flops(config, tokens: int, motion_tokens: int, batch: int = 2, text_tokens: int | None = None,
                 image_tokens: int = 257) -> float:
    """Floating-point operations of one MV-DiT-17B forward (Wan2.1 I2V-14B + motion attention every 4th block).

    Per block and sample: self-attention (q, k, v, o on the patch tokens; attention 4 * heads * T^2 * head_dim),
    cross-attention (q, o on the patch tokens; k, v on the text tokens and k_img, v_img on the 257 CLIP tokens;
    attention over both), feed-forward (2 layers of dim x ffn_dim); in every 4th block motion attention (q, o on
    the patch tokens, k, v on the motion tokens). Plus patch embedding, text/image embeddings and the head.
    """
    d, heads, layers = config.dim, config.num_heads, config.num_layers
    ffn = config.ffn_dim
    head_dim = d // heads
    lt = text_tokens if text_tokens is not None else getattr(config, "text_len", 512)
    li, t, m = image_tokens, tokens, motion_tokens
    block = (2 * t * d * d * 4 + 4 * heads * t * t * head_dim  # self-attention
             + 2 * t * d * d * 2 + 2 * (lt + li) * d * d * 2 + 4 * heads * t * (lt + li) * head_dim  # cross
             + 2 * t * d * ffn * 2)  # feed-forward
    motion = 2 * t * d * d * 2 + 2 * m * d * d * 2 + 4 * heads * t * m * head_dim
    motion_blocks = len(range(0, layers, 4))
    in_dim, out_dim, text_dim = getattr(config, "in_dim", 36), getattr(config, "out_dim", 16), getattr(
        config, "text_dim", 4096)
    edges = (2 * t * in_dim * 4 * d + 2 * t * d * out_dim * 4 + 2 * lt * (text_dim * d + d * d)
             + 2 * li * (1280 * 1280 + 1280 * d))
    return float(batch * (layers * block + motion_blocks * motion + edges))
