"""Peak host memory of MV-DiT-7B loading versus the size of the weights.

Writes a mid-size MV-DiT-7B checkpoint (the real layout at reduced width/depth, a few hundred MB) in the
formats users have, then loads each in a fresh process with ``load_mvdit7b`` while a thread samples
/proc/self/status. Prints, per case, the weight bytes in the target dtype and the peak increase, during loading and
then reading every weight once, of anonymous RSS (process-private memory: the real cost) and of total RSS
(which also counts file pages of the memory-mapped checkpoint; those are page cache the kernel can drop).
When the file already holds the target dtype, safetensors hands out tensors backed by the mapped file:
nothing is copied and the pages are read on first use.

    .venv/bin/python benchmarks/bench_load_7b.py [--layers 6] [--heads 16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(path: str, dtype: str) -> dict:
    """Load ``path`` in this process and return memory figures (bytes)."""
    import torch

    from mtv_core.dit.loading import load_mvdit7b
    from mtv_core.precision import resolve_dtype

    base_anon, base_rss = _status_kib("RssAnon"), _status_kib("VmRSS")
    peak = {"anon": base_anon, "rss": base_rss}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["anon"] = max(peak["anon"], _status_kib("RssAnon"))
            peak["rss"] = max(peak["rss"], _status_kib("VmRSS"))
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    model = load_mvdit7b(path, dtype=dtype)
    seconds = time.perf_counter() - start
    load_peak = dict(peak)
    with torch.no_grad():  # page every weight in (memory-mapped tensors are read lazily)
        for tensor in model.state_dict().values():
            tensor.sum()
    done.set()
    thread.join()
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert all(t.dtype == resolve_dtype(dtype) for t in model.state_dict().values())
    return {
        "weight_bytes": weight_bytes,
        "peak_anon_delta": (peak["anon"] - base_anon) * 1024,
        "peak_rss_delta": (peak["rss"] - base_rss) * 1024,
        "load_peak_anon_delta": (load_peak["anon"] - base_anon) * 1024,
        "seconds": seconds,
    }


def write_checkpoints(workdir: Path, layers: int, heads: int) -> dict[str, Path]:
    import torch

    from mtv_core.dit.config import MVDiT7BConfig
    from mtv_core.dit.tiny import random_state_dict_7b, save_mvdit7b

    config = MVDiT7BConfig(num_attention_heads=heads, num_layers=layers)
    state = random_state_dict_7b(config, seed=0)
    paths = {
        "bf16 sharded diffusers folder -> bf16": save_mvdit7b(
            state, workdir / "folder_bf16", config, as_folder=True, dtype=torch.bfloat16, max_shard_bytes=100 << 20
        ),
        "bf16 single safetensors -> bf16": save_mvdit7b(state, workdir / "single_bf16.safetensors", config,
                                                        dtype=torch.bfloat16),
        "fp32 single safetensors -> bf16": save_mvdit7b(state, workdir / "single_fp32.safetensors", config),
    }
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=16, help="heads of 64 dims (48 in the release)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        paths = write_checkpoints(Path(tmp), args.layers, args.heads)
        print(f"MV-DiT-7B layout, {args.layers} layers x {args.heads} heads (release: 42 x 48)")
        for name, path in paths.items():
            result = subprocess.run(
                [sys.executable, __file__, "--measure", str(path), "bf16"], check=True, capture_output=True, text=True
            )
            r = json.loads(result.stdout.strip().splitlines()[-1])
            mb = 1 << 20
            print(
                f"{name:40s} weights {r['weight_bytes'] / mb:7.1f} MiB | peak anon +{r['peak_anon_delta'] / mb:7.1f} MiB "
                f"({r['peak_anon_delta'] / r['weight_bytes']:.2f}x) | peak RSS incl. mmap pages "
                f"+{r['peak_rss_delta'] / mb:7.1f} MiB ({r['peak_rss_delta'] / r['weight_bytes']:.2f}x) | "
                f"{r['seconds']:.2f} s"
            )


if __name__ == "__main__":
    main()
