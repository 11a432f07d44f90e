"""Time the MV-DiT-7B pipeline (reference encode, windowed sampling, decode) on tiny random models.

Shows the cost structure of long videos: per window, ``steps`` DiT calls (x2 with motion guidance), one VAE
decode of the previous window and one VAE encode of the carried overlap. Prints seconds per case and the
milliseconds per output frame. The real-size VAE's share is measured by ``bench_vae.py --full``; the real-size
DiT step by ``bench_dit.py --release`` (both meant for a GPU).

    python benchmarks/bench_pipeline7b.py [--size 96] [--steps 50] [--frames 49 89] [--device cpu] [--record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--frames", type=int, nargs="+", default=[49, 89, 97, 177])
    parser.add_argument("--device", default="cpu")
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.steps, args.frames = 64, 2, [49]
    benchlib.setup_torch(args.threads)
    torch.set_flush_denormal(True)  # as the animate command does on CPU

    from mtv_core.commands.animate import write_tiny_models
    from mtv_core.dit.loading import load_mvdit7b
    from mtv_core.dit.pipeline_7b import animate_7b
    from mtv_core.constants import OVERLAP_FRAMES, WINDOW_FRAMES
    from mtv_core.dit.vae import load_vae
    from mtv_core.motion import procedural_motion
    from mtv_core.tokenizer.encode import encode_windows
    from mtv_core.tokenizer.loading import load_tokenizer

    device = torch.device(args.device)
    table = benchlib.Table(
        f"tiny MV-DiT-7B (2 layers, 2 heads) + tiny VAE, {args.size}x{args.size}, {args.steps} steps, guidance 3, "
        f"{device}", ["frames", "out frames", "windows", "s", "ms/frame"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_tiny_models(Path(tmp) / "models")
        tokenizer = load_tokenizer(paths.tokenizer)
        model = load_mvdit7b(paths.dit, dtype=torch.float32, device=device)
        vae = load_vae(paths.vae, dtype=torch.float32, device=device)
        reference = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
        for frames in args.frames:
            motion = encode_windows(tokenizer, procedural_motion("dance", frames=frames), window=WINDOW_FRAMES,
                                    overlap=OVERLAP_FRAMES)
            start = benchlib.synced(device)
            video, _ = animate_7b(model, vae, reference, motion, width=args.size, height=args.size,
                                  num_steps=args.steps)
            seconds = benchlib.synced(device) - start
            table.add(frames, video.shape[0], len(motion.windows), seconds, seconds / video.shape[0] * 1000)
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="CPU timings on a shared machine are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
