"""Time the MV-DiT-7B pipeline (reference encode, windowed sampling, decode) on tiny random models.

Shows the cost structure of long videos: per window, ``steps`` DiT calls (x2 with motion guidance), one VAE
decode of the previous window and one VAE encode of the carried overlap. Prints seconds per case and the
seconds per frame. ``--full-vae`` also times the CogVideoX-5B VAE at its real size (random weights) encoding
and decoding one 49-frame window, the VAE's share of a real run (slow on CPU; meant for a GPU).

    .venv/bin/python benchmarks/bench_pipeline7b.py [--size 96] [--steps 50] [--threads 2] [--device cpu] [--full-vae]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _synced(device: torch.device) -> float:
    """``time.perf_counter()`` once queued CUDA work has finished (CUDA calls return before the work is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, nargs="+", default=[49, 89, 97, 177])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-vae", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the animate command does on CPU

    from mtv_core.commands.animate import write_tiny_models
    from mtv_core.dit.loading import load_mvdit7b
    from mtv_core.dit.pipeline_7b import animate_7b
    from mtv_core.dit.vae import load_vae, vae_config
    from mtv_core.constants import OVERLAP_FRAMES, WINDOW_FRAMES
    from mtv_core.motion import procedural_motion
    from mtv_core.tokenizer.encode import encode_windows
    from mtv_core.tokenizer.loading import load_tokenizer

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_tiny_models(Path(tmp) / "models")
        tokenizer = load_tokenizer(paths.tokenizer)
        model = load_mvdit7b(paths.dit, dtype=torch.float32, device=device)
        vae = load_vae(paths.vae, dtype=torch.float32, device=device)
        reference = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
        print(f"tiny MV-DiT-7B (2 layers, 2 heads) + tiny VAE, {args.size}x{args.size}, {args.steps} steps, "
              f"guidance 3, {args.threads} threads, {device}")
        for frames in args.frames:
            motion = encode_windows(tokenizer, procedural_motion("dance", frames=frames), window=WINDOW_FRAMES,
                                    overlap=OVERLAP_FRAMES)
            start = _synced(device)
            video, _ = animate_7b(model, vae, reference, motion, width=args.size, height=args.size,
                                  num_steps=args.steps)
            seconds = _synced(device) - start
            print(f"  {frames:4d} frames -> {video.shape[0]:4d} out, {len(motion.windows)} window(s): "
                  f"{seconds:6.2f} s ({seconds / video.shape[0] * 1000:.0f} ms/frame)")

    if args.full_vae:
        from diffusers import AutoencoderKLCogVideoX

        from mtv_core.dit.vae import CogVideoXVAE

        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        config = {k: v for k, v in vae_config().items() if not k.startswith("_")}
        full = CogVideoXVAE(AutoencoderKLCogVideoX.from_config(config).to(device, dtype))
        pixels = torch.rand(1, 3, 49, 512, 512, device=device) * 2 - 1
        start = _synced(device)
        latents = full.encode(pixels, generator=torch.Generator().manual_seed(0))
        print(f"CogVideoX-5B VAE encode 49x512x512 ({dtype}, tiled): {_synced(device) - start:.1f} s")
        start = _synced(device)
        full.decode(latents)
        print(f"CogVideoX-5B VAE decode 13x64x64 latents ({dtype}, tiled): {_synced(device) - start:.1f} s")
        if device.type == "cuda":
            print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
