"""Benchmark the 4DMoT tokenizer at released size on CPU: encode and encode+decode of 49/97/193 frames.

Weights are regenerated from the reference manifest (``$MTV_REFERENCE_DIR`` or ../shared/reference;
random weights of the released size if it is absent); the input is real NLF motion from the reference
``sampled_data.pkl`` when available. Prints seconds (median of --repeats) and frames per second.

    .venv/bin/python benchmarks/bench_tokenizer.py [--threads 2] [--repeats 5]
    .venv/bin/python benchmarks/bench_tokenizer.py --upstream /path/to/MTVCrafter   # also time upstream

``--upstream`` imports ``models/motion4d/vqvae.py`` from that checkout (its CUDA-only codebook
creation neutralised), times it the same way and checks that both give identical indices.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtv_core.tokenizer.config import TokenizerConfig  # noqa: E402
from mtv_core.tokenizer.encode import normalize_joints  # noqa: E402
from mtv_core.tokenizer.model import MotionVQVAE  # noqa: E402
from mtv_core.tokenizer.testing import random_state_dict, regenerate_from_manifest  # noqa: E402

LENGTHS = (49, 97, 193)


def reference_dir() -> Path:
    return Path(os.environ.get("MTV_REFERENCE_DIR", ROOT.parent / "shared" / "reference"))


def released_weights() -> tuple[dict[str, torch.Tensor], str]:
    manifests = sorted((reference_dir() / "4dmot").glob("manifest_4dmot_*.json"))
    if manifests:
        return regenerate_from_manifest(manifests[0]), manifests[0].name
    return random_state_dict(TokenizerConfig()), "random weights (no reference manifest found)"


def motion(frames: int) -> tuple[np.ndarray, str]:
    pkl = reference_dir() / "motion" / "sampled_data.pkl"
    if pkl.is_file():
        from mtv_core.motion.io import load_motions

        for seq in load_motions(pkl):
            if seq.num_frames >= frames:
                return seq.joints_mm[:frames], "sampled_data.pkl"
    rng = np.random.default_rng(0)
    return (rng.normal(0, 150, (frames, 24, 3)) + [0, 200, 1800]).astype(np.float32), "random joints"


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation, weight packing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_upstream(path: Path, state: dict[str, torch.Tensor]):
    spec = importlib.util.spec_from_file_location("upstream_vqvae", path / "models" / "motion4d" / "vqvae.py")
    module = importlib.util.module_from_spec(spec)
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self):  # upstream creates its codebook on CUDA
        spec.loader.exec_module(module)
        encoder = module.Encoder(3, [128, 512], 3072, downsample_time=[2, 2], downsample_joint=[1, 1])
        decoder = module.Decoder(3072, [512, 128], 3, frame_upsample_rate=[2.0, 2.0], joint_upsample_rate=[1.0, 1.0])
        vq = module.VectorQuantizer(8192, 3072, is_train=False)
    model = module.SMPL_VQVAE(encoder, decoder, vq)
    model.load_state_dict(state, strict=True)
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--upstream", type=Path, help="upstream MTVCrafter checkout to time for comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    state, source = released_weights()
    model = MotionVQVAE(TokenizerConfig())
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    upstream = load_upstream(args.upstream, state) if args.upstream else None
    load = os.getloadavg()
    print(f"4DMoT released size, {source}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'frames':>6} {'impl':>9} {'encode s':>9} {'enc fps':>8} {'enc+dec s':>10} {'e+d fps':>8}  input")
    for frames in LENGTHS:
        joints, what = motion(frames)
        x = normalize_joints(model, joints)

        def encode():
            with torch.inference_mode():
                return model.quantize(model.encode_features(x))

        def encode_decode():
            with torch.inference_mode():
                features = model.encode_features(x)
                tokens, _, _ = model.quantize(features)
                return model.decode_tokens(tokens, features.shape[2])

        rows = [("ours", timed(encode, args.repeats), timed(encode_decode, args.repeats))]
        if upstream is not None:
            with torch.no_grad():
                rows.append(("upstream", timed(lambda: upstream(x, return_vq=True), args.repeats),
                             timed(lambda: upstream(x), args.repeats)))
                up_tokens, _ = upstream(x, return_vq=True)
            ours_tokens, ours_idx, _ = encode()
            same = torch.equal(ours_idx[0], torch.cdist(up_tokens[0], model.vq.codebook).argmin(dim=1))
            print(f"{'':>6} indices identical to upstream: {same}")
        for name, enc_s, encdec_s in rows:
            print(f"{frames:>6} {name:>9} {enc_s:>9.3f} {frames / enc_s:>8.1f} {encdec_s:>10.3f} "
                  f"{frames / encdec_s:>8.1f}  {what}")
        if upstream is not None:
            print(f"{'':>6} {'speed-up':>9} {rows[1][1] / rows[0][1]:>9.2f}x {'':>8} {rows[1][2] / rows[0][2]:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
