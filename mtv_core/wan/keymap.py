"""A checkpoint read under another model's key names, with per-tensor conversions.

The Wan side models ship in several namings (Wan's original ``.pth`` files, ComfyUI's repackaged
safetensors, open-clip, diffusers/transformers). Each loader in this package describes, for every key of
the target (transformers/diffusers) model, where the tensor comes from: a source key, optionally a row
slice (fused q/k/v), a reshape, or a scalar dequantisation scale (ComfyUI's scaled fp8 files). The view
exposes the interface :func:`mtv_core.checkpoint.load_into` reads (``path``, ``shapes``, ``get``), so
tensors are still read one at a time from the memory-mapped file straight into the target dtype.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pathlib import Path

import torch

from ..checkpoint import CheckpointError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where one target tensor comes from.

    key: source key; shape: the target shape; rows: ``(start, stop)`` slice along dim 0 of the source;
    reshape: reshape the (sliced) source to ``shape``; scale_key: multiply by this scalar source tensor
    (fp8 weights stored with a per-tensor scale).
    """

    key: str
    shape: tuple[int, ...]
    rows: tuple[int, int] | None = None
    reshape: bool = False
    scale_key: str | None = None


class MappedCheckpoint:
    """Read-only view of ``ckpt`` under new key names (what ``load_into`` reads).

    ``sources`` maps target keys to :class:`Source`; keys of the file that the converter did not
    recognise are passed in ``unexpected`` and show up under their own names, so a strict load names them.
    """

    def __init__(self, ckpt, sources: dict[str, Source], unexpected: dict[str, tuple[int, ...]] | None = None):
        self.path = ckpt.path
        self.config = getattr(ckpt, "config", None)
        self.metadata = getattr(ckpt, "metadata", {})
        self._ckpt = ckpt
        self._sources = sources
        self._unexpected = dict(unexpected or {})

    def prefixed(self, prefix: str) -> "MappedCheckpoint":
        """The same view with ``prefix`` before every target key."""
        return MappedCheckpoint(self._ckpt, {prefix + k: v for k, v in self._sources.items()}, self._unexpected)

    def keys(self) -> list[str]:
        return list(self._sources) + list(self._unexpected)

    def __contains__(self, key: str) -> bool:
        return key in self._sources or key in self._unexpected

    def shape(self, key: str) -> tuple[int, ...]:
        if key in self._unexpected:
            return self._unexpected[key]
        return self._sources[key].shape

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self.keys()}

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype behind ``key`` (a scaled fp8 weight reads as float32: it is dequantised on read)."""
        if key in self._unexpected:
            return self._ckpt.dtype(key)
        src = self._sources[key]
        return torch.float32 if src.scale_key is not None else self._ckpt.dtype(src.key)

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """One target tensor in ``dtype`` (floating tensors only) on ``device``."""
        src = self._sources[key]
        plain = src.scale_key is None and src.rows is None and not src.reshape
        if plain:
            tensor = self._ckpt.get(src.key, dtype, device)  # converted and moved while read (the checkpoint's path)
        elif src.scale_key is not None:
            tensor = self._ckpt.get(src.key, torch.float32).mul_(self._ckpt.get(src.scale_key, torch.float32))
        else:
            tensor = self._ckpt.get(src.key, dtype)
        if src.rows is not None:
            tensor = tensor[src.rows[0]:src.rows[1]].clone()  # own storage: do not pin the whole fused tensor
        if src.reshape:
            tensor = tensor.reshape(src.shape)
        if tuple(tensor.shape) != tuple(src.shape):
            raise CheckpointError(f"{self.path}: {src.key} has shape {tuple(tensor.shape)}, expected {src.shape}")
        if plain:
            return tensor
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.to(device)


def fp8_scales(ckpt) -> dict[str, str]:
    """``weight key -> scale key`` for ComfyUI's scaled-fp8 files, else empty.

    Two layouts exist: the older one marks the file with a ``scaled_fp8`` tensor and stores
    ``<layer>.scale_weight``; the newer one stores ``<layer>.weight_scale`` with a ``<layer>.comfy_quant``
    JSON tag (format ``float8_e4m3fn``/``float8_e5m2``). The real weight is ``weight.float() * scale``.
    Block-scaled formats (nvfp4) are refused.
    """
    keys = set(ckpt.keys())
    scales: dict[str, str] = {}
    for key in keys:
        for suffix in (".scale_weight", ".weight_scale"):
            if key.endswith(suffix):
                layer = key[: -len(suffix)]
                if f"{layer}.weight" in keys:
                    scales[f"{layer}.weight"] = key
    for key in keys:
        if key.endswith(".comfy_quant"):
            raw = ckpt.get(key)
            try:
                conf = json.loads(bytes(raw.to(torch.uint8).tolist()).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise CheckpointError(f"{ckpt.path}: unreadable quantisation tag {key} ({exc})") from exc
            fmt = conf.get("format")
            if fmt not in ("float8_e4m3fn", "float8_e5m2"):
                raise CheckpointError(
                    f"{ckpt.path}: layer {key[:-len('.comfy_quant')]} uses the quantisation format {fmt!r}, "
                    "which this pack does not read; use an fp16/bf16 or scaled-fp8 file"
                )
    return scales


def is_quantisation_aux(key: str) -> bool:
    """Keys of ComfyUI's quantised files that carry no weights of their own (tags, input scales)."""
    return key == "scaled_fp8" or key.endswith((".scaled_fp8", ".scale_input", ".input_scale", ".comfy_quant",
                                                 ".scale_weight", ".weight_scale"))


def save_state(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a state dict as the release files are: a ``.pth`` / ``.pt`` path with ``torch.save``, anything else as
    safetensors (with ``metadata``). For the tiny test models of the Wan side."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in state.items()}
    if path.suffix in (".pth", ".pt"):
        torch.save(state, str(path))
    else:
        save_file(state, str(path), metadata=metadata)
    return path
