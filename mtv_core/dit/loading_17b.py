"""Loading MV-DiT-17B without ever holding a float32 copy of the weights.

Accepted (keys may carry a ``model.diffusion_model.`` / ``diffusion_model.`` prefix):

- the released folder ``MV-DiT/Wan-2-1/`` (Wan ``config.json`` + sharded safetensors with an index, or
  ``diffusion_pytorch_model.bin`` read with ``torch.load(weights_only=True, mmap=True)``);
- single safetensors files in bf16 / fp16 / fp32;
- fp8 files, plain (``e4m3fn`` / ``e5m2`` weights) or "scaled" (``<layer>.scale_weight`` float32 scalars and a
  ``scaled_fp8`` marker tensor, as ComfyUI and kijai write them): the Linear weights stay fp8 in memory and are
  upcast per layer for compute (``fp8_ops``); ``weight_dtype="fp8_e4m3fn"`` stores a bf16/fp32 file's block
  Linear weights that way too (per-tensor scaled), halving their memory;
- a Wan2.1 I2V-14B / Wan2.1-Fun-14B-InP base (no motion layers) plus a motion adapter holding only
  ``blocks.N.motion_attn.*`` and ``blocks.N.norm4.*`` (``extract_adapter`` writes one from a full file).

The model is built on the meta device and every tensor is read from the memory-mapped file straight into its
storage dtype on the requested device: peak host memory is about one tensor beyond the weights themselves.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import nn

from ..attention import check_available, check_backend
from ..checkpoint import CheckpointError, load_into, open_checkpoint
from ..files import atomic_output
from .config import check_against_weights
from .config_17b import (
    ADAPTER_KEY,
    SHAPE_FIELDS,
    BLOCK_KEY,
    RELEASED_DIM,
    RELEASED_MOTION_TOKEN_DIM,
    WAN_HEAD_DIM,
    MVDiT17BConfig,
    motion_block_ids,
)
from .fp8_ops import (
    FP8_NAMES, QUANTIZE_CHUNK, FP8Linear, dequantize, fp8_operations, is_fp8, quantize_fp8, quantize_fp8_chunks,
)
from ..precision import DTYPES, resolve_dtype
from .fused_linear import fused_targets
from .transformer_17b import MVDiT17B

logger = logging.getLogger(__name__)

KEY_PREFIXES_17B = ("model.diffusion_model.", "diffusion_model.", "module.")
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_LEAVES = ("scale_weight", "weight_scale")  # per-layer fp8 scales (kijai / ComfyUI's older and newer names)
IGNORED_LEAVES = ("scale_input", "input_scale", "comfy_quant")  # fp8-matmul hints; weights are upcast here
HINT = (
    "expected MTVCrafter's MV-DiT/Wan-2-1 transformer (folder or single file, bf16 / fp8 / scaled fp8), "
    "or a Wan2.1 I2V-14B base with a motion adapter"
)


class _KeyMap:
    """A read-only checkpoint view: keys mapped onto (checkpoint, key) pairs of one or more opened files."""

    def __init__(self, path: Path, entries: dict[str, tuple[object, str]], config: dict | None, metadata: dict):
        self.path, self.config, self.metadata = path, config, metadata
        self.entries = entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def shape(self, key: str) -> tuple[int, ...]:
        ckpt, name = self.entries[key]
        return tuple(ckpt.shape(name))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self.entries}

    def dtype(self, key: str) -> torch.dtype:
        ckpt, name = self.entries[key]
        return ckpt.dtype(name)

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
            out: torch.Tensor | None = None) -> torch.Tensor:
        ckpt, name = self.entries[key]
        return ckpt.get(name, dtype, device) if out is None else ckpt.get(name, dtype, device, out=out)

    def chunks(self, key: str, elements: int) -> Iterator[torch.Tensor]:
        """The tensor as stored, flattened, in consecutive chunks (``Checkpoint.chunks``)."""
        ckpt, name = self.entries[key]
        return ckpt.chunks(name, elements)


def _leaf(key: str) -> tuple[str, str]:
    layer, _, leaf = key.rpartition(".")
    return layer, leaf


def _common_prefix(keys: Iterable[str]) -> str:
    keys = list(keys)
    for prefix in KEY_PREFIXES_17B:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def strip_17b_prefix(keys: Iterable[str]) -> list[str]:
    """``keys`` without the wrapper prefix they all carry (and without fp8 marker keys)."""
    keys = [k for k in keys if _leaf(k)[1] != SCALED_FP8_MARKER]
    prefix = _common_prefix(keys)
    return [k[len(prefix):] for k in keys]


def _open_part(path: str | Path) -> _KeyMap:
    """One file or folder as a key map without its prefix, the ``scaled_fp8`` marker and fp8-matmul hints."""
    ckpt = open_checkpoint(path)
    keys = [k for k in ckpt.keys() if _leaf(k)[1] != SCALED_FP8_MARKER]
    prefix = _common_prefix(keys)
    if prefix:
        logger.info("%s: keys carry the prefix %r; reading them without it", ckpt.path, prefix)
    dropped = [k for k in keys if _leaf(k)[1] in IGNORED_LEAVES]
    if dropped:
        logger.info("%s: ignoring %d fp8 input-scale / quantisation hints (weights are upcast per layer)",
                    ckpt.path, len(dropped))
    entries = {k[len(prefix):]: (ckpt, k) for k in keys if _leaf(k)[1] not in IGNORED_LEAVES}
    return _KeyMap(ckpt.path, entries, ckpt.config, ckpt.metadata)


def _weight_keys(keys: Iterable[str]) -> list[str]:
    return [k for k in keys if _leaf(k)[1] not in SCALE_LEAVES]


def is_mvdit17b_keys(keys: Iterable[str]) -> bool:
    """True for the keys of a full MV-DiT-17B state dict (Wan keys + ``blocks.N.motion_attn``), any prefix."""
    keys = set(strip_17b_prefix(keys))
    return "head.modulation" in keys and bool(motion_block_ids(keys))


def _kind(keys: Iterable[str]) -> str:
    keys = set(_weight_keys(strip_17b_prefix(keys)))
    if keys and all(ADAPTER_KEY.match(k) for k in keys):
        return "adapter"
    if "head.modulation" in keys and "patch_embedding.weight" in keys:
        return "mvdit17b" if motion_block_ids(keys) else "wan"
    if "unconditional_motion_token" in keys or any(".attn0." in k for k in keys):
        return "mvdit7b"
    if "patch_embed.proj.weight" in keys:
        return "cogvideox"
    if any(k.startswith("condition_embedder.") for k in keys) or "scale_shift_table" in keys:
        return "wan_diffusers"
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "tokenizer_or_vae"
    return "unknown"


_NOT_17B = {
    "mvdit7b": "is MV-DiT-7B (CogVideoX keys with attn0 / unconditional_motion_token): load it with the MV-DiT-7B loader",
    "cogvideox": "is a CogVideoX transformer, not MV-DiT-17B (Wan key names)",
    "wan_diffusers": (
        "is a Wan transformer in diffusers naming (condition_embedder, attn1, ...); MV-DiT-17B reads Wan's original "
        "naming (blocks.N.self_attn.q, ...) as in MTVCrafter's MV-DiT/Wan-2-1 and Wan2.1's own files"
    ),
    "tokenizer_or_vae": "has encoder/decoder keys: it looks like the 4DMoT motion tokenizer or a VAE, not MV-DiT-17B",
    "unknown": "has none of the MV-DiT-17B keys (head.modulation, blocks.N.motion_attn)",
}


def _refuse(path: Path, kind: str, role: str) -> CheckpointError:
    if kind == "wan" and role == "full":
        return CheckpointError(
            f"{path}: a Wan2.1 transformer without motion attention. Give the MV-DiT-17B motion adapter as well "
            "(adapter=..., written by `python -m mtv_core extract-adapter`) or use MTVCrafter's MV-DiT/Wan-2-1 weights"
        )
    if kind == "adapter" and role == "full":
        return CheckpointError(
            f"{path}: holds only motion layers (an MV-DiT-17B motion adapter); load a Wan2.1 I2V-14B base and pass "
            "this file as its adapter"
        )
    if kind == "mvdit17b" and role == "base":
        return CheckpointError(f"{path}: already holds motion attention (a full MV-DiT-17B); load it without an adapter")
    if kind == "mvdit17b" and role == "adapter":
        return CheckpointError(
            f"{path}: a full MV-DiT-17B, not a motion adapter; load it on its own, or write its adapter with "
            "`python -m mtv_core extract-adapter`"
        )
    if kind == "wan" and role == "adapter":
        return CheckpointError(f"{path}: a Wan2.1 transformer, not a motion adapter (blocks.N.motion_attn / norm4 only)")
    if kind == "adapter" and role == "base":
        return CheckpointError(f"{path}: a motion adapter, not a Wan2.1 base transformer")
    what = {"full": "an MV-DiT-17B checkpoint", "base": "a Wan2.1 base transformer", "adapter": "a motion adapter"}
    return CheckpointError(f"{path}: not {what[role]}; it {_NOT_17B.get(kind, _NOT_17B['unknown'])}")


def _check_adapter_fits(base: _KeyMap, adapter: _KeyMap, config: MVDiT17BConfig) -> None:
    if config.in_dim != config.out_dim + 4 + config.out_dim:
        raise CheckpointError(
            f"{base.path}: a Wan transformer with {config.in_dim} input channels; MV-DiT-17B takes "
            f"{2 * config.out_dim + 4} (noisy + mask + reference latents): use Wan2.1 I2V-14B or Wan2.1-Fun-14B-InP, "
            "not a text-to-video model"
        )
    for key in _weight_keys(adapter.keys()):
        shape = adapter.shape(key)
        if shape[0] != config.dim:
            raise CheckpointError(
                f"{adapter.path}: motion adapter of width {shape[0]} ({key}) does not fit the base "
                f"{base.path} of width {config.dim}"
            )
    ids = motion_block_ids(adapter.keys())
    if ids and ids[-1] >= config.num_layers:
        raise CheckpointError(
            f"{adapter.path}: motion layers up to block {ids[-1]}, but the base {base.path} has {config.num_layers} blocks"
        )


def open_mvdit17b_weights(path: str | Path, adapter: str | Path | None = None) -> _KeyMap:
    """The tensors of an MV-DiT-17B (one file/folder, or a base + motion adapter) as one key map.

    Raises CheckpointError naming the file when it is not what its role needs (a 7B file, a tokenizer, a
    text-to-video base, an adapter of another width, ...).
    """
    main = _open_part(path)
    if adapter is None:
        kind = _kind(main.keys())
        if kind != "mvdit17b":
            raise _refuse(main.path, kind, "full")
        return main
    extra = _open_part(adapter)
    for part, role, wanted in ((main, "base", "wan"), (extra, "adapter", "adapter")):
        kind = _kind(part.keys())
        if kind != wanted:
            raise _refuse(part.path, kind, role)
    _check_adapter_fits(main, extra, config_17b_from(main))
    entries = dict(main.entries)
    entries.update(extra.entries)
    logger.info("MV-DiT-17B from base %s + motion adapter %s", main.path, extra.path)
    return _KeyMap(main.path, entries, main.config, main.metadata)


def config_17b(config_json: dict | None, shapes: dict[str, tuple]) -> MVDiT17BConfig:
    """Config from a Wan ``config.json`` dict when there is one, else inferred from the tensor shapes; the
    motion-attention interval and the CLIP width (which Wan's config.json does not record) always come from the
    shapes. ValueError when they do not fit."""
    inferred = MVDiT17BConfig.infer_from_shapes(shapes)
    if config_json is None:
        return inferred
    config = MVDiT17BConfig.from_wan_config(config_json, motion_attn_interval=inferred.motion_attn_interval,
                                            clip_dim=inferred.clip_dim)
    check_against_weights(config, inferred, SHAPE_FIELDS)
    return config


def config_17b_from(ckpt) -> MVDiT17BConfig:
    """``config_17b`` of a checkpoint view (``config`` and ``shapes()``); CheckpointError naming its file."""
    try:
        return config_17b(ckpt.config, ckpt.shapes())
    except (TypeError, ValueError) as exc:
        where = f"{ckpt.path}/config.json" if ckpt.config is not None else str(ckpt.path)
        raise CheckpointError(f"{where}: {exc}") from exc


def build_17b(config: MVDiT17BConfig, operations=nn) -> MVDiT17B:
    """An MV-DiT-17B on the meta device (no memory), ready for ``load_into``."""
    with torch.device("meta"):
        return MVDiT17B(config, operations)


def _fp8_storage(weights: _KeyMap, weight_dtype, dtype: torch.dtype) -> torch.dtype | None:
    """The fp8 dtype Linear weights are stored in, or None for plain storage in ``dtype``."""
    if weight_dtype is None or weight_dtype == "auto":
        for key in _weight_keys(weights.keys()):
            if is_fp8(weights.dtype(key)):
                return weights.dtype(key)
        return None
    if isinstance(weight_dtype, str):
        if weight_dtype in FP8_NAMES:
            return FP8_NAMES[weight_dtype]
        if weight_dtype in ("default", "none") or DTYPES.get(weight_dtype) == dtype:
            return None
    elif is_fp8(weight_dtype):
        return weight_dtype
    elif weight_dtype == dtype:
        return None
    raise ValueError(
        f"weight_dtype {weight_dtype!r}: choose None/'auto' (as stored), 'fp8_e4m3fn', 'fp8_e5m2' or the compute "
        f"dtype ({dtype}) to dequantise an fp8 file"
    )


class _LoadPlan:
    """What ``load_into`` reads: the weights in the model's key space, each converted to its storage dtype.

    fp8 Linear layers (``FP8Linear``) get their stored fp8 weight and scale (1 for plain fp8), or with
    ``quantize`` (fp8 storage asked for) a per-tensor quantisation of a higher-precision block weight; weights
    an fp8 file kept in higher precision stay so (in the compute dtype). Every other tensor is dequantised (if
    fp8) and cast to the compute dtype.
    """

    def __init__(self, weights: _KeyMap, model: nn.Module, dtype: torch.dtype, fp8_dtype: torch.dtype | None,
                 quantize: bool = False) -> None:
        self.path, self.config, self.metadata = weights.path, weights.config, weights.metadata
        self._weights, self._dtype, self._fp8_dtype, self._quantize = weights, dtype, fp8_dtype, quantize
        self._fp8_layers = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
        self._file_scales: dict[str, str] = {}
        self._pending: dict[str, torch.Tensor] = {}
        self._scratch: torch.Tensor | None = None  # the quantisation's float32 buffer, reused for every layer
        keys = []
        for key in weights.keys():
            layer, leaf = _leaf(key)
            if leaf in SCALE_LEAVES and f"{layer}.weight" in weights:
                self._file_scales[layer] = key
            else:
                keys.append(key)
        present = set(keys)
        self._keys = keys + [f"{layer}.scale_weight" for layer in sorted(self._fp8_layers) if f"{layer}.weight" in present]

    def keys(self) -> list[str]:
        return list(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        layer, leaf = _leaf(key)
        if leaf == "scale_weight" and layer in self._fp8_layers:
            return ()
        return self._weights.shape(key)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self._keys}

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype behind ``key`` (fp8 scales are float32), for ``load_into``'s kind check."""
        layer, leaf = _leaf(key)
        if leaf == "scale_weight" and layer in self._fp8_layers:
            return torch.float32
        return self._weights.dtype(key)

    def _file_scale(self, layer: str) -> torch.Tensor | None:
        key = self._file_scales.get(layer)
        return None if key is None else self._weights.get(key).to(torch.float32).reshape(())

    def _stored_linear_weight(self, layer: str) -> torch.Tensor:
        """The weight of fp8 Linear ``layer`` as stored; its scale is kept for the ``scale_weight`` read.

        Higher-precision weights are read straight into the compute dtype, or, when fp8 storage is asked for,
        quantised from two chunked reads through the checkpoint's staging buffer and one float32 scratch (no
        full-size temporary per layer: ``_KeyMap.chunks``)."""
        key, scale = f"{layer}.weight", self._file_scale(layer)
        if is_fp8(self._weights.dtype(key)):
            self._pending[layer] = scale if scale is not None else torch.ones((), dtype=torch.float32)
            return self._weights.get(key)
        if self._quantize and layer.startswith("blocks."):  # fp8 storage asked for: block weights only
            if scale is not None:  # a higher-precision weight with a file scale (unusual): dequantised whole first
                real = dequantize(self._weights.get(key), scale, torch.float32)
                quantized, self._pending[layer] = quantize_fp8(real, self._fp8_dtype)
                return quantized
            # read twice in chunks (largest magnitude, then the codes): the weight is never whole in memory
            shape = self._weights.shape(key)
            need = min(math.prod(shape), QUANTIZE_CHUNK)
            if self._scratch is None or self._scratch.numel() < need:  # grows to the largest weight's chunk
                self._scratch = None
                self._scratch = torch.empty(need, dtype=torch.float32)
            quantized, self._pending[layer] = quantize_fp8_chunks(
                lambda: self._weights.chunks(key, QUANTIZE_CHUNK), shape, self._fp8_dtype, scratch=self._scratch)
            return quantized
        self._pending[layer] = torch.ones((), dtype=torch.float32)
        if scale is not None:
            return dequantize(self._weights.get(key), scale, self._dtype)
        return self._weights.get(key, dtype=self._dtype)

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
            out: torch.Tensor | None = None) -> torch.Tensor:
        """``key`` as the model holds it; into ``out`` when given (fused q/k/v of plain layers only)."""
        layer, leaf = _leaf(key)
        if out is not None and layer in self._fp8_layers:
            raise ValueError(f"{key}: fp8-stored layers are not read into fused weights")
        if layer in self._fp8_layers and leaf == "scale_weight":
            if layer not in self._pending:
                self._stored_linear_weight(layer)
            return self._pending.pop(layer).to(device)
        if layer in self._fp8_layers and leaf == "weight":
            return self._stored_linear_weight(layer).to(device)
        stored = self._weights.dtype(key)
        scale = self._file_scale(layer) if leaf == "weight" and stored.is_floating_point else None
        if is_fp8(stored) or scale is not None:
            tensor = dequantize(self._weights.get(key), scale, self._dtype).to(device)
            return tensor if out is None else out.copy_(tensor)
        # converted while reading (through the checkpoint's staging buffer: no full-size copy in the file's dtype)
        return self._weights.get(key, dtype=self._dtype if stored.is_floating_point else None, device=device,
                                 out=out)


