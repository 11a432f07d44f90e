"""Optional ``torch.compile`` of the MV-DiTs, one transformer block at a time.

Compiling block by block (``nn.Module.compile``, in place: parameter names and ``state_dict()`` keys are unchanged)
keeps each graph small and identical across blocks, so inductor compiles one block shape once and the others
hit its cache. ``dynamic=True`` makes the token count (resolution, frames) and batch size symbolic, so that a new
resolution does not recompile the world. The first step pays the compilation (tens of seconds to minutes with
inductor on a GPU); later steps and windows reuse it.
"""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The repeated blocks of an MV-DiT: ``transformer_blocks`` (7B) or ``blocks`` (17B)."""
    for name in ("transformer_blocks", "blocks"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise TypeError(f"{type(model).__name__} has no transformer_blocks / blocks to compile")


def compile_blocks(model: nn.Module, mode: str = "default", backend: str = "inductor", dynamic: bool = True) -> int:
    """Compile every transformer block of ``model`` in place; returns the number of blocks.

    ``mode``: one of ``COMPILE_MODES``; ``backend``: a ``torch.compile`` backend ("inductor"; "eager" only traces,
    for tests); ``dynamic``: symbolic shapes (True) so that other resolutions reuse the compiled code.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    blocks = transformer_blocks(model)
    options = {"mode": mode} if mode != "default" else {}
    for block in blocks:
        block.compile(backend=backend, dynamic=dynamic, **options)
    logger.info("compiled %d transformer blocks (backend %s, mode %s, dynamic %s)", len(blocks), backend, mode,
                dynamic)
    return len(blocks)

