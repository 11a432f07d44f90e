"""Reading model checkpoints safely and lazily.

Formats: single safetensors files (memory-mapped, read tensor by tensor), diffusers model folders
(``config.json`` + one or more ``*.safetensors`` shards, optionally with an index), and pickled
torch files (``.pt``/``.pth``/``.bin``/``.ckpt``) read with ``torch.load(weights_only=True)``,
e.g. upstream's DeepSpeed ``mp_rank_00_model_states.pt`` whose state dict sits under ``module``.
Nothing here executes code from a file: classes a DeepSpeed file names (its config enums, say)
are replaced by inert stand-ins.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Mapping

import torch

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("module", "state_dict", "model")
_SAFETENSORS_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: wrong model, missing or mis-shaped keys, bad file."""


class Checkpoint:
    """Read-only, lazy view of the tensors in a checkpoint file or folder."""

    def __init__(
        self, path: Path, sources: dict[str, object], config: dict | None = None, metadata: dict | None = None
    ) -> None:
        self.path = path
        self.config = config
        self.metadata = metadata or {}  # header metadata of a single safetensors file, else empty
        self._sources = sources  # key -> safetensors handle or tensor

    def keys(self) -> list[str]:
        return list(self._sources)

    def __contains__(self, key: str) -> bool:
        return key in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def shape(self, key: str) -> tuple[int, ...]:
        source = self._sources[key]
        if isinstance(source, torch.Tensor):
            return tuple(source.shape)
        return tuple(source.get_slice(key).get_shape())

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self._sources}

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype of one tensor, without reading it."""
        source = self._sources[key]
        if isinstance(source, torch.Tensor):
            return source.dtype
        name = source.get_slice(key).get_dtype()
        if name not in _SAFETENSORS_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {key!r} has dtype {name}, which torch cannot hold")
        return _SAFETENSORS_DTYPES[name]

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """One tensor, converted to ``dtype`` (floating tensors only) on ``device``."""
        source = self._sources[key]
        tensor = source if isinstance(source, torch.Tensor) else source.get_tensor(key)
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype=dtype)
        return tensor.to(device=device)


def _open_safetensors(path: Path, sources: dict[str, object]) -> dict[str, str]:
    """Register the tensors of one safetensors file in ``sources``; returns its header metadata."""
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    for key in handle.keys():
        sources[key] = handle
    return dict(handle.metadata() or {})


def _inert_class(module: str, qualname: str) -> type:
    """A do-nothing class standing in for ``module.qualname`` while unpickling."""

    def init(self, *args, **kwargs):
        self._args = args

    def setstate(self, state):
        self._state = state

    cls = type(qualname.rsplit(".", 1)[-1], (), {"__init__": init, "__setstate__": setstate})
    cls.__module__ = module
    cls.__qualname__ = qualname
    return cls


def _torch_load(path: Path) -> object:
    def load():
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)

    try:
        return load()
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not names:
            raise
        logger.info("%s names classes %s; reading them as inert placeholders", path.name, ", ".join(names))
        stand_ins = [_inert_class(*name.rsplit(".", 1)) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            return load()


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise CheckpointError(f"{path}: no state dict of tensors found (looked at the top level and under {_WRAPPER_KEYS})")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint file or diffusers model folder for lazy reading."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    sources: dict[str, object] = {}
    config = None
    metadata: dict[str, str] = {}
    if path.is_dir():
        config_file = path / "config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
        shards = sorted(p for p in path.iterdir() if p.name.endswith(SAFETENSORS_SUFFIXES))
        index = next(iter(sorted(path.glob("*.safetensors.index.json"))), None)
        if index is not None:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            shards = sorted({path / name for name in weight_map.values()})
            missing = [p.name for p in shards if not p.is_file()]
            if missing:
                raise CheckpointError(f"{path}: shards listed in {index.name} are missing: {', '.join(missing)}")
        if shards:
            for shard in shards:
                _open_safetensors(shard, sources)
        else:
            bins = sorted(p for p in path.iterdir() if p.name.endswith(TORCH_SUFFIXES))
            if not bins:
                raise CheckpointError(f"{path}: folder holds no .safetensors or .bin weights")
            for file in bins:
                sources.update(_unwrap_state_dict(_torch_load(file), file))
    elif path.name.lower().endswith(SAFETENSORS_SUFFIXES):
        metadata = _open_safetensors(path, sources)
    elif path.name.lower().endswith(TORCH_SUFFIXES):
        sources.update(_unwrap_state_dict(_torch_load(path), path))
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES} or a folder)")
    if not sources:
        raise CheckpointError(f"{path}: checkpoint holds no tensors")
    return Checkpoint(path, sources, config, metadata)


class _PrefixedView:
    """A checkpoint read with a key prefix removed (the interface ``load_into`` reads)."""

    def __init__(self, ckpt: Checkpoint, prefix: str) -> None:
        self.path, self.config, self.metadata = ckpt.path, ckpt.config, ckpt.metadata
        self._ckpt, self._prefix = ckpt, prefix

    def keys(self) -> list[str]:
        return [k[len(self._prefix):] for k in self._ckpt.keys()]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._ckpt.shape(self._prefix + key)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self.keys()}

    def dtype(self, key: str) -> torch.dtype:
        return self._ckpt.dtype(self._prefix + key)

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        return self._ckpt.get(self._prefix + key, dtype, device)


def strip_key_prefix(ckpt: Checkpoint, prefixes: tuple[str, ...]):
    """``ckpt`` read without the first of ``prefixes`` that every key carries (as ComfyUI files may have)."""
    keys = ckpt.keys()
    for prefix in prefixes:
        if keys and all(k.startswith(prefix) for k in keys):
            logger.info("%s: keys carry the prefix %r; reading them without it", ckpt.path, prefix)
            return _PrefixedView(ckpt, prefix)
    return ckpt


def key_report(expected: Mapping[str, tuple], found: Mapping[str, tuple], limit: int = 8) -> str | None:
    """Readable difference between expected and found key->shape maps, or None if they match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(expected[k]) != tuple(found[k])]
    if not (missing or unexpected or misshaped):
        return None

    def block(title: str, keys: list[str], fmt) -> list[str]:
        if not keys:
            return []
        more = f" (showing {limit})" if len(keys) > limit else ""
        return [f"{len(keys)} {title}{more}:"] + [f"  {fmt(k)}" for k in keys[:limit]]

    lines = block("missing keys", missing, lambda k: k)
    lines += block("unexpected keys", unexpected, lambda k: k)
    lines += block(
        "mis-shaped keys", misshaped, lambda k: f"{k}: file {tuple(found[k])}, model {tuple(expected[k])}"
    )
    return "\n".join(lines)


def load_into(
    module: torch.nn.Module,
    ckpt: Checkpoint,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    what: str = "model",
    hint: str = "",
) -> None:
    """Strictly load ``ckpt`` into ``module`` (which may live on the meta device), tensor by tensor."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict(keep_vars=True).items()}
    report = key_report(expected, ckpt.shapes())
    if report is not None:
        msg = f"{ckpt.path}: not a {what} checkpoint of the expected layout\n{report}"
        raise CheckpointError(msg + (f"\n{hint}" if hint else ""))
    for key in expected:
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        tensor = ckpt.get(key, dtype, device)
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            owner._buffers[leaf] = tensor
