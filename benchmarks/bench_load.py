"""Peak host (and GPU) memory of DiT checkpoint loading relative to the size of the weights in the target dtype.

Writes a scaled-down checkpoint of the chosen model (real key layout, reduced width/depth) in every layout users
have (single safetensors, sharded diffusers folder with index, ``.pt`` pickle, diffusers folder with a ``.bin``)
and source dtype (bf16, fp32, fp8 e4m3), then loads each in a fresh process into ``--dtype`` on ``--device`` and
reads every weight once. Per case it prints the weight bytes in the target dtype and the peak increase of
process-private memory (RssAnon) and of resident memory including mapped file pages (the kernel's VmHWM), as
multiples of the weight bytes, and on CUDA the peak of allocated GPU memory.

    python benchmarks/bench_load.py [--model 7b|17b] [--layers 6] [--heads 16] [--dtype bf16] [--device cpu]
                                    [--cases fp32] [--record]

``--model 17b`` needs ``mtv_core.dit.transformer_17b`` (``MVDiT17B``, ``MVDiT17BConfig``); it is loaded with
the generic ``checkpoint.load_into`` path. ``--in-process`` measures every case in this process (less clean:
for the smoke test).
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

SOURCE_DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp8": "float8_e4m3fn"}
# (name, writer kind, source dtype); writer kinds: single .safetensors, sharded folder, .pt, folder with a .bin
CASES = [
    ("bf16 single safetensors", "single", "bf16"),
    ("bf16 sharded folder + index", "folder", "bf16"),
    ("fp32 single safetensors", "single", "fp32"),
    ("fp32 sharded folder + index", "folder", "fp32"),
    ("fp8 single safetensors", "single", "fp8"),
    ("fp8 sharded folder + index", "folder", "fp8"),
    ("bf16 .pt pickle", "pt", "bf16"),
    ("fp32 .pt pickle", "pt", "fp32"),
    ("fp32 folder with .bin", "bin", "fp32"),
]


# ---------------------------------------------------------------------------------------------- model kinds
def _config_7b(layers: int, heads: int):
    from mtv_core.dit.config import MVDiT7BConfig

    return MVDiT7BConfig(num_attention_heads=heads, num_layers=layers)


def build_meta(kind: str, config):
    import torch

    with torch.device("meta"):
        if kind == "7b":
            from mtv_core.dit.transformer_7b import MVDiT7B

            return MVDiT7B(config)
        from mtv_core.dit.transformer_17b import MVDiT17B

        return MVDiT17B(config, operations=torch.nn)


def make_config(kind: str, layers: int, heads: int):
    return _config_7b(layers, heads) if kind == "7b" else benchlib.scaled_config_17b(num_layers=layers, num_heads=heads)


def load_model(kind: str, path: str, config, dtype, device):
    """Load as users do: ``load_mvdit7b`` for 7B; the generic meta build + ``load_into`` for other kinds."""
    if kind == "7b":
        from mtv_core.dit.loading import load_mvdit7b

        return load_mvdit7b(path, dtype=dtype, device=device)
    from mtv_core.checkpoint import load_into, open_checkpoint

    model = build_meta(kind, config)
    load_into(model, open_checkpoint(path), dtype=dtype, device=device, what=f"MV-DiT-{kind.upper()}")
    return model


# ---------------------------------------------------------------------------------------------- writing
def write_case(state: dict, root: Path, layout: str, source: str, config_json: dict | None) -> Path:
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, SOURCE_DTYPES[source])
    tensors = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if layout == "single":
        path = root / f"{source}_single.safetensors"
        save_file(tensors, str(path))
    elif layout == "pt":
        path = root / f"{source}_model.pt"
        torch.save(tensors, path)
    else:
        path = root / f"{source}_{layout}"
        path.mkdir()
        if config_json is not None:
            (path / "config.json").write_text(json.dumps(config_json))
        if layout == "bin":
            torch.save(tensors, path / "diffusion_pytorch_model.bin")
        else:
            _write_shards(tensors, path, shards=3)
    return path


def _write_shards(tensors: dict, folder: Path, shards: int) -> None:
    from safetensors.torch import save_file

    total = sum(t.numel() * t.element_size() for t in tensors.values())
    limit, groups, size = total / shards, [{}], 0
    for key, tensor in tensors.items():
        if groups[-1] and size >= limit:
            groups.append({})
            size = 0
        groups[-1][key] = tensor
        size += tensor.numel() * tensor.element_size()
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file(group, str(folder / name))
        weight_map.update(dict.fromkeys(group, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))


# ---------------------------------------------------------------------------------------------- measuring
def measure(spec: dict) -> dict:
    """Load ``spec['path']`` in this process; memory figures in bytes."""
    import torch

    from mtv_core.dit.loading import resolve_dtype

    dtype, device = resolve_dtype(spec["dtype"]), torch.device(spec["device"])
    config = make_config(spec["model"], spec["layers"], spec["heads"])
    cuda = device.type == "cuda"
    if cuda:
        torch.empty(1, device=device)  # the CUDA context (hundreds of MB of host memory) before the baseline
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    with benchlib.MemorySampler() as mem:
        start = time.perf_counter()
        model = load_model(spec["model"], spec["path"], config, dtype, device)
        seconds = benchlib.synced(device) - start
        with torch.no_grad():  # page every weight in (memory-mapped tensors are read lazily): one element a page
            for tensor in model.state_dict().values():
                flat = tensor.reshape(-1)
                if flat.numel():
                    flat[:: max(1, 4096 // tensor.element_size())].sum()
    state = model.state_dict()
    if any(t.dtype != dtype for t in state.values() if t.is_floating_point()):
        raise AssertionError("a weight was not converted to the target dtype")
    weight_bytes = sum(t.numel() * t.element_size() for t in state.values())
    out = {"weight_bytes": weight_bytes, "anon": mem.anon, "rss": mem.rss, "seconds": seconds}
    if cuda:
        out["gpu_peak"] = torch.cuda.max_memory_allocated() - gpu_base
    return out


def run_case(spec: dict, in_process: bool) -> dict:
    if in_process:
        return measure(spec)
    result = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("7b", "17b"), default="7b")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=16, help="attention heads (7B release: 48 x 64; 17B: 40 x 128)")
    parser.add_argument("--dtype", default="bf16", help="target dtype")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="*", default=None, help="only cases whose name contains one of these")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the checkpoints (a temp dir)")
    parser.add_argument("--in-process", action="store_true", help="measure in this process (smoke test)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.tiny:
        args.layers, args.heads = 1, 2
    benchlib.setup_torch(args.threads)

    from mtv_core.tokenizer.testing import random_weights

    if args.model == "17b":
        try:
            import mtv_core.dit.transformer_17b  # noqa: F401
        except ImportError as exc:
            print(f"--model 17b: mtv_core.dit.transformer_17b is not available ({exc})")
            return 2
    config = make_config(args.model, args.layers, args.heads)
    state = random_weights(build_meta(args.model, config), seed=0)
    config_json = config.to_diffusers_config() if hasattr(config, "to_diffusers_config") else None
    cases = [c for c in CASES if not args.cases or any(s in c[0] for s in args.cases)]
    title = (f"MV-DiT-{args.model.upper()} loading -> {args.dtype} on {args.device}, {args.layers} layers x "
             f"{args.heads} heads; peaks above the pre-load level, x = multiple of the target-dtype weight bytes")
    columns = ["checkpoint", "weights MiB", "private MiB", "private x", "incl. file pages MiB", "incl. file x", "s"]
    if args.device.startswith("cuda"):
        columns.insert(-1, "GPU peak x")
    table = benchlib.Table(title, columns)
    failures = 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name, layout, source in cases:
            case_dir = Path(tmp) / f"{layout}_{source}"
            case_dir.mkdir()
            path = write_case(state, case_dir, layout, source, config_json)
            spec = {"path": str(path), "model": args.model, "layers": args.layers, "heads": args.heads,
                    "dtype": args.dtype, "device": args.device}
            try:
                r = run_case(spec, args.in_process)
            except Exception as exc:  # one broken case must not hide the others
                failures += 1
                table.add(name, f"failed: {exc}", *[""] * (len(columns) - 2))
                continue
            w = r["weight_bytes"]
            row = [name, w / benchlib.MiB, r["anon"] / benchlib.MiB, f"{r['anon'] / w:.2f}",
                   r["rss"] / benchlib.MiB, f"{r['rss'] / w:.2f}"]
            if "gpu_peak" in r:
                row.append(f"{r['gpu_peak'] / w:.2f}")
            table.add(*row, f"{r['seconds']:.2f}")
            for file in sorted(case_dir.rglob("*"), reverse=True):  # free the disk as we go
                file.unlink() if file.is_file() else file.rmdir()
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:])
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