def load_mvdit17b(
    path: str | Path,
    dtype: torch.dtype | str = torch.bfloat16,
    device: torch.device | str = "cpu",
    attention: str = "auto",
    adapter: str | Path | None = None,
    weight_dtype: torch.dtype | str | None = None,
    operations=None,
) -> MVDiT17B:
    """Load MV-DiT-17B, computing in ``dtype`` on ``device``.

    ``path``: the released folder, a single safetensors / .bin file, or (with ``adapter``) a Wan2.1 I2V-14B base.
    ``adapter``: a motion-adapter file (``blocks.N.motion_attn.*``, ``blocks.N.norm4.*``).
    ``weight_dtype``: storage of the Linear weights: None / "auto" keeps fp8 files in fp8 and stores other
    files in ``dtype``; "fp8_e4m3fn" / "fp8_e5m2" stores the block Linear weights in fp8 (per-tensor scale);
    ``dtype`` itself dequantises an fp8 file.
    ``operations``: the layer namespace, e.g. ComfyUI's ``comfy.ops`` (default ``torch.nn``); with fp8 storage the
    Linear layers are ``fp8_ops.FP8Linear`` and the others come from ``operations``.
    """
    dtype = resolve_dtype(dtype, device)
    check_backend(attention)  # before reading gigabytes of weights
    weights = open_mvdit17b_weights(path, adapter)
    config = config_17b_from(weights)
    fp8_dtype = _fp8_storage(weights, weight_dtype, dtype)
    model = build_17b(config, fp8_operations(operations) if fp8_dtype is not None else (operations or nn))
    plan = _LoadPlan(weights, model, dtype, fp8_dtype, quantize=weight_dtype not in (None, "auto"))
    # one GEMM for the self-attention q/k/v, read into fused weights (same keys and outputs; none for fp8
    # storage, whose layers bring their own forward)
    load_into(model, plan, dtype=None, device=device, what="MV-DiT-17B", hint=HINT,
              targets=fused_targets(model, model.qkv_groups(), dtype, device))
    check_available(attention)
    model.compute_dtype = dtype
    model.set_attention_backend(attention)
    model.eval().requires_grad_(False)
    logger.info(
        "loaded MV-DiT-17B from %s%s: %d layers, width %d, %s weights, compute %s on %s, attention %s",
        path, f" + {adapter}" if adapter else "", config.num_layers, config.dim,
        fp8_dtype or dtype, dtype, device, attention,
    )
    return model


