"""One-shot GPU check of the MV-DiTs at released size: step time per attention backend, model FLOP utilisation,
peak memory, bf16 drift, and the step under a 24 GB budget with offloading. Fits about 6 minutes on one H200.

Models are built at released size on the meta device, materialised on the GPU in bf16 and filled with random
weights in place (no checkpoint files). Inputs: 49 frames at 512 x 512 (13 latent frames x 32 x 32 = 13,312
tokens), one CFG batch of 2 per step. Sections, each guarded (a failure prints the error and the check goes on)
and skipped when the time budget (``--budget-s``) would not allow it:

- ``environment``: versions, GPU, attention backends present, a bf16 matmul's measured TFLOP/s.
- ``load_7b``: loading checkpoints straight to the GPU: a 2-block MV-DiT-7B at released width written as fp32
  safetensors and fp32 ``.pt``, each loaded into bf16 on the GPU; host and GPU peaks as multiples of the bf16
  weight bytes, load seconds, and bit-identity with a CPU load.
- ``build_7b``: MV-DiT-7B build time, weight bytes.
- ``step_7b``: seconds per CFG step for each attention backend: ``sdpa`` (PyTorch's own choice), SDPA restricted
  to its ``flash``, ``efficient`` and ``cudnn`` kernels (``torch.nn.attention.sdpa_kernel``), ``xformers`` when
  importable, ``sage`` (SageAttention, lossy) when importable; model FLOP utilisation (FLOPs counted analytically: ``benchlib.dit7b_flops``) against 790 TFLOP/s
  (an H200's measured bf16 matmul peak) and against this run's matmul; peak GPU memory; each backend's max
  difference from ``sdpa``.
- ``drift_7b``: bf16 against float32 (TF32 off) on a 4-block slice, same weights and inputs.
- ``options_7b``: the speed options: the step with self-attention q/k/v unfused and fused (``fuse_qkv``; speed-up,
  difference), a 10-step sampling loop with first-block step caching at thresholds 0.05 / 0.1 / 0.2 (speed-up,
  forwards skipped, difference of the final latents from the uncached loop; random weights skip less than trained
  ones), and with ``--compile`` per-block ``torch.compile`` (first call = compilation, then the step).
- ``fp8_matmul``: one feed-forward-sized Linear (26,624 tokens x 3072 -> 12,288) with e4m3 weights: the bf16
  upcast path against fp8 compute through ``torch.nn.functional.scaled_mm`` (speed-up, error of each against
  fp32).
- ``budget_7b``: the step with the allocator limited to ``--budget-gib`` (24): resident, then with the CLI's
  offload path (``mtv_core.offload``: diffusers group offloading, block level, one block per group, stream
  prefetch); slowdown against the unconstrained ``sdpa`` step.
- ``build_17b``, ``step_17b``, ``budget_17b``: the same for MV-DiT-17B when ``mtv_core.dit.transformer_17b``
  exists (``MVDiT17B(config, operations=torch.nn)``, ``MVDiT17BConfig``); under the budget with fp8 weight
  storage (``mtv_core.offload.apply_weight_dtype``: float8_e4m3fn stored, bf16 compute) plus group offloading.

Writes every figure as JSON to ``--out`` (default ``$OUT/gpu_check.json``, else ``./gpu_check.json``) and prints
summary tables last. ``--tiny`` (alias ``--dry-run``) runs every section on tiny models on the CPU in seconds
(the smoke test), so the script does not fail on the GPU for a silly reason.

    python3 benchmarks/gpu_check.py [--out PATH] [--steps 3] [--budget-s 330] [--compile] [--tiny]

Needs torch, numpy, safetensors, einops and diffusers (see benchmarks/README.md for carrying its wheel).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()

import torch  # noqa: E402

H200_BF16_PEAK = 790e12  # FLOP/s, a bf16 matmul measured on an H200 of this workplace
FRAMES, SIZE = 49, 512


class Check:
    """State shared by the sections: options, device, figures, deadline."""

    def __init__(self, args) -> None:
        self.args = args
        self.tiny = args.tiny
        # an indexed device: torch.cuda.set_per_process_memory_fraction refuses a bare "cuda"
        self.device = (torch.device("cpu") if args.tiny or not torch.cuda.is_available()
                       else torch.device("cuda", torch.cuda.current_device()))
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.bfloat16
        self.start = time.perf_counter()
        self.deadline = self.start + args.budget_s
        self.results: dict[str, dict] = {}
        self.matmul_flops: float | None = None
        self.frames, self.size = (FRAMES, 32) if self.tiny else (FRAMES, SIZE)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, fn, need_s: float = 0.0):
        """Run section ``fn(self)`` (returns a dict of figures), recording ok / skipped / failed."""
        print(f"\n== {name} ({self.left():.0f} s of the budget left)", flush=True)
        if not self.tiny and self.left() < need_s:
            self.results[name] = {"status": f"skipped: needs about {need_s:.0f} s, {self.left():.0f} s left"}
            print(f"   {self.results[name]['status']}", flush=True)
            return None
        start = time.perf_counter()
        try:
            figures = fn(self) or {}
            figures = {"status": "ok", **figures}
        except Skip as exc:
            figures = {"status": f"skipped: {exc}"}
        except Exception as exc:  # a section failing must not stop the others
            traceback.print_exc()
            figures = {"status": f"failed: {type(exc).__name__}: {exc}"}
        figures["section_s"] = round(time.perf_counter() - start, 2)
        self.results[name] = figures
        print(f"   {name}: {figures['status']} ({figures['section_s']} s)", flush=True)
        return figures


class Skip(Exception):
    """A section that does not apply here (no 17B module, no CUDA, ...)."""


# ---------------------------------------------------------------------------------------------- helpers
def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_reset(check: Check) -> None:
    if check.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(check: Check) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if check.cuda else None


def timed_steps(check: Check, step) -> tuple[float, list[float]]:
    """Median seconds of ``--steps`` calls of ``step`` after one warm-up call."""
    step()
    times = []
    for _ in range(check.args.steps):
        start = benchlib.synced(check.device)
        step()
        times.append(benchlib.synced(check.device) - start)
    return sorted(times)[len(times) // 2], [round(t, 4) for t in times]


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()
    return {"max_abs_diff": (a - b).abs().max().item(),
            "rel_err": ((a - b).norm() / b.norm().clamp_min(1e-30)).item()}


def weight_gib(model) -> float:
    return round(sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**30, 3)


@contextlib.contextmanager
def memory_budget(check: Check, gib: float):
    """Limit this process's CUDA caching allocator to ``gib`` GiB (no-op on CPU)."""
    if not check.cuda:
        yield
        return
    free_memory()
    total = torch.cuda.get_device_properties(check.device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), check.device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, check.device)


