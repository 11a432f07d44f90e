"""LoRA files for the Wan-based DiT, merged into the weights at a strength.

Formats (the ones Wan LoRAs such as FusionX ship in), keyed by a module path with a ``diffusion_model.`` /
``model.diffusion_model.`` prefix, or kohya-style ``lora_unet_`` + the path with dots flattened to underscores
(``lora_unet_blocks_0_self_attn_q``), or no prefix:

- ``<path>.lora_down.weight`` / ``<path>.lora_up.weight`` (also PEFT's ``lora_A`` / ``lora_B``), optional
  ``<path>.alpha``: W += strength * (alpha / rank) * up @ down (convolution factors are flattened);
- ``<path>.diff``: a full delta of the weight (or of the parameter ``<path>`` itself, e.g. a block's
  ``modulation``); ``<path>.diff_b``: a delta of the bias.

Upstream (MTVCrafter's ``WanLoraWrapper``) merges W += up @ down x 1.0 ignoring any alpha, and skips diffs of
parameters not named ``*.weight`` / ``*.bias`` (``modulation``). ``upstream=True`` reproduces that merge;
the default is ComfyUI's convention (alpha / rank scaling, every diff applied). For a LoRA whose alpha equals
its rank the two agree on the lora pairs.

fp8-stored layers (``fp8_ops.FP8Linear``) are dequantised, merged in float32 and re-quantised with a fresh
per-tensor scale, so memory stays one byte per weight; the merged weight carries fp8 rounding like the base.
Merging is all or nothing: every key is resolved and every shape checked before any weight changes. Keys that
match no layer are listed in one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..checkpoint import open_checkpoint
from .fp8_ops import FP8Linear

logger = logging.getLogger(__name__)

LORA_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "lora_unet_")
_SUFFIXES = {
    ".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_A.weight": "down", ".lora_B.weight": "up",
    ".alpha": "alpha", ".diff_b": "diff_b", ".diff": "diff",
}


@dataclass
class LoraReport:
    """What a merge did: targets changed (module or parameter paths) and LoRA keys that matched nothing."""

    applied: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def _split_key(key: str) -> tuple[str, str] | None:
    """'<prefix><path><suffix>' -> (prefixed path, kind), or None for an unknown suffix."""
    for suffix, kind in _SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    return None


def _resolver(model: nn.Module):
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    flat = {}
    for name in list(modules) + list(params):
        flat.setdefault(name.replace(".", "_"), name)

    def resolve(path: str) -> str | None:
        if path.startswith("lora_unet_"):
            return flat.get(path[len("lora_unet_"):])
        for prefix in LORA_PREFIXES[:2]:
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        return path if path in modules or path in params else None

    return resolve, modules, params


def _lora_delta(group: dict[str, torch.Tensor], weight: torch.Tensor, use_alpha: bool) -> torch.Tensor:
    """up @ down (x alpha / rank) in float32 on the weight's device, shaped like the weight."""
    shape = weight.shape
    down = group["down"].to(weight.device, torch.float32).flatten(1)
    up = group["up"].to(weight.device, torch.float32).flatten(1)
    rank = down.shape[0]
    if up.shape[1] != rank:
        raise ValueError(f"lora_up {tuple(group['up'].shape)} and lora_down {tuple(group['down'].shape)} do not chain")
    delta = up @ down
    if use_alpha and "alpha" in group:
        delta = delta * (float(group["alpha"].float().reshape(-1)[0]) / rank)
    if delta.numel() != shape.numel():
        raise ValueError(f"LoRA product {tuple(delta.shape)} does not fit a weight of shape {tuple(shape)}")
    return delta.reshape(shape)


def _add(module: nn.Module | None, param: nn.Parameter, delta: torch.Tensor) -> None:
    """param += delta, computed in float32; fp8 Linear weights are re-quantised."""
    if isinstance(module, FP8Linear) and param is module.weight:
        module.requantize(module.dequantized_weight(torch.float32) + delta.to(param.device))
        return
    merged = param.detach().to(torch.float32) + delta.to(param.device)
    param.data.copy_(merged.to(param.dtype))


