"""Loading MV-DiT checkpoints of any registered variant without ever holding a float32 copy of low-precision weights.

Accepted: diffusers folders (``config.json`` + sharded safetensors with an index, e.g. the released
``MV-DiT/CogVideoX/``) and single safetensors files (ComfyUI ``models/diffusion_models``; keys may carry one
of the variant's prefixes such as ``model.diffusion_model.``). The variant is recognised from the keys
(``variants.py``); the model is built without memory for its weights (``meta_init.empty_weights``) and
every tensor is read from the file (positional reads, see ``safetensors_reader``) straight into the requested
dtype on the requested device, so peak host memory is about the size of the weights in that dtype (on a GPU:
one 64 MiB staging buffer).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attention import check_available, check_backend
from ..checkpoint import CheckpointError, load_into, open_checkpoint, strip_key_prefix
from ..meta_init import empty_weights, finish_loading
from ..precision import resolve_dtype
from .fused_linear import fused_targets
from .variants import DiTVariant, describe_keys, get_variant, variants

logger = logging.getLogger(__name__)


def _check_options(variant: DiTVariant, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(variant.load_options))
    if unknown:
        takes = f"; it takes {', '.join(variant.load_options)}" if variant.load_options else ""
        raise TypeError(f"{variant.title} takes no loading options {unknown}{takes}")


def open_dit(path: str | Path, variant: str | None = None, **options: Any) -> tuple[DiTVariant, Any, Any]:
    """(variant, checkpoint view without the variant's key prefix, config) of a DiT checkpoint.

    ``variant`` (a registry name) is what the caller expects; None accepts any registered variant.
    ``options`` go to the variant's ``open_weights`` hook (17B: ``adapter``); they need ``variant``.
    CheckpointError names the file and the variant found (or what the file looks like) when it does not fit.
    """
    wanted = get_variant(variant) if variant is not None else None
    if wanted is not None and wanted.open_weights is not None:
        _check_options(wanted, options)
        found_variant, view = wanted, wanted.open_weights(path, **options)
    else:
        if options:
            raise TypeError(f"loading options {sorted(options)} need the variant that takes them (variant=...)")
        ckpt = open_checkpoint(path)
        found = None
        for candidate in variants():
            view = strip_key_prefix(ckpt, candidate.key_prefixes)
            if candidate.matches(view.keys()):
                found = candidate, view
                break
        if found is None:
            what = wanted.title if wanted is not None else "MV-DiT"
            hint = f" Expected {wanted.expected}." if wanted is not None else ""
            raise CheckpointError(f"{ckpt.path}: not an {what} checkpoint; it {describe_keys(ckpt.keys(), wanted)}.{hint}")
        found_variant, view = found
        if wanted is not None and found_variant is not wanted:
            raise CheckpointError(f"{ckpt.path}: this is an {found_variant.title} checkpoint, not {wanted.title}; load "
                                  f"it as the {found_variant.name} variant (with the {found_variant.title} loader)")
        if found_variant.open_weights is not None:
            view = found_variant.open_weights(path)
    try:
        config = found_variant.config_from_checkpoint(view.config, view.shapes())
    except (TypeError, ValueError) as exc:
        where = f"{view.path}/config.json" if view.config is not None else str(view.path)
        raise CheckpointError(f"{where}: {found_variant.title}: {exc}") from exc
    return found_variant, view, config


def read_dit_config(path: str | Path, variant: str | None = None, **options: Any) -> tuple[DiTVariant, Any]:
    """(variant, config) of a DiT checkpoint from its headers only (no weights are read)."""
    found, _, config = open_dit(path, variant, **options)
    return found, config


def load_dit(
    path: str | Path,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
    attention: str = "auto",
    variant: str | None = None,
    operations: Any = None,
    **options: Any,
) -> nn.Module:
    """Load the MV-DiT at ``path`` in ``dtype`` on ``device`` with attention backend ``attention``.

    ``variant``: the registry name expected ("7b", "17b"), None for whichever registered variant the file is.
    ``operations``: a namespace of layer classes handed to the model's constructor (e.g. ComfyUI's ops).
    ``options``: what the variant's loader takes besides (17B: ``adapter``, ``weight_dtype``); a variant with a
    ``load`` hook loads the model itself (the 17B's fp8 storage).
    """
    wanted = get_variant(variant) if variant is not None else None
    if wanted is not None and wanted.load is not None:
        found = wanted
    else:
        found, ckpt, config = open_dit(path, variant, **options)
    if found.load is not None:
        _check_options(found, options)
        return found.load(path, dtype=dtype, device=device, attention=attention, operations=operations, **options)
    dtype = resolve_dtype(dtype, device)
    check_backend(attention)  # before reading gigabytes of weights
    with empty_weights():
        model = found.build(config, operations)
    # one GEMM for the self-attention q/k/v (same keys and outputs; see fused_linear): read into fused weights
    fused = fused_targets(model, model.qkv_groups(), dtype, device) if hasattr(model, "qkv_groups") else None
    load_into(model, ckpt, dtype=dtype, device=device, what=found.title, hint=f"expected {found.expected}",
              targets=fused)
    finish_loading(model, device, ckpt.path)
    check_available(attention)
    model.set_attention_backend(attention)
    model.eval().requires_grad_(False)
    logger.info("loaded %s from %s (%s on %s, attention %s)", found.title, path, dtype, device, attention)
    return model


def load_mvdit7b(
    path: str | Path,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
    attention: str = "auto",
    operations: Any = None,
) -> nn.Module:
    """``load_dit`` for MV-DiT-7B (a file of another variant is refused, naming it). ``operations``: the namespace
    its layers are built from (default ``torch.nn``; ComfyUI passes ``comfy.ops``)."""
    return load_dit(path, dtype, device, attention, variant="7b", operations=operations)