def offload(check: Check, model, storage_dtype: torch.dtype | None = None) -> None:
    """The CLI's offload path for small GPUs (``mtv_core.offload.place_dit`` on a model in CPU RAM): optional fp8
    weight storage (diffusers' layerwise casting), then block-level group offloading with stream prefetch."""
    from mtv_core.offload import place_dit

    model.to("cpu")
    free_memory()
    place_dit(model, check.device, offload="group", storage_dtype=storage_dtype)


SDPA_KERNELS = ("flash", "efficient", "cudnn")


def attention_variants(check: Check) -> list[tuple[str, str, object]]:
    """(name, backend for the model, SDPA kernel restriction or None)."""
    from torch.nn.attention import SDPBackend

    from mtv_core.attention import sage_available, xformers_available

    kernels = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
    variants = [("sdpa", "sdpa", None)]
    for name in SDPA_KERNELS:
        if hasattr(SDPBackend, kernels[name]) and (check.cuda or name == "flash"):
            variants.append((f"sdpa-{name}", "sdpa", getattr(SDPBackend, kernels[name])))
    if check.cuda and xformers_available():
        variants.append(("xformers", "xformers", None))
    if check.cuda and sage_available():
        variants.append(("sage", "sage", None))  # lossy: its max |diff| vs sdpa is reported
    return variants