@dataclass(frozen=True)
class MotionLayersInfo:
    """What a motion-layer file holds: the source, the model width, the motion blocks and the token width.

    ``motion_token_dim``: the width of the motion tokens the layers were trained with, when known (the
    adapter's ``motion_token_dim`` metadata, or 3072 for the released width 5120); None: any width <= dim.
    ``num_layers``: blocks of the full model the layers were read from (None for an adapter file).
    """

    path: Path
    dim: int
    block_ids: tuple[int, ...]
    motion_token_dim: int | None
    num_layers: int | None
    qk_norm: bool
    cross_attn_norm: bool

    @property
    def num_heads(self) -> int:
        return self.dim // WAN_HEAD_DIM


def read_motion_layers(
    path: str | Path, dtype: torch.dtype | None = torch.bfloat16, device: torch.device | str = "cpu"
) -> tuple[dict[str, torch.Tensor], MotionLayersInfo]:
    """The motion layers (``blocks.N.motion_attn.*``, ``blocks.N.norm4.*``) of an adapter or a full MV-DiT-17B.

    ``path``: a motion adapter or a full MV-DiT-17B (bf16 / fp16 / fp32 / plain or scaled fp8, any wrapper
    prefix); only the motion tensors are read from the mapped file. ``dtype``: the returned dtype (None: as
    stored; fp8 layers are always dequantised, to bf16 when None). Raises CheckpointError naming the file for
    anything else (a Wan base without motion layers, a 7B, a tokenizer, motion layers of mixed widths).
    """
    weights = _open_part(path)
    kind = _kind(weights.keys())
    if kind not in ("adapter", "mvdit17b"):
        raise _refuse(weights.path, kind, "adapter")
    tensors = {}
    for key in _weight_keys(weights.keys()):
        if not ADAPTER_KEY.match(key):
            continue
        tensor = weights.get(key)
        layer, own_leaf = _leaf(key)
        # a layer's fp8 scale belongs to its weight, never to its bias
        scale_key = None if own_leaf != "weight" else next(
            (f"{layer}.{leaf}" for leaf in SCALE_LEAVES if f"{layer}.{leaf}" in weights), None)
        if is_fp8(tensor.dtype) or scale_key is not None:
            scale = weights.get(scale_key).to(torch.float32).reshape(()) if scale_key else None
            tensor = dequantize(tensor, scale, dtype or torch.bfloat16)
        elif dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous().to(device)
    ids = motion_block_ids(tensors)
    widths = {t.shape[0] for k, t in tensors.items() if k.endswith(".weight") or k.endswith(".bias")}
    if len(widths) != 1 or f"blocks.{ids[0]}.motion_attn.q.weight" not in tensors:
        raise CheckpointError(f"{weights.path}: motion layers of inconsistent widths {sorted(widths)} or without "
                              "motion_attn.q (not an MV-DiT-17B motion adapter)")
    dim = widths.pop()
    if dim % WAN_HEAD_DIM:
        raise CheckpointError(f"{weights.path}: motion layers of width {dim}, not a multiple of Wan's head width "
                              f"{WAN_HEAD_DIM}")
    token_dim = weights.metadata.get("motion_token_dim") if weights.metadata else None
    if token_dim is not None:
        token_dim = int(token_dim)
    elif dim == RELEASED_DIM:
        token_dim = RELEASED_MOTION_TOKEN_DIM
    num_layers = None
    if kind == "mvdit17b":
        num_layers = 1 + max(int(m.group(1)) for k in weights.keys() if (m := BLOCK_KEY.match(k)))
    info = MotionLayersInfo(
        path=weights.path, dim=dim, block_ids=tuple(ids), motion_token_dim=token_dim, num_layers=num_layers,
        qk_norm=f"blocks.{ids[0]}.motion_attn.norm_q.weight" in tensors,
        cross_attn_norm=f"blocks.{ids[0]}.norm4.weight" in tensors,
    )
    return tensors, info


