"""Seconds of the MV-DiT-7B sampling loop (CogVideoX DPM-Solver++, motion CFG 3) per step, optionally side by side
with upstream's ``MTVCrafterPipeline7B`` loop.

Our loop is ``sampler_7b.denoise_7b`` with a randomly initialised model of the released layout (scaled down on
CPU: ``--layers 2 --heads 8``; ``--release`` for a GPU) at 49 frames and ``--size``. ``--upstream CHECKOUT`` also
runs upstream's pipeline (``output_type='latent'``, same weights, scheduler, noise, reference latents and motion
tokens; the tiny CogVideoX VAE's reference encode is computed once and replayed on both sides, so the times are
the loops'), checks that the final latents agree, and times both interleaved. Upstream's pipeline module imports torchvision for one ``Normalize`` it never uses here;
when torchvision is missing a stand-in is registered.

``--cache-threshold T ...`` also runs the loop with first-block step caching at each threshold (``step_cache``;
lossy, off by default) and reports its speed-up, the share of forwards whose later blocks were skipped and the
difference of the final latents from the uncached loop. Random weights change their first-block residual much
more from step to step than trained ones, so a threshold skips fewer steps here than on the released weights.

    python benchmarks/bench_sampling.py [--size 128] [--steps 4] [--release] [--device cuda]
                                        [--upstream /path/to/MTVCrafter] [--cache-threshold 0.1 0.3] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()

import torch  # noqa: E402
from bench_dit import compare, load_upstream, model_config  # noqa: E402

from mtv_core.dit.loading import resolve_dtype  # noqa: E402
from mtv_core.dit.sampler_7b import denoise_7b, make_scheduler_7b  # noqa: E402
from mtv_core.dit.step_cache import step_caching  # noqa: E402
from mtv_core.dit.transformer_7b import MVDiT7B  # noqa: E402
from mtv_core.dit.vae import tiny_vae_config  # noqa: E402
from mtv_core.motion.stats import load_stats  # noqa: E402

FRAMES = 49
GUIDANCE = 3.0


def _torchvision_stand_in() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        transforms = types.ModuleType("torchvision.transforms")
        transforms.Normalize = lambda *args, **kwargs: None
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision"].transforms = transforms
        sys.modules["torchvision.transforms"] = transforms


def tiny_vae(device, dtype):
    from diffusers import AutoencoderKLCogVideoX
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its advice on casting concerns from_pretrained, not random weights

    config = {k: v for k, v in tiny_vae_config().items() if not k.startswith("_")}
    vae = AutoencoderKLCogVideoX.from_config(config)
    return benchlib.random_init_(vae.to(device=device, dtype=dtype), seed=1).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--release", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--upstream", type=Path)
    parser.add_argument("--cache-threshold", type=float, nargs="*", default=[],
                        help="also time first-block step caching at these thresholds")
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.steps, args.layers, args.heads, args.repeats, args.release = 32, 2, 1, 2, 1, False
    benchlib.setup_torch(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = model_config(args)
    model = benchlib.build_random(lambda: MVDiT7B(config), dtype, device)
    vae = tiny_vae(device, torch.float32)
    mean, std = load_stats()

    latent_frames, h = (FRAMES - 1) // config.temporal_compression_ratio + 1, args.size // 8
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, latent_frames, 16, h, h, generator=g)
    motion = torch.randn(1, latent_frames * 24, config.motion_token_dim, generator=g).to(dtype)
    ref_images = torch.rand(FRAMES, 3, args.size, args.size, generator=g) * 2 - 1  # (F, C, H, W) as upstream takes

    # the reference encode runs once; both loops replay its posterior (so the times are the loops', not the VAE's)
    with torch.no_grad():
        posterior = vae.encode(ref_images.permute(1, 0, 2, 3)[None].to(device))
    vae.encode = lambda *args, **kwargs: posterior

    def encode_reference():  # as upstream's pipeline: latent_dist.sample() from the global RNG
        torch.manual_seed(5)
        return vae.encode(None).latent_dist.sample().permute(0, 2, 1, 3, 4)

    def ours():
        with torch.no_grad():
            ref = encode_reference()
            return denoise_7b(model, noise.to(device), ref, motion, num_steps=args.steps, guidance=GUIDANCE,
                              generator=torch.Generator(device=device).manual_seed(7), scheduler=make_scheduler_7b(),
                              joint_mean_mm=mean)

    fns = [ours]
    if args.upstream:
        _torchvision_stand_in()
        pipeline_module = benchlib.import_file(args.upstream / "models" / "dit" / "pipeline_mtvcrafter_7b.py",
                                               "pipeline_mtvcrafter_7b", package="mtv_upstream_dit")
        with contextlib.redirect_stdout(io.StringIO()):
            pipe = pipeline_module.MTVCrafterPipeline7B(vae=vae, transformer=load_upstream(args.upstream, model),
                                                        scheduler=make_scheduler_7b())
        pipe.set_progress_bar_config(disable=True)

        def theirs():
            torch.manual_seed(5)  # its reference encode samples from the global RNG, as ours above
            with torch.no_grad():
                return pipe(height=args.size, width=args.size, num_frames=FRAMES, num_inference_steps=args.steps,
                            guidance_scale=GUIDANCE, seed=7, latents=noise.to(device), output_type="latent",
                            return_dict=False, ref_images=ref_images.to(device), motion_embeds=motion.to(device),
                            joint_mean=mean, joint_std=std)[0]

        fns.append(theirs)

    title = (f"MV-DiT-7B sampling loop, {config.num_layers} layers x {config.num_attention_heads} heads, {FRAMES} "
             f"frames {args.size}x{args.size}, {args.steps} steps, guidance {GUIDANCE}, {dtype} on {device}, "
             f"median of {args.repeats}")
    columns = ["tokens", "steps", "s/loop", "s/step"]
    if args.upstream:
        columns += ["upstream s/loop", "speed-up", "max |diff|", "rel. err"]
    table = benchlib.Table(title, columns)
    row = [latent_frames * (args.size // 16) ** 2, args.steps]
    if args.upstream:
        diff = compare(ours(), theirs())
    seconds = benchlib.interleaved(fns, args.repeats, device)
    row += [seconds[0], seconds[0] / args.steps]
    if args.upstream:
        row += [seconds[1], f"{seconds[1] / seconds[0]:.2f}x", f"{diff[0]:.2e}", f"{diff[1]:.2e}"]
    table.add(*row)
    tables = [table]
    if args.cache_threshold:
        tables.append(cache_table(args, model, ours, seconds[0], device))
    print(benchlib.machine_line())
    for t in tables:
        t.print()
    if args.record:
        benchlib.record(tables, Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="CPU timings on a shared machine are noisy; compare columns of one run")
    return 0


def cache_table(args, model, ours, uncached_s: float, device) -> benchlib.Table:
    """Speed-up and output difference of first-block step caching at each ``--cache-threshold`` (the same cache
    ``denoise_7b(cache_threshold=...)`` installs, set up here to read its counts)."""
    table = benchlib.Table(f"first-block step caching, {args.steps} steps (vs the uncached loop above)",
                           ["threshold", "s/loop", "speed-up", "forwards skipped", "max |diff|", "rel. err"])
    reference = ours()
    for threshold in args.cache_threshold:
        caches = []

        def cached(threshold=threshold):
            with step_caching(model, threshold) as cache:
                caches.append(cache)
                return ours()

        diff = compare(cached(), reference)
        seconds = benchlib.timed(cached, args.repeats, device)
        skipped = f"{caches[0].hits}/{caches[0].calls}" if caches[0] is not None else "0"
        table.add(threshold, seconds, f"{uncached_s / seconds:.2f}x", skipped, f"{diff[0]:.2e}", f"{diff[1]:.2e}")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