def run_variants(check: Check, model, inputs, forward, flops: float, variants) -> dict:
    """Time ``forward(model, inputs)`` under each attention variant; returns figures per variant."""
    from torch.nn.attention import sdpa_kernel

    figures, reference = {}, None
    for name, backend, kernel in variants:
        if not check.tiny and check.left() < 25:
            figures[name] = {"status": "skipped: time budget"}
            continue
        try:
            model.set_attention_backend(backend)
            restrict = sdpa_kernel([kernel]) if kernel is not None else contextlib.nullcontext()
            with restrict, torch.no_grad():
                peak_reset(check)
                seconds, times = timed_steps(check, lambda: forward(model, inputs))
                out = forward(model, inputs).float()
            row = {"status": "ok", "s_per_step": round(seconds, 4), "times": times, "peak_gib": peak_gib(check),
                   "tflops": round(flops / seconds / 1e12, 1), "mfu_vs_790": round(flops / seconds / H200_BF16_PEAK, 3)}
            if check.matmul_flops:
                row["mfu_vs_matmul"] = round(flops / seconds / check.matmul_flops, 3)
            if reference is None:
                reference = out
            else:
                row.update({f"vs_sdpa_{k}": v for k, v in compare(out, reference).items()})
            figures[name] = row
            print(f"   {name}: {row}", flush=True)
        except Exception as exc:
            figures[name] = {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
            print(f"   {name}: {figures[name]['status']}", flush=True)
        finally:
            model.set_attention_backend("sdpa")
    return figures


# ---------------------------------------------------------------------------------------------- environment
def environment(check: Check) -> dict:
    from torch.nn.attention import SDPBackend

    from mtv_core.attention import sage_available, xformers_available

    figures = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
               "device": torch.cuda.get_device_name() if check.cuda else "cpu (tiny dry run)" if check.tiny else "cpu",
               "cpu": benchlib.cpu_model(), "cpu_count": os.cpu_count(), "tiny": check.tiny,
               "sdpa_backends": list(getattr(SDPBackend, "__members__", {})), "xformers": xformers_available(),
               "sage": sage_available()}
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        figures.update(total_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                       multiprocessors=props.multi_processor_count)
    try:
        import diffusers

        figures["diffusers"] = diffusers.__version__
    except ImportError as exc:
        figures["diffusers"] = f"missing ({exc})"
    if xformers_available():
        import xformers

        figures["xformers_version"] = xformers.__version__
    n = 256 if check.tiny else 8192
    g = torch.Generator(device=check.device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=check.device, dtype=check.dtype)
    b = torch.randn(n, n, generator=g, device=check.device, dtype=check.dtype)
    seconds = benchlib.timed(lambda: a @ b, repeats=10, device=check.device, warmup=3)
    check.matmul_flops = 2 * n**3 / seconds
    figures["matmul_bf16_tflops"] = round(check.matmul_flops / 1e12, 1)
    for key, value in figures.items():
        print(f"   {key}: {value}", flush=True)
    return figures


# ---------------------------------------------------------------------------------------------- loading
def section_load_7b(check: Check) -> dict:
    """Checkpoints read straight to the device: peaks relative to the weights, bit-identity with a CPU load."""
    import tempfile

    from safetensors.torch import save_file

    from mtv_core.dit.loading import load_mvdit7b

    config = config_7b(check, layers=1 if check.tiny else 2)
    source = build_7b(check, config, torch.float32, seed=5)
    state = {k: v.detach().cpu().contiguous() for k, v in source.state_dict().items()}
    del source
    free_memory()
    figures = {"blocks": config.num_layers}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32 safetensors": Path(tmp) / "m.safetensors", "fp32 .pt": Path(tmp) / "m.pt"}
        save_file(state, str(files["fp32 safetensors"]))
        torch.save(state, files["fp32 .pt"])
        del state
        for name, path in files.items():
            expected = load_mvdit7b(path, dtype=check.dtype, device="cpu").state_dict()
            weight_bytes = sum(t.numel() * t.element_size() for t in expected.values())
            free_memory()
            peak_reset(check)
            base = torch.cuda.memory_allocated() if check.cuda else 0
            with benchlib.MemorySampler() as mem:
                start = time.perf_counter()
                model = load_mvdit7b(path, dtype=check.dtype, device=check.device)
                seconds = benchlib.synced(check.device) - start
            got = model.state_dict()
            identical = all(torch.equal(got[k].cpu(), v) for k, v in expected.items())
            row = {"weight_mib": round(weight_bytes / 2**20, 1), "load_s": round(seconds, 2),
                   "host_private_x": round(mem.anon / weight_bytes, 3),
                   "host_incl_file_pages_x": round(mem.rss / weight_bytes, 3), "bit_identical_to_cpu_load": identical}
            if check.cuda:
                row["gpu_peak_x"] = round((torch.cuda.max_memory_allocated() - base) / weight_bytes, 3)
            figures[name] = row
            print(f"   {name}: {row}", flush=True)
            del model, got, expected
            free_memory()
            if not identical:
                raise AssertionError(f"{name}: tensors loaded on {check.device} differ from a CPU load")
    return figures