def extract_adapter(src: str | Path, dst: str | Path, dtype: torch.dtype | None = torch.bfloat16) -> Path:
    """Write the motion layers of a full MV-DiT-17B (``blocks.N.motion_attn.*``, ``blocks.N.norm4.*``) to ``dst``.

    ``dtype``: the adapter's dtype (None: as stored; fp8 layers are always dequantised, to bf16 when None).
    The file is written all or nothing (temporary name, then renamed). Returns ``dst``.
    """
    from safetensors.torch import save_file

    dst = Path(dst)
    if not dst.name.endswith(".safetensors"):
        raise ValueError(f"{dst}: the adapter is written as .safetensors")
    source = _open_part(src)
    if dst.exists() and os.path.samefile(dst, source.path):
        raise ValueError(f"{dst}: the adapter would overwrite its source")
    kind = _kind(source.keys())
    if kind != "mvdit17b":
        raise _refuse(source.path, kind, "full")
    tensors, info = read_motion_layers(src, dtype)
    metadata = {"format": "pt", "mtv_model": "mvdit17b_motion_adapter", "dim": str(info.dim),
                "motion_blocks": ",".join(map(str, info.block_ids))}
    if info.motion_token_dim is not None:
        metadata["motion_token_dim"] = str(info.motion_token_dim)
    with atomic_output(dst) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    logger.info("wrote the motion adapter of %s (%d tensors, blocks %s) to %s",
                info.path, len(tensors), metadata["motion_blocks"], dst)
    return dst
