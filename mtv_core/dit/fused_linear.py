"""One GEMM for several Linear layers that read the same input (q/k/v projections), weights still loadable by name.

``fuse_linears(layers)`` copies the weights (and biases) of the layers into ONE (sum of out_features, in_features)
tensor and makes every layer's ``weight`` / ``bias`` a Parameter over its row block of it: ``state_dict()`` keys,
shapes and values are unchanged, ``load_state_dict`` copies into the blocks in place, and no weight is stored
twice. ``fused_projection(layers, x)`` then computes all outputs with one ``F.linear`` over the joint tensor,
found again from the layers' own storage on every call (nothing is cached): whenever the weights no longer lie
back to back in one storage (moved by ``.to()``, offloaded, replaced by ``load_state_dict(assign=True)``, a LoRA
patch that swaps the Parameter, ...), a layer brings its own forward (ComfyUI's casting ``comfy.ops``) or carries
hooks (diffusers' layerwise casting / offloading), the layers are simply called one by one.

Outputs equal the separate projections up to fp32 accumulation order (a GEMM over more columns may block the
reduction differently; on CPU/MKL they are bit-identical for the shapes measured in ``benchmarks/bench_dit.py``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _plain(layer: nn.Module) -> bool:
    """A torch ``nn.Linear`` computing with its own weight: no subclass forward, no instance-level forward (diffusers
    hooks replace it) and no forward hooks, so that skipping its call skips nothing."""
    return (isinstance(layer, nn.Linear) and type(layer).forward is nn.Linear.forward
            and "forward" not in vars(layer) and not layer._forward_hooks and not layer._forward_pre_hooks)


def _joint(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    """The tensors as one (sum of rows, ...) tensor when they are contiguous row blocks lying back to back in one
    storage, in order; else None."""
    first = tensors[0]
    if first is None or any(t is None for t in tensors) or first.device.type == "meta":
        return None
    storage, offset = first.untyped_storage().data_ptr(), first.storage_offset()
    rows = 0
    for tensor in tensors:
        if (tensor.dtype != first.dtype or tensor.device != first.device or not tensor.is_contiguous()
                or tensor.shape[1:] != first.shape[1:] or tensor.untyped_storage().data_ptr() != storage
                or tensor.storage_offset() != offset + rows * first[0].numel()):
            return None
        rows += tensor.shape[0]
    size = (rows, *first.shape[1:])
    if (offset + rows * first[0].numel()) * first.element_size() > first.untyped_storage().nbytes():
        return None
    return first.as_strided(size, torch.empty(size, device="meta").stride(), offset)


def _fusable(layers: Sequence[nn.Module]) -> bool:
    """Two or more plain ``nn.Linear`` layers of one input width, all with or all without bias."""
    return (len(layers) >= 2 and all(_plain(layer) for layer in layers)
            and len({layer.in_features for layer in layers}) == 1 and len({layer.bias is None for layer in layers}) == 1)


def _row_blocks(joint: torch.Tensor, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``joint`` cut into consecutive row blocks as tall as ``tensors``."""
    return list(joint.split([tensor.shape[0] for tensor in tensors]))


def fuse_linears(layers: Sequence[nn.Module]) -> bool:
    """Put the weights (and biases) of ``layers`` back to back in one tensor each; True when done.

    Only plain ``nn.Linear`` layers of one input width, dtype and device, all with or all without bias, are fused;
    anything else is left as it is (False). Idempotent.
    """
    if not _fusable(layers):
        return False
    weights = [layer.weight for layer in layers]
    biases = [layer.bias for layer in layers]
    if weights[0].device.type == "meta" or len({(w.dtype, w.device) for w in weights}) != 1:
        return False
    if _joint(weights) is not None and (biases[0] is None or _joint(biases) is not None):
        return True
    with torch.no_grad():
        for name, tensors in (("weight", weights), ("bias", biases)):
            if tensors[0] is None:
                continue
            blocks = _row_blocks(torch.cat([t.detach() for t in tensors]), tensors)
            for layer, tensor, block in zip(layers, tensors, blocks):
                setattr(layer, name, nn.Parameter(block, requires_grad=tensor.requires_grad))
    return True


def fused_projection(layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """``[layer(x) for layer in layers]``, as one GEMM when their weights are fused (see ``fuse_linears``)."""
    if all(_plain(layer) for layer in layers):
        weight = _joint([layer.weight for layer in layers])
        bias = _joint([layer.bias for layer in layers]) if layers[0].bias is not None else None
        usable = weight is not None and (bias is not None or layers[0].bias is None)
        if usable and not (torch.is_grad_enabled() and weight.requires_grad) and weight.dtype == x.dtype:
            out = F.linear(x, weight, bias)
            return list(out.split([layer.out_features for layer in layers], dim=-1))
    return [layer(x) for layer in layers]


def fused_targets(module: nn.Module, groups: Sequence[Sequence[nn.Module]], dtype: torch.dtype | None,
                  device: torch.device | str) -> dict[str, torch.Tensor]:
    """For ``checkpoint.load_into(targets=...)``: the weights (and biases) of each group of plain ``nn.Linear``
    layers of ``module`` (still on the meta device) allocated once, back to back, in ``dtype`` on ``device``; key ->
    its row block. Loading reads each key straight into its block, so the layers come out fused (as
    ``fuse_linears`` leaves them) without a second copy of their weights. Groups that cannot be fused (other layer
    classes, mixed widths or biases, no ``dtype``) are left out, and nothing is allocated on the meta device."""
    if dtype is None or torch.device(device).type == "meta":
        return {}
    names = {id(layer): name for name, layer in module.named_modules()}
    targets: dict[str, torch.Tensor] = {}
    for group in filter(_fusable, groups):
        for leaf in ("weight", "bias"):
            tensors = [getattr(layer, leaf) for layer in group]
            if tensors[0] is None:
                continue
            joint = torch.empty((sum(t.shape[0] for t in tensors), *tensors[0].shape[1:]), dtype=dtype, device=device)
            for layer, block in zip(group, _row_blocks(joint, tensors)):
                targets[f"{names[id(layer)]}.{leaf}"] = block
    return targets
