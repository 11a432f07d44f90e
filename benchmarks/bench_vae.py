"""CogVideoX VAE encode and decode of one 49-frame window, with and without tiling: seconds and peak memory.

``--full`` uses the real CogVideoX-5B VAE configuration (random weights; meant for a GPU, slow on CPU); by default
the real layer layout at reduced width (``--channels``). Tiling (diffusers ``enable_tiling``, the pack's default)
splits frames larger than the VAE's tile (240 x 360 pixels) into overlapping tiles; slicing stays on. Prints
seconds per encode/decode and the peak memory above the level before each (GPU allocator peak on CUDA, else
process-private host memory).

    python benchmarks/bench_vae.py [--sizes 256] [--full] [--device cuda] [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()

import torch  # noqa: E402

from mtv_core.dit.loading import resolve_dtype  # noqa: E402
from mtv_core.constants import latent_frames  # noqa: E402
from mtv_core.dit.vae import CogVideoXVAE, tiny_vae_config, vae_config  # noqa: E402


def build_vae(full: bool, channels: int, device, dtype) -> CogVideoXVAE:
    from diffusers import AutoencoderKLCogVideoX
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its advice on casting concerns from_pretrained, not random weights

    config = vae_config() if full else tiny_vae_config()
    if not full:
        config.update(block_out_channels=[channels, channels, 2 * channels, 2 * channels],
                      norm_num_groups=min(channels, 32) // 2 or 1)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        vae = AutoencoderKLCogVideoX.from_config(config)
    vae = vae.to(dtype).to_empty(device=device)
    return CogVideoXVAE(benchlib.random_init_(vae, seed=0))


def measured(fn, device):
    """(result, seconds, peak bytes above the start) of one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        start = benchlib.synced(device)
        out = fn()
        seconds = benchlib.synced(device) - start
        return out, seconds, torch.cuda.max_memory_allocated() - base
    with benchlib.MemorySampler() as mem:
        start = benchlib.synced(device)
        out = fn()
        seconds = benchlib.synced(device) - start
    return out, seconds, mem.anon


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256], help="square pixel sizes")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--full", action="store_true", help="the real CogVideoX-5B VAE size")
    parser.add_argument("--channels", type=int, default=16, help="base width of the reduced VAE")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.frames, args.channels, args.full = [32], 9, 4, False
    benchlib.setup_torch(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    vae = build_vae(args.full, args.channels, device, dtype)
    width = "CogVideoX-5B size" if args.full else f"reduced width {args.channels}"
    table = benchlib.Table(f"CogVideoX VAE ({width}), {args.frames} frames, {dtype} on {device}, slicing on",
                           ["size", "tiling", "encode s", "encode peak MiB", "decode s", "decode peak MiB"])
    g = torch.Generator().manual_seed(0)
    for size in args.sizes:
        pixels = (torch.rand(1, 3, args.frames, size, size, generator=g) * 2 - 1).to(device)
        for tiling in (False, True):
            vae.set_tiling(tiling)
            vae.encode(pixels[:, :, :1], sample=False)  # warm-up (kernels, allocator)
            latents, enc_s, enc_mem = measured(lambda: vae.encode(pixels, sample=False), device)
            assert latents.shape[1] == latent_frames(args.frames)
            _, dec_s, dec_mem = measured(lambda: vae.decode(latents), device)
            table.add(size, "on" if tiling else "off", enc_s, enc_mem / benchlib.MiB, dec_s, dec_mem / benchlib.MiB)
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="CPU timings on a shared machine are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
