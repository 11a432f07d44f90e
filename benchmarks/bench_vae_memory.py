"""Peak activation memory of the CogVideoX-5B VAE (diffusers) per pixel and frame, next to the estimate.

Builds the real-size VAE (random weights) and, in a fresh process per case, decodes 2 latent frames (8 video
frames) or encodes 9 video frames of one tile, measuring the increase of peak RSS over the loaded model. Prints
the fp32 values held per pixel and frame, to compare with the factors ``mtv_core.memory`` uses (ComfyUI's for
its own CogVideoX VAE: 2800 decoding, 1400 encoding). CPU, fp32; minutes on a small machine.

    .venv/bin/python benchmarks/bench_vae_memory.py [--height 120 --width 184]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(mode: str, height: int, width: int) -> dict:
    """Run one decode or encode in this process; returns the peak RSS increase and the values per pixel-frame."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    from mtv_core.dit.vae import vae_config

    torch.set_num_threads(1)
    config = {k: v for k, v in vae_config().items() if not k.startswith("_")}
    vae = AutoencoderKLCogVideoX.from_config(config).eval()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with torch.inference_mode():
        if mode == "decode":
            frames = vae.decode(torch.randn(1, 16, 2, height // 8, width // 8)).sample.shape[2]
        else:
            frames = 9
            vae.encode(torch.randn(1, 3, frames, height, width)).latent_dist.mode()
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    return {"mode": mode, "height": height, "width": width, "frames": frames, "peak_bytes": peak,
            "fp32_values_per_pixel_frame": round(peak / 4 / frames / (height * width))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=184)
    parser.add_argument("--one", choices=("decode", "encode"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.height, args.width)))
        return
    from mtv_core.memory import VAE_DECODE_PER_PIXEL, VAE_ENCODE_PER_PIXEL

    for mode, factor in (("decode", VAE_DECODE_PER_PIXEL), ("encode", VAE_ENCODE_PER_PIXEL)):
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--height", str(args.height),
                              "--width", str(args.width)], check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{mode}: {result['fp32_values_per_pixel_frame']} fp32 values per pixel and frame measured "
              f"({result['peak_bytes'] / 2**20:.0f} MiB peak at {args.height}x{args.width}, {result['frames']} "
              f"frames); estimate factor {factor}")


if __name__ == "__main__":
    main()