# ---------------------------------------------------------------------------------------------- MV-DiT-7B
def config_7b(check: Check, layers: int | None = None):
    from mtv_core.dit.config import MVDiT7BConfig

    config = MVDiT7BConfig(num_attention_heads=2, num_layers=2) if check.tiny else MVDiT7BConfig()
    if layers is not None:
        import dataclasses

        config = dataclasses.replace(config, num_layers=layers)
    return config


def build_7b(check: Check, config, dtype, seed: int = 0):
    from mtv_core.dit.transformer_7b import MVDiT7B

    return benchlib.build_random(lambda: MVDiT7B(config), dtype, check.device, seed)


def inputs_7b(check: Check, model):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_dit import step_inputs

    return step_inputs(model, check.frames, check.size)


def forward_7b(model, inputs):
    return model(*inputs)


def section_build_7b(check: Check) -> dict:
    start = benchlib.synced(check.device)
    model = build_7b(check, config_7b(check), check.dtype)
    seconds = benchlib.synced(check.device) - start
    check.model_7b = model
    check.inputs_7b = inputs_7b(check, model)
    params = sum(p.numel() for p in model.parameters())
    return {"build_s": round(seconds, 2), "params": params, "weight_gib": weight_gib(model),
            "tokens": check.inputs_7b[0].shape[1] * (check.size // 16) ** 2,
            "allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 2) if check.cuda else None}


def section_step_7b(check: Check) -> dict:
    model, inputs = _need(check, "model_7b"), check.inputs_7b
    tokens = inputs[0].shape[1] * (check.size // 16) ** 2
    flops = benchlib.dit7b_flops(model.config, tokens, inputs[2].shape[1], batch=inputs[0].shape[0])
    figures = {"tokens": tokens, "tflop_per_step": round(flops / 1e12, 2)}
    figures["backends"] = run_variants(check, model, inputs, forward_7b, flops, attention_variants(check))
    sdpa = figures["backends"].get("sdpa", {})
    if sdpa.get("status") == "ok":
        check.unconstrained_7b = sdpa["s_per_step"]
    return figures


def section_drift_7b(check: Check) -> dict:
    """bf16 against float32 on a 4-block slice with the same weights and inputs."""
    layers = 2 if check.tiny else 4
    reference = build_7b(check, config_7b(check, layers), torch.float32, seed=3)
    low = copy.deepcopy(reference).to(check.dtype)
    inputs = tuple(t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in inputs_7b(check, reference))
    from mtv_core.precision import exact_fp32_matmul

    cudnn_tf32 = torch.backends.cudnn.allow_tf32  # the patch embedding is a convolution
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad(), exact_fp32_matmul(check.device):
            expected = reference(*inputs).float()
            got = low(*inputs).float()
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    del reference, low
    free_memory()
    return {"blocks": layers, **compare(got, expected), "output_rms": expected.pow(2).mean().sqrt().item()}


def section_options_7b(check: Check) -> dict:
    """The speed options on the 7B step: fused q/k/v on/off, first-block step caching over a short loop, per-block
    torch.compile (``--compile``; inductor warm-up is long)."""
    from mtv_core.dit.sampler_7b import denoise_7b
    from mtv_core.dit.step_cache import step_caching

    model, inputs = _need(check, "model_7b"), check.inputs_7b
    model.set_attention_backend("sdpa")
    figures: dict = {}
    with torch.no_grad():
        unfused_s, _ = timed_steps(check, lambda: forward_7b(model, inputs))
        unfused = forward_7b(model, inputs).float()
        fused_layers = model.fuse_qkv()
        fused_s, _ = timed_steps(check, lambda: forward_7b(model, inputs))
        fused = forward_7b(model, inputs).float()
    figures["fused_qkv"] = {"layers": fused_layers, "unfused_s_per_step": round(unfused_s, 4),
                            "fused_s_per_step": round(fused_s, 4), "speed_up": round(unfused_s / fused_s, 3),
                            **{f"vs_unfused_{k}": v for k, v in compare(fused, unfused).items()}}
    print(f"   fused q/k/v: {figures['fused_qkv']}", flush=True)

    latents_in, _, motion, _, _ = inputs
    frames, h, w = latents_in.shape[1], latents_in.shape[3], latents_in.shape[4]
    g = torch.Generator(device=check.device).manual_seed(11)
    noise = torch.randn(1, frames, 16, h, w, generator=g, device=check.device, dtype=check.dtype)
    ref = torch.randn(1, frames, 16, h, w, generator=g, device=check.device, dtype=check.dtype)
    cond = motion[1:2]
    guidance = 3.0 if model.unconditional_motion_token.shape[0] == cond.shape[1] else 1.0
    steps = 4 if check.tiny else 10

    def loop():
        return denoise_7b(model, noise, ref, cond, num_steps=steps, guidance=guidance,
                          generator=torch.Generator(device=check.device).manual_seed(0)).float()

    start = benchlib.synced(check.device)
    plain = loop()
    plain_s = benchlib.synced(check.device) - start
    rows = {"steps": steps, "guidance": guidance, "uncached_s": round(plain_s, 3)}
    for threshold in (0.05, 0.1, 0.2):
        if not check.tiny and check.left() < plain_s + 20:
            rows[str(threshold)] = {"status": "skipped: time budget"}
            continue
        with step_caching(model, threshold) as cache:
            start = benchlib.synced(check.device)
            out = loop()
            seconds = benchlib.synced(check.device) - start
        rows[str(threshold)] = {"s": round(seconds, 3), "speed_up": round(plain_s / seconds, 3),
                                "skipped": f"{cache.hits}/{cache.calls}", **compare(out, plain)}
        print(f"   step cache {threshold}: {rows[str(threshold)]}", flush=True)
    figures["step_cache"] = rows

    if check.args.compile:
        from mtv_core.dit.compile import compile_blocks

        compiled = copy.deepcopy(model)
        compile_blocks(compiled, backend="eager" if check.tiny else "inductor")
        with torch.no_grad():
            start = benchlib.synced(check.device)
            out = forward_7b(compiled, inputs).float()
            first = benchlib.synced(check.device) - start
            seconds, _ = timed_steps(check, lambda: forward_7b(compiled, inputs))
        figures["compile"] = {"first_call_s": round(first, 2), "s_per_step": round(seconds, 4),
                              "speed_up": round(fused_s / seconds, 3), **compare(out, fused)}
        del compiled
        print(f"   compile: {figures['compile']}", flush=True)
    return figures


def section_fp8_matmul(check: Check) -> dict:
    """fp8 compute (torch.nn.functional.scaled_mm, per-tensor e4m3) against the bf16 upcast path on one
    feed-forward-sized Linear: speed and error."""
    from mtv_core.dit.fp8_ops import FP8Linear, fp8_compute_available, quantize_fp8

    if not fp8_compute_available():
        raise Skip("this torch has no torch.nn.functional.scaled_mm: fp8 stays storage-only")
    tokens, dim, out_dim = (256, 64, 128) if check.tiny else (2 * 13312, 3072, 4 * 3072)
    g = torch.Generator(device=check.device).manual_seed(5)
    x = torch.randn(tokens, dim, generator=g, device=check.device).to(torch.bfloat16)
    dense = torch.randn(out_dim, dim, generator=g, device=check.device) / dim**0.5
    layer = FP8Linear(dim, out_dim, bias=False, device=check.device, dtype=torch.float8_e4m3fn)
    layer.weight.data, layer.scale_weight = quantize_fp8(dense)
    with torch.no_grad():
        exact = x.float() @ dense.t()
        upcast_s, _ = timed_steps(check, lambda: layer(x))
        upcast = layer(x).float()
        layer.fp8_compute = True
        fp8_s, _ = timed_steps(check, lambda: layer(x))
        fp8 = layer(x).float()
    return {"shape": [tokens, dim, out_dim], "upcast_s": round(upcast_s, 5), "fp8_s": round(fp8_s, 5),
            "speed_up": round(upcast_s / fp8_s, 2), "fp8_still_on": layer.fp8_compute,
            **{f"fp8_vs_upcast_{k}": v for k, v in compare(fp8, upcast).items()},
            **{f"upcast_vs_fp32_{k}": v for k, v in compare(upcast, exact).items()},
            **{f"fp8_vs_fp32_{k}": v for k, v in compare(fp8, exact).items()}}


def section_budget(check: Check, kind: str) -> dict:
    """The step under the memory budget: resident, then with the offload path (17B: fp8 storage too)."""
    model, inputs, forward = _need(check, f"model_{kind}"), getattr(check, f"inputs_{kind}"), FORWARD[kind]
    budget = check.args.budget_gib
    figures: dict = {"budget_gib": budget}
    base = getattr(check, f"unconstrained_{kind}", None)
    model.set_attention_backend("sdpa")
    if kind == "7b":  # the 17B (35 GB in bf16) cannot be resident under 24 GB: skip the attempt
        try:
            with memory_budget(check, budget), torch.no_grad():
                peak_reset(check)
                seconds, times = timed_steps(check, lambda: forward(model, inputs))
            figures["resident"] = {"status": "ok", "s_per_step": round(seconds, 4), "peak_gib": peak_gib(check)}
        except torch.cuda.OutOfMemoryError as exc:
            figures["resident"] = {"status": f"out of memory: {str(exc).splitlines()[0][:200]}"}
        free_memory()
        print(f"   resident: {figures['resident']}", flush=True)
    storage = torch.float8_e4m3fn if kind == "17b" else None
    start = time.perf_counter()
    offload(check, model, storage)
    figures["offload_setup_s"] = round(time.perf_counter() - start, 2)
    figures["storage_dtype"] = str(storage or check.dtype)
    with memory_budget(check, budget), torch.no_grad():
        peak_reset(check)
        seconds, times = timed_steps(check, lambda: forward(model, inputs))
    row = {"status": "ok", "s_per_step": round(seconds, 4), "times": times, "peak_gib": peak_gib(check)}
    if base:
        row["slowdown_vs_unconstrained"] = round(seconds / base, 2)
    figures["offloaded"] = row
    print(f"   offloaded: {row}", flush=True)
    setattr(check, f"model_{kind}", None)  # hooked and on the CPU now: not reused
    return figures


# ---------------------------------------------------------------------------------------------- MV-DiT-17B
def config_17b(check: Check):
    from mtv_core.dit.config_17b import MVDiT17BConfig
    from mtv_core.dit.tiny_17b import tiny_mvdit17b_config

    return tiny_mvdit17b_config() if check.tiny else MVDiT17BConfig()


def inputs_17b(check: Check, model, config) -> dict:
    """Keyword inputs of ``MVDiT17B.forward`` for one CFG step of 2 (Wan layout): latents (B, 16, F, h, w), the
    conditioning ``y`` (B, in_dim - 16, F, h, w), padded text context (B, text_len, text_dim), CLIP features
    (B, 257, clip_dim), motion tokens (B, F*24, token width) and their RoPE tables (F*24, head_dim)."""
    from mtv_core.constants import NUM_JOINTS, latent_frames
    from mtv_core.dit.config_17b import RELEASED_MOTION_TOKEN_DIM

    device, dtype, batch = check.device, check.dtype, 2
    frames, h = latent_frames(check.frames), check.size // 8
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    head_dim, motion_rows = config.dim // config.num_heads, frames * NUM_JOINTS
    return {
        "latents": randn(batch, config.out_dim, frames, h, h),
        "y": randn(batch, config.in_dim - config.out_dim, frames, h, h),
        "timestep": torch.full((batch,), 500, device=device, dtype=torch.long),
        "context": randn(batch, config.text_len, config.text_dim),
        "clip_fea": randn(batch, 257, config.clip_dim),
        "motion_tokens": randn(batch, motion_rows, config.motion_token_dim or RELEASED_MOTION_TOKEN_DIM),
        "motion_rope": (torch.ones(motion_rows, head_dim, device=device),
                        torch.zeros(motion_rows, head_dim, device=device)),
    }


def forward_17b(model, inputs):
    out = model(**inputs)
    return out[0] if isinstance(out, (tuple, list)) else out


def section_build_17b(check: Check) -> dict:
    from mtv_core.dit.transformer_17b import MVDiT17B

    config = config_17b(check)
    start = benchlib.synced(check.device)
    model = benchlib.build_random(lambda: MVDiT17B(config, operations=torch.nn), check.dtype, check.device)
    seconds = benchlib.synced(check.device) - start
    check.model_17b, check.config_17b = model, config
    check.inputs_17b = inputs_17b(check, model, config)
    return {"build_s": round(seconds, 2), "params": sum(p.numel() for p in model.parameters()),
            "weight_gib": weight_gib(model),
            "allocated_gib": round(torch.cuda.memory_allocated() / 2**30, 2) if check.cuda else None}


def section_step_17b(check: Check) -> dict:
    model, config = _need(check, "model_17b"), check.config_17b
    latent_frames = (check.frames - 1) // 4 + 1
    tokens = latent_frames * (check.size // 16) ** 2
    flops = benchlib.dit17b_flops(config, tokens, latent_frames * 24, batch=2)
    variants = [v for v in attention_variants(check) if v[0] in ("sdpa", "sdpa-flash", "xformers", "sage")]
    figures = {"tokens": tokens, "tflop_per_step": round(flops / 1e12, 2)}
    figures["backends"] = run_variants(check, model, check.inputs_17b, forward_17b, flops, variants)
    if figures["backends"].get("sdpa", {}).get("status") == "ok":
        check.unconstrained_17b = figures["backends"]["sdpa"]["s_per_step"]
    return figures


FORWARD = {"7b": forward_7b, "17b": forward_17b}


def _need(check: Check, attr: str):
    model = getattr(check, attr, None)
    if model is None:
        raise Skip(f"no {attr.replace('model_', 'MV-DiT-').upper()} model (its build failed or was skipped)")
    return model


# ---------------------------------------------------------------------------------------------- report
def summary(check: Check) -> str:
    lines = [f"gpu_check summary ({'tiny dry run on CPU' if check.tiny else check.results.get('environment', {}).get('device')}),"
             f" {time.perf_counter() - check.start:.0f} s"]
    table = benchlib.Table("step time per attention backend (CFG batch 2, 49 frames 512x512 = 13,312 tokens)",
                           ["model", "backend", "s/step", "TFLOP/s", "MFU vs 790", "peak GiB", "max |diff| vs sdpa",
                            "status"])
    for kind in ("7b", "17b"):
        backends = check.results.get(f"step_{kind}", {}).get("backends", {})
        for name, row in backends.items():
            table.add(kind, name, row.get("s_per_step", ""), row.get("tflops", ""), row.get("mfu_vs_790", ""),
                      row.get("peak_gib", ""), _sci(row.get("vs_sdpa_max_abs_diff")), row["status"][:40])
    lines.append(table.text())
    budget = benchlib.Table(f"under a {check.args.budget_gib} GiB budget",
                            ["model", "mode", "s/step", "peak GiB", "slowdown", "status"])
    for kind in ("7b", "17b"):
        section = check.results.get(f"budget_{kind}", {})
        for mode in ("resident", "offloaded"):
            if mode in section:
                row = section[mode]
                budget.add(kind, mode if mode == "resident" else f"offload ({section.get('storage_dtype')})",
                           row.get("s_per_step", ""), row.get("peak_gib", ""), row.get("slowdown_vs_unconstrained", ""),
                           row["status"][:40])
    lines.append(budget.text())
    drift = check.results.get("drift_7b", {})
    if drift.get("status") == "ok":
        lines.append(f"bf16 vs fp32, {drift['blocks']} blocks: max |diff| {drift['max_abs_diff']:.3e}, "
                     f"rel. err {drift['rel_err']:.3e}")
    options = check.results.get("options_7b", {})
    if options.get("status") == "ok":
        fused = options["fused_qkv"]
        lines.append(f"7B fused q/k/v: {fused['unfused_s_per_step']} -> {fused['fused_s_per_step']} s/step "
                     f"({fused['speed_up']}x), max |diff| {fused['vs_unfused_max_abs_diff']:.2e}")
        cache = options["step_cache"]
        for key, row in cache.items():
            if isinstance(row, dict) and "speed_up" in row:
                lines.append(f"7B step cache {key} over {cache['steps']} steps: {row['speed_up']}x, skipped "
                             f"{row['skipped']}, rel. err {row['rel_err']:.2e}")
        if "compile" in options:
            row = options["compile"]
            lines.append(f"7B per-block compile: first call {row['first_call_s']} s, {row['speed_up']}x per step, "
                         f"max |diff| {row['max_abs_diff']:.2e}")
    fp8 = check.results.get("fp8_matmul", {})
    if fp8.get("status") == "ok":
        lines.append(f"fp8 matmul {fp8['shape']}: {fp8['speed_up']}x vs bf16 upcast, rel. err vs fp32 "
                     f"{fp8['fp8_vs_fp32_rel_err']:.2e} (upcast {fp8['upcast_vs_fp32_rel_err']:.2e})")
    loads = check.results.get("load_7b", {})
    for name in ("fp32 safetensors", "fp32 .pt"):
        if name in loads:
            row = loads[name]
            lines.append(f"load {name} -> bf16 on the GPU: host {row['host_incl_file_pages_x']}x incl. file pages, "
                         f"GPU {row.get('gpu_peak_x')}x, {row['load_s']} s, identical to a CPU load: "
                         f"{row['bit_identical_to_cpu_load']}")
    lines.append("sections: " + ", ".join(f"{k} {v['status'].split(':')[0]}" for k, v in check.results.items()))
    return "\n".join(lines)


def _sci(value) -> str:
    return "" if value is None else f"{value:.2e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up, per measurement")
    parser.add_argument("--budget-s", type=float, default=330, help="skip sections that would end past this")
    parser.add_argument("--budget-gib", type=float, default=24, help="memory budget of the offload sections")
    parser.add_argument("--tiny", "--dry-run", action="store_true", help="tiny models on the CPU, seconds")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out")
    parser.add_argument("--compile", action="store_true", help="also time per-block torch.compile (options_7b)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps = 1
    out = args.out or Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    check = Check(args)
    if not check.cuda and not check.tiny:
        print("no CUDA device: running the tiny dry run instead (use --tiny to ask for it)")
        check.tiny = args.tiny = True
        check.frames, check.size = FRAMES, 32
    sections = [
        ("environment", environment, 0),
        ("load_7b", section_load_7b, 40),
        ("build_7b", section_build_7b, 30),
        ("step_7b", section_step_7b, 30),
        ("drift_7b", section_drift_7b, 20),
        ("options_7b", section_options_7b, 60),
        ("fp8_matmul", section_fp8_matmul, 10),
        ("budget_7b", lambda c: section_budget(c, "7b"), 60),
        ("build_17b", section_build_17b, 60),
        ("step_17b", section_step_17b, 40),
        ("budget_17b", lambda c: section_budget(c, "17b"), 90),
    ]
    for name, fn, need in sections:
        if name in args.skip:
            check.results[name] = {"status": "skipped: --skip"}
            continue
        check.run(name, fn, need)
        if name == "budget_7b":  # free the 7B before the 17B
            check.model_7b = None
            free_memory()
    check.results["total_s"] = {"status": "ok", "seconds": round(time.perf_counter() - check.start, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(check.results, indent=2, default=str))
    print("\n" + summary(check))
    print(f"figures written to {out}")
    failed = [k for k, v in check.results.items() if v["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
