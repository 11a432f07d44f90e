"""Peak host memory of MV-DiT-17B loading versus the size of the stored weights.

Writes a mid-size MV-DiT-17B checkpoint (the Wan I2V layout with motion attention every 4th block, at reduced
width/depth, a few hundred MB) in the formats users have, then loads each in a fresh process with
``load_dit(..., variant="17b")`` while a thread samples /proc/self/status. Prints, per case, the bytes of the weights as held
in memory (fp8 Linear weights one byte per element) and the peak increase, during loading and then reading
every weight once, of anonymous RSS (process-private memory: the real cost) and of total RSS (which also
counts file pages of the memory-mapped checkpoint: page cache the kernel can drop).

    .venv/bin/python benchmarks/bench_load_17b.py [--layers 8] [--heads 8] [--workdir DIR] [--record] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()


def measure(spec: str) -> dict:
    """Load the case described by the JSON ``spec`` in this process and return memory figures (bytes)."""
    import torch

    from mtv_core.dit.loading import load_dit

    spec = json.loads(spec)
    with benchlib.MemorySampler() as mem:
        start = time.perf_counter()
        model = load_dit(spec["path"], dtype="bf16", variant="17b", adapter=spec.get("adapter"),  # the registered variant
                         weight_dtype=spec.get("weight_dtype"))
        seconds = time.perf_counter() - start
        with torch.no_grad():  # page every weight in (memory-mapped tensors are read lazily), allocating nothing big
            for tensor in model.state_dict().values():
                if tensor.numel():
                    tensor.contiguous().reshape(-1).view(torch.uint8).max()
    return {
        "weight_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
        "peak_anon_delta": mem.anon,
        "peak_rss_delta": mem.rss,
        "seconds": seconds,
    }


def write_checkpoints(workdir: Path, layers: int, heads: int) -> dict[str, dict]:
    import torch

    from mtv_core.dit.loading_17b import extract_adapter
    from mtv_core.dit.tiny_17b import random_state_dict_17b, save_mvdit17b, split_adapter, to_fp8
    from mtv_core.dit.config_17b import MVDiT17BConfig

    dim = 128 * heads
    config = MVDiT17BConfig(dim=dim, num_heads=heads, num_layers=layers, ffn_dim=dim * 27 // 10)
    state = {k: v.to(torch.bfloat16) for k, v in random_state_dict_17b(config, seed=0).items()}
    folder = save_mvdit17b(state, workdir / "folder_bf16", config, as_folder=True, max_shard_bytes=100 << 20)
    single = save_mvdit17b(state, workdir / "single_bf16.safetensors")
    fp32 = save_mvdit17b(state, workdir / "single_fp32.safetensors", dtype=torch.float32)
    scaled = save_mvdit17b(to_fp8(state, scaled=True), workdir / "scaled_fp8.safetensors",
                           prefix="model.diffusion_model.")
    base = save_mvdit17b(split_adapter(state)[0], workdir / "wan_base_bf16.safetensors")
    adapter = extract_adapter(single, workdir / "motion_adapter.safetensors")
    return {
        "bf16 sharded Wan folder -> bf16": {"path": str(folder)},
        "bf16 single safetensors -> bf16": {"path": str(single)},
        "fp32 single safetensors -> bf16": {"path": str(fp32)},
        "scaled fp8 file -> fp8 + bf16": {"path": str(scaled)},
        "bf16 file -> fp8 storage": {"path": str(single), "weight_dtype": "fp8_e4m3fn"},
        "fp32 file -> fp8 storage": {"path": str(fp32), "weight_dtype": "fp8_e4m3fn"},
        "bf16 Wan base + motion adapter -> bf16": {"path": str(base), "adapter": str(adapter)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8, help="heads of 128 dims (40 in the release)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--measure", metavar="SPEC", help=argparse.SUPPRESS)
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    if args.tiny:
        args.layers, args.heads = 4, 1
    mib = 1 << 20
    table = benchlib.Table(
        f"MV-DiT-17B layout loading on cpu, {args.layers} layers x {args.heads} heads of 128 (release: 40 x 40); "
        "peaks above the pre-load level, x = multiple of the weight bytes as held",
        ["checkpoint", "held MiB", "private MiB", "private x", "incl. file pages MiB", "incl. file x", "s"])
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        cases = write_checkpoints(Path(tmp), args.layers, args.heads)
        for name, spec in cases.items():
            result = subprocess.run(
                [sys.executable, __file__, "--measure", json.dumps(spec)], check=True, capture_output=True, text=True
            )
            r = json.loads(result.stdout.strip().splitlines()[-1])
            held = r["weight_bytes"]
            table.add(name, held / mib, r["peak_anon_delta"] / mib, r["peak_anon_delta"] / held,
                      r["peak_rss_delta"] / mib, r["peak_rss_delta"] / held, r["seconds"])
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="each case loaded in a fresh process; RSS sampled every 2 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
