"""Reading model checkpoints safely and lazily.

Formats: single safetensors files (read tensor by tensor with positional reads, see
``safetensors_reader``), diffusers model folders (``config.json`` + one or more ``*.safetensors`` shards,
optionally with an index), and pickled torch files (``.pt``/``.pth``/``.bin``/``.ckpt``) read with
``torch.load(weights_only=True, mmap=True)``, e.g. upstream's DeepSpeed ``mp_rank_00_model_states.pt``
whose state dict sits under ``module``; the mapped pages of each tensor copied out of such a file are
released at once, so loading holds about one copy of the weights in the target dtype, whatever the layout.
Nothing here executes code from a file: classes a DeepSpeed file names (its config enums, say)
are replaced by inert stand-ins.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import pickle
import sys
from pathlib import Path
from typing import Mapping

import torch

from .safetensors_reader import SafetensorsError, SafetensorsFile, StagingBuffer

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("module", "state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: wrong model, missing or mis-shaped keys, bad file."""


class Checkpoint:
    """Read-only, lazy view of the tensors in a checkpoint file or folder."""

    def __init__(
        self,
        path: Path,
        sources: dict[str, object],
        config: dict | None = None,
        metadata: dict | None = None,
        mapped: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.path = path
        self.config = config
        self.metadata = metadata or {}  # header metadata of a single safetensors file, else empty
        self._sources = sources  # key -> SafetensorsFile or tensor
        self._staging = StagingBuffer()  # one read buffer shared by all safetensors files of this checkpoint
        self._mapped = mapped  # keys of tensors in memory-mapped torch files (pages released after a copy)

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
        return source.shape(key)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {key: self.shape(key) for key in self._sources}

    def dtype(self, key: str) -> torch.dtype:
        """The stored dtype of one tensor, without reading it."""
        source = self._sources[key]
        if isinstance(source, torch.Tensor):
            return source.dtype
        return source.dtype(key)  # a SafetensorsFile: checked against the dtypes torch holds when it was opened

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """One tensor, converted to ``dtype`` (floating tensors only) on ``device``."""
        source = self._sources[key]
        if not isinstance(source, torch.Tensor):
            return source.read(key, dtype, device, self._staging)
        tensor = source
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype=dtype)
        tensor = tensor.to(device=device)
        if tensor is not source and key in self._mapped:
            _release_pages(source)
        return tensor


def _release_pages(tensor: torch.Tensor) -> None:
    """Drop the resident pages of a tensor that lives in a private read-only file mapping (``torch.load(mmap=True)``).

    Only pages entirely inside the tensor's bytes are dropped, so tensors sharing a page are untouched; the
    mapping stays valid and reads the file again if the tensor is used later. Linux only; elsewhere a no-op.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), advice)


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _LIBC


def _open_safetensors(path: Path, sources: dict[str, object]) -> dict[str, str]:
    """Register the tensors of one safetensors file in ``sources``; returns its header metadata."""
    try:
        handle = SafetensorsFile(path)
    except SafetensorsError as exc:
        raise CheckpointError(str(exc)) from None
    for key in handle.keys():
        sources[key] = handle
    return dict(handle.metadata)


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


def _torch_load(path: Path) -> tuple[object, bool]:
    """The unpickled object of a torch file and whether its tensors are memory-mapped."""

    def load():
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True), True
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True), False

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


def _add_torch_file(path: Path, sources: dict[str, object], mapped: set[str]) -> None:
    obj, is_mapped = _torch_load(path)
    tensors = _unwrap_state_dict(obj, path)
    sources.update(tensors)
    if is_mapped:
        mapped.update(tensors)


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
    mapped: set[str] = set()
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
                _add_torch_file(file, sources, mapped)
    elif path.name.lower().endswith(SAFETENSORS_SUFFIXES):
        metadata = _open_safetensors(path, sources)
    elif path.name.lower().endswith(TORCH_SUFFIXES):
        _add_torch_file(path, sources, mapped)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES} or a folder)")
    if not sources:
        raise CheckpointError(f"{path}: checkpoint holds no tensors")
    return Checkpoint(path, sources, config, metadata, mapped)


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
