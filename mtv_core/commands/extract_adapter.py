"""``python -m mtv_core extract-adapter SRC DST``: the motion layers of a full MV-DiT-17B as a small adapter file.

The adapter (``blocks.N.motion_attn.*`` and ``blocks.N.norm4.*``, about 2.1 GB in bf16 for the release) loads on
top of any Wan2.1 I2V-14B / Wan2.1-Fun-14B-InP transformer the user already has, giving MV-DiT-17B without a
second 35 GB copy of the Wan weights. The file is written all or nothing.
"""

from __future__ import annotations

import argparse
import logging

import torch

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "keep": None}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract-adapter", help="write the motion layers of an MV-DiT-17B as an adapter file",
        description="Read a full MV-DiT-17B (folder or single file, bf16 / fp8 / scaled fp8) and write only its "
                    "motion layers (blocks.N.motion_attn, blocks.N.norm4) to a .safetensors adapter that loads "
                    "on top of a Wan2.1 I2V-14B base.",
    )
    parser.add_argument("src", help="full MV-DiT-17B: MV-DiT/Wan-2-1 folder or a single .safetensors/.bin file")
    parser.add_argument("dst", help="adapter file to write (.safetensors)")
    parser.add_argument("--dtype", default="bf16", choices=tuple(DTYPES),
                        help="adapter dtype; keep = as stored (fp8 layers become bf16) (default: bf16)")
    parser.set_defaults(func=run_extract_adapter)
    return parser


def run_extract_adapter(args: argparse.Namespace) -> int:
    """Command entry: returns the exit code (2 for a bad or missing file)."""
    from ..checkpoint import CheckpointError
    from ..dit.loading_17b import extract_adapter

    try:
        extract_adapter(args.src, args.dst, dtype=DTYPES[args.dtype])
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        logger.error("%s", exc)
        return 2
    return 0