@torch.no_grad()
def apply_lora(
    model: nn.Module,
    lora: str | Path | Mapping[str, torch.Tensor],
    strength: float = 1.0,
    upstream: bool = False,
) -> LoraReport:
    """Merge ``lora`` (a file or a state dict) into ``model``'s weights at ``strength``, in place.

    ``upstream``: MTVCrafter's merge (alpha ignored, only ``*.weight`` / ``*.bias`` targets). Raises ValueError
    naming the LoRA when a matched tensor does not fit its layer (nothing is changed then).
    """
    name = str(lora) if isinstance(lora, (str, Path)) else "LoRA state dict"
    if isinstance(lora, (str, Path)):
        ckpt = open_checkpoint(lora)
        tensors = {k: ckpt.get(k) for k in ckpt.keys()}
    else:
        tensors = dict(lora)
    resolve, modules, params = _resolver(model)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    keys_of: dict[str, list[str]] = {}
    report = LoraReport()
    for key, tensor in tensors.items():
        split = _split_key(key)
        target = resolve(split[0]) if split else None
        if target is None:
            report.unmatched.append(key)
            continue
        groups.setdefault(target, {})[split[1]] = tensor
        keys_of.setdefault(target, []).append(key)

    updates: list[tuple[str, nn.Module | None, nn.Parameter, torch.Tensor]] = []
    for target, group in groups.items():
        module = modules.get(target)
        weight = getattr(module, "weight", None) if module is not None else None
        try:
            if set(group) == {"alpha"}:
                report.unmatched.extend(keys_of[target])
            if "down" in group or "up" in group:
                if not ("down" in group and "up" in group) or not isinstance(weight, nn.Parameter):
                    report.unmatched.extend(k for k in keys_of[target] if not k.endswith(("diff", "diff_b")))
                else:
                    delta = _lora_delta(group, weight, use_alpha=not upstream) * strength
                    updates.append((f"{target}.weight", module, weight, delta))
            if "diff" in group:
                param = weight if module is not None else params[target]
                if not isinstance(param, nn.Parameter) or (upstream and module is None):
                    report.unmatched.extend(k for k in keys_of[target] if k.endswith(".diff"))
                else:
                    updates.append((target if module is None else f"{target}.weight", module, param,
                                    _fitting(group["diff"], param.shape) * strength))
            if "diff_b" in group:
                bias = getattr(module, "bias", None) if module is not None else None
                if not isinstance(bias, nn.Parameter):
                    report.unmatched.extend(k for k in keys_of[target] if k.endswith(".diff_b"))
                else:
                    updates.append((f"{target}.bias", module, bias, _fitting(group["diff_b"], bias.shape) * strength))
        except ValueError as exc:
            raise ValueError(f"{name}: {target}: {exc}") from None
    for label, module, param, delta in updates:
        _add(module, param, delta)
        report.applied.append(label)
    warn_unmatched(name, report.unmatched)
    logger.info("%s: merged into %d weights at strength %g%s", name, len(report.applied), strength,
                " (upstream merge: alpha ignored)" if upstream else "")
    return report


def _fitting(delta: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if tuple(delta.shape) != tuple(shape):
        raise ValueError(f"delta of shape {tuple(delta.shape)} does not fit a parameter of shape {tuple(shape)}")
    return delta.to(torch.float32)


def lora_key_map(model: nn.Module) -> dict[str, str]:
    """LoRA target names -> ``model``'s state-dict keys, for ComfyUI's ``comfy.lora.load_lora``.

    Every parameter is reachable as ``diffusion_model.<path>``, ``model.diffusion_model.<path>``, ``<path>`` and
    kohya's ``lora_unet_<path with dots as underscores>``, where ``<path>`` is the module path of a ``.weight``
    (the key ComfyUI patches; its ``.diff_b`` patches the ``.bias`` beside it) or a parameter's own name (a block's
    ``modulation``).
    """
    out: dict[str, str] = {}
    for name, _ in model.named_parameters():
        if name.endswith(".bias"):
            continue
        path = name[: -len(".weight")] if name.endswith(".weight") else name
        for prefix in ("model.diffusion_model.", "diffusion_model.", ""):
            out[prefix + path] = name
        out["lora_unet_" + path.replace(".", "_")] = name
    return out


def split_lora_keys(keys, key_map: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(keys that belong to a target of ``key_map``, keys that match nothing): a key belongs to target ``x`` when
    it is ``x`` followed by a suffix (``.lora_up.weight``, ``.alpha``, ``.diff`` ...)."""
    matched, unmatched = [], []
    for key in keys:
        cut = [i for i, c in enumerate(key) if c == "."]
        (matched if any(key[:i] in key_map for i in cut) else unmatched).append(key)
    return matched, unmatched


def warn_unmatched(name: str, unmatched: list[str]) -> None:
    """The one warning listing a LoRA's keys that match no layer."""
    if unmatched:
        shown = ", ".join(unmatched[:20]) + (" ..." if len(unmatched) > 20 else "")
        logger.warning("%s: %d keys match no layer of the model and were ignored: %s", name, len(unmatched), shown)
