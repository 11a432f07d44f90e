"""Seconds per MV-DiT-7B step (one CFG batch of 2) at several token counts, optionally side by side with upstream.

A model of the released layout (random weights, built on the meta device and filled in place on the device) runs
one forward of the CFG batch [learned unconditional tokens, motion tokens] at 49 frames (13 latent frames) and each
``--sizes`` resolution (tokens = 13 x size/16 x size/16; 512 -> 13,312). On CPU the default model is scaled down
(``--layers 2 --heads 8``); ``--release`` uses the released 42 x 48 (meant for a GPU). Prints the median seconds
per step, tokens per second and the model FLOP rate (FLOPs counted analytically, see ``benchlib.dit7b_flops``).

``--upstream CHECKOUT`` also runs upstream's ``Transformer7B`` (``models/dit/mvdit_transformer_7b.py`` of a
DINGYANB/MTVCrafter checkout; needs diffusers) with the same weights and inputs, first checking that both outputs
agree (max |difference| and relative error; the parity tests' tolerance is 1e-4), then times both interleaved.

The model runs with fused self-attention q/k/v (``MVDiT7B.fuse_qkv``, as the loaders leave it);
``--compare-fused`` also times an unfused copy of it (the step before fusion) and reports the output difference.

    python benchmarks/bench_dit.py [--sizes 128 192 256] [--layers 2 --heads 8 | --release] [--device cuda]
                                   [--dtype bf16] [--upstream /path/to/MTVCrafter] [--compare-fused] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

benchlib.ensure_root_on_path()

import torch  # noqa: E402

from mtv_core.dit.config import MVDiT7BConfig  # noqa: E402
from mtv_core.dit.loading import resolve_dtype  # noqa: E402
from mtv_core.dit.sampler_7b import rope_tables_7b  # noqa: E402
from mtv_core.dit.transformer_7b import MVDiT7B  # noqa: E402

FRAMES = 49


def model_config(args) -> MVDiT7BConfig:
    if args.release:
        return MVDiT7BConfig()
    return MVDiT7BConfig(num_attention_heads=args.heads, num_layers=args.layers)


def step_inputs(model: MVDiT7B, frames: int, size: int, seed: int = 0):
    """(latents_in, timesteps, motion_tokens, vision_rope, motion_rope) of one CFG step at ``size`` x ``size``."""
    cfg, device, dtype = model.config, model.device, model.dtype
    latent_frames, h = (frames - 1) // cfg.temporal_compression_ratio + 1, size // 8
    g = torch.Generator(device=device).manual_seed(seed)
    latents = torch.randn(2, latent_frames, cfg.in_channels, h, h, generator=g, device=device).to(dtype)
    motion = torch.randn(1, latent_frames * 24, cfg.motion_token_dim, generator=g, device=device).to(dtype)
    uncond = model.unconditional_motion_token[None]
    if uncond.shape[1] != motion.shape[1]:
        uncond = motion.roll(1, dims=1)  # non-release frame counts: any tokens of the right shape
    vision, motion_rope = rope_tables_7b(model, latent_frames, h, h)
    timesteps = torch.full((2,), 500, device=device, dtype=torch.long)
    return latents, timesteps, torch.cat([uncond, motion]), vision, motion_rope


def load_upstream(checkout: Path, model: MVDiT7B):
    """Upstream's ``Transformer7B`` with ``model``'s weights, on its device and in its dtype."""
    module = benchlib.import_file(checkout / "models" / "dit" / "mvdit_transformer_7b.py", "mvdit_transformer_7b",
                                  package="mtv_upstream_dit")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # its dtype-cast advice is about from_pretrained, not this
    kwargs = {k: v for k, v in model.config.to_diffusers_config().items() if not k.startswith("_")}
    with contextlib.redirect_stdout(io.StringIO()):  # its constructor prints a row of its random token
        upstream = module.Transformer7B(**kwargs)
    upstream.unconditional_motion_token = torch.nn.Parameter(torch.empty_like(model.unconditional_motion_token))
    upstream.load_state_dict(model.state_dict(), strict=True)
    return upstream.to(model.device, model.dtype).eval().requires_grad_(False)


def upstream_forward(upstream, latents, timesteps, motion, vision, motion_rope):
    return upstream(hidden_states=latents, timestep=timesteps, image_rotary_emb=vision,
                    motion_rotary_emb=motion_rope, motion_emb=motion, return_dict=False)[0]


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |a - b|, ||a - b|| / ||b||)."""
    a, b = a.double(), b.double()
    return (a - b).abs().max().item(), ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 192, 256], help="square pixel sizes")
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--release", action="store_true", help="the released 42 layers x 48 heads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upstream", type=Path, help="upstream MTVCrafter checkout to compare with")
    parser.add_argument("--compare-fused", action="store_true", help="also time the model with q/k/v unfused")
    parser.add_argument("--compile", action="store_true",
                        help="also time the model with its blocks compiled (inductor, dynamic shapes; reports the "
                             "first call, i.e. the compilation, separately)")
    benchlib.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.layers, args.heads, args.repeats, args.release = [32], 1, 2, 1, False
    benchlib.setup_torch(args.threads)
    device = torch.device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = model_config(args)
    model = benchlib.build_random(lambda: MVDiT7B(config), dtype, device)
    upstream = load_upstream(args.upstream, model) if args.upstream else None
    unfused = copy.deepcopy(model) if args.compare_fused else None  # before fusing: its own, separate weights
    model.fuse_qkv()
    compiled = None
    if args.compile:
        from mtv_core.dit.compile import compile_blocks

        compiled = copy.deepcopy(model)  # shares nothing with ``model``; fused like it
        compile_blocks(compiled)

    title = (f"MV-DiT-7B step (CFG batch 2), {config.num_layers} layers x {config.num_attention_heads} heads, "
             f"{args.frames} frames, {dtype} on {device}, median of {args.repeats}")
    columns = ["size", "tokens", "s/step", "tokens/s", "TFLOP/s"]
    if upstream is not None:
        columns += ["upstream s/step", "speed-up", "max |diff|", "rel. err"]
    if unfused is not None:
        columns += ["unfused s/step", "fusion speed-up", "fused vs unfused max |diff|"]
    if compiled is not None:
        columns += ["compiled s/step", "compile speed-up", "first call s", "compiled max |diff|"]
    table = benchlib.Table(title, columns)
    with torch.inference_mode():
        for size in args.sizes:
            inputs = step_inputs(model, args.frames, size)
            tokens = inputs[0].shape[1] * (size // 16) ** 2
            flops = benchlib.dit7b_flops(config, tokens, inputs[2].shape[1], batch=2)
            fns = [lambda: model(*inputs)]
            if upstream is not None:
                diff = compare(model(*inputs), upstream_forward(upstream, *inputs))
                fns.append(lambda: upstream_forward(upstream, *inputs))
            if unfused is not None:
                fused_diff = compare(model(*inputs), unfused(*inputs))[0]
                fns.append(lambda: unfused(*inputs))
            if compiled is not None:
                start = benchlib.synced(device)
                compiled_out = compiled(*inputs)
                first_call = benchlib.synced(device) - start
                compiled_diff = compare(compiled_out, model(*inputs))[0]
                fns.append(lambda: compiled(*inputs))
            seconds = benchlib.interleaved(fns, args.repeats, device)
            row = [size, tokens, seconds[0], tokens * 2 / seconds[0], flops / seconds[0] / 1e12]
            if upstream is not None:
                row += [seconds[1], f"{seconds[1] / seconds[0]:.2f}x", f"{diff[0]:.2e}", f"{diff[1]:.2e}"]
            if unfused is not None:
                slot = 1 + (upstream is not None)
                row += [seconds[slot], f"{seconds[slot] / seconds[0]:.2f}x", f"{fused_diff:.2e}"]
            if compiled is not None:
                row += [seconds[-1], f"{seconds[0] / seconds[-1]:.2f}x", first_call, f"{compiled_diff:.2e}"]
            table.add(*row)
    print(benchlib.machine_line())
    table.print()
    if args.record:
        benchlib.record([table], Path(__file__).name, argv if argv is not None else sys.argv[1:],
                        notes="CPU timings on a shared machine are noisy; compare columns of one run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
