"""Fitting MV-DiT-7B into less GPU memory outside ComfyUI (the CLI), with diffusers' hooks.

The model stays plain torch; these only attach ``diffusers.hooks``:

- offload ``none``: the whole model on the compute device.
- ``group``: ``apply_group_offloading(offload_type="block_level", num_blocks_per_group=1)``: the transformer
  blocks wait on the offload device (CPU RAM) and each is brought to the compute device just before it runs; on
  CUDA the next block is prefetched on a side stream while the current one computes (``use_stream=True``). The
  embeddings, output layers and the unconditional tokens travel with the model's own forward.
- ``leaf``: ``offload_type="leaf_level"``: every layer on its own (the least memory, the most transfers).
- weight dtype ``fp8_e4m3fn`` / ``fp8_e5m2``: ``apply_layerwise_casting``: Linear and Conv weights are stored in
  fp8 and cast to the compute dtype layer by layer; norms, the patch embedding and the output projection keep the
  compute dtype (diffusers' default skip patterns). Half the memory of bf16 weights, slightly different results.

Offloading needs the model on the offload device when it is applied; ``place_dit`` takes it from there.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "group", "leaf")
WEIGHT_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def weight_dtype(name: str | None) -> torch.dtype | None:
    """A ``--weight-dtype`` value -> storage dtype (None: the compute dtype itself)."""
    if name in (None, "", "auto", "same"):
        return None
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight dtype {name!r}; choose one of {', '.join(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[name]


def apply_weight_dtype(model: torch.nn.Module, storage_dtype: torch.dtype, compute_dtype: torch.dtype) -> None:
    """Store ``model``'s Linear/Conv weights in ``storage_dtype`` and compute in ``compute_dtype`` (diffusers'
    layerwise casting); the model's ``compute_dtype`` says so to its callers."""
    from diffusers.hooks import apply_layerwise_casting

    apply_layerwise_casting(model, storage_dtype=storage_dtype, compute_dtype=compute_dtype)
    model.compute_dtype = compute_dtype


def apply_offload(model: torch.nn.Module, mode: str, device: torch.device | str,
                  offload_device: torch.device | str = "cpu") -> None:
    """Run ``model`` on ``device`` with its weights offloaded as ``mode`` says (see the module docstring).

    ``model`` must be on ``offload_device``; afterwards its ``device`` is ``device``.
    """
    if mode not in OFFLOAD_MODES:
        raise ValueError(f"unknown offload mode {mode!r}; choose one of {', '.join(OFFLOAD_MODES)}")
    device = torch.device(device)
    if mode == "none":
        model.to(device)
        return
    from diffusers.hooks import apply_group_offloading

    # streams overlap the next block's transfer with this block's compute; they exist on CUDA only
    kwargs = {"onload_device": device, "offload_device": torch.device(offload_device),
              "use_stream": device.type == "cuda"}
    if mode == "group":
        apply_group_offloading(model, offload_type="block_level", num_blocks_per_group=1, **kwargs)
    else:
        apply_group_offloading(model, offload_type="leaf_level", **kwargs)
    model.device = device  # the weights live on the offload device between calls
    logger.info("MV-DiT-7B: %s offloading to %s, computing on %s", mode, offload_device, device)


def place_dit(model: torch.nn.Module, device: torch.device | str, offload: str = "none",
              storage_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The CLI's placement of a loaded MV-DiT-7B: optional fp8 weight storage, then offloading (or none)."""
    if storage_dtype is not None:
        apply_weight_dtype(model, storage_dtype, model.dtype)
    apply_offload(model, offload, device)
    return model
