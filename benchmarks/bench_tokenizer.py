"""Benchmark the 4DMoT tokenizer at released size on CPU: encode and encode+decode of 49/97/193 frames.

Weights are regenerated from the reference manifest (``$MTV_REFERENCE_DIR`` or ../shared/reference;
random weights of the released size if it is absent); the input is real NLF motion from the reference
``sampled_data.pkl`` when available. Prints seconds (median of --repeats) and frames per second.

    .venv/bin/python benchmarks/bench_tokenizer.py [--threads 2] [--repeats 5] [--record]
    .venv/bin/python benchmarks/bench_tokenizer.py --upstream /path/to/MTVCrafter   # also time upstream
    .venv/bin/python benchmarks/bench_tokenizer.py --no-screen   # the full fp32 codebook search

``--upstream`` imports ``models/motion4d/vqvae.py`` from that checkout (its CUDA-only codebook
creation neutralised), times it the same way (interleaved with ours) and checks that both give identical
indices. ``--tiny`` runs the tiny test configuration on short inputs (the smoke test; no upstream).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from mtv_core.tokenizer.config import TokenizerConfig  # noqa: E402
from mtv_core.tokenizer.encode import normalize_joints  # noqa: E402
from mtv_core.tokenizer.model import MotionVQVAE  # noqa: E402
from mtv_core.tokenizer.testing import TINY_CONFIG, random_state_dict, regenerate_from_manifest  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--upstream", type=Path, help="upstream MTVCrafter checkout to time for comparison")
    parser.add_argument("--no-screen", action="store_true",
                        help="full fp32 codebook search (as on CPUs without fast bf16 products)")
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny and args.upstream:
        parser.error("--upstream needs the released size; leave out --tiny")
    benchlib.setup_torch(args.threads)
    if args.tiny:
        config, lengths, args.repeats = TINY_CONFIG, (17,), 1
        state, source = random_state_dict(config), "tiny random weights"
    else:
        config, lengths = TokenizerConfig(), LENGTHS
        state, source = released_weights()
    model = MotionVQVAE(config)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    if args.no_screen:
        model.vq.screen = False
    upstream = load_upstream(args.upstream, state) if args.upstream else None
    columns = ["frames", "impl", "encode s", "enc fps", "enc+dec s", "e+d fps", "input"]
    if upstream is not None:
        columns.append("indices identical")
    search = "full fp32 codebook search" if args.no_screen else "codebook search screened where bf16 is faster"
    table = benchlib.Table(f"4DMoT {'tiny' if args.tiny else 'released size'}, {source}; {search}; median of "
                           f"{args.repeats}", columns)
    for frames in lengths:
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

        if upstream is None:
            enc_s, encdec_s = benchlib.interleaved([encode, encode_decode], args.repeats)
            table.add(frames, "ours", enc_s, frames / enc_s, encdec_s, frames / encdec_s, what)
            continue
        with torch.no_grad():
            up_tokens, _ = upstream(x, return_vq=True)
        _, ours_idx, _ = encode()
        same = torch.equal(ours_idx[0], torch.cdist(up_tokens[0], model.vq.codebook).argmin(dim=1))
        with torch.no_grad():
            enc_s, up_enc_s, encdec_s, up_encdec_s = benchlib.interleaved(
                [encode, lambda: upstream(x, return_vq=True), encode_decode, lambda: upstream(x)], args.repeats)
        table.add(frames, "ours", enc_s, frames / enc_s, encdec_s, frames / encdec_s, what, same)
        table.add(frames, "upstream", up_enc_s, frames / up_enc_s, up_encdec_s, frames / up_encdec_s, what, same)
        table.add(frames, "speed-up", f"{up_enc_s / enc_s:.2f}x", "", f"{up_encdec_s / encdec_s:.2f}x", "", "", "")
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="CPU timings on a shared machine are noisy; ours and upstream are interleaved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
