"""Reading model checkpoints safely and lazily.

Formats: single safetensors files (read tensor by tensor with positional reads, see
``safetensors_reader``), diffusers model folders (``config.json`` + one or more ``*.safetensors`` shards,
optionally with an index), and pickled torch files (``.pt``/``.pth``/``.bin``/``.ckpt``) read with
``torch.load(weights_only=True, mmap=True)``, e.g. upstream's DeepSpeed ``mp_rank_00_model_states.pt``
whose state dict sits under ``module``; the mapped pages of each tensor copied out of such a file are
released at once, so loading holds about one copy of the weights in the target dtype, whatever the layout.
Nothing here executes code from a file: classes a DeepSpeed file names (its config enums, say)
are replaced by inert stand-ins.

Hostile files: everything a file claims is checked before it is used (``mtv_core.limits``): JSON
configs and indexes are size- and depth-limited objects, the shards an index names must lie inside the
model folder, a pickled tensor may not view more elements than its storage holds (a stride-0 view would
otherwise expand to gigabytes on conversion), the number of tensors and shards is bounded, and weights
must have the kind (floating / integer) of the parameter they fill. Legacy (pre-zip) torch files are
refused: their storages are allocated at the size the pickle claims before anything can be checked.
Whatever goes wrong is a :class:`CheckpointError` naming the file. Loaders built on these functions
(the 4DMoT, MV-DiT and VAE loaders here, the 17B and Wan loaders) inherit all of it.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import pickle
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Mapping

import torch

from .errors import InputError, reading
from .files import contained_path
from .limits import MAX_SHARDS, MAX_TENSORS, check_limit, read_json_file
from .safetensors_reader import SafetensorsError, SafetensorsFile, StagingBuffer

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("module", "state_dict", "model")
_GLOBAL_NAME = re.compile(r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$")


class CheckpointError(InputError):
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

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
            out: torch.Tensor | None = None) -> torch.Tensor:
        """One tensor, converted to ``dtype`` (floating tensors only) on ``device``; into ``out`` when given (a
        contiguous tensor of that shape, dtype and device)."""
        source = self._sources[key]
        with reading(self.path, "checkpoint", CheckpointError):
            if not isinstance(source, torch.Tensor):
                return source.read(key, dtype, device, self._staging, out=out)
            tensor = source
            if out is not None:
                tensor = out.copy_(tensor)
            else:
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype=dtype)
                tensor = tensor.to(device=device)
        if tensor is not source and key in self._mapped:
            _release_pages(source)
        return tensor


    def chunks(self, key: str, elements: int) -> Iterator[torch.Tensor]:
        """One tensor as stored, flattened, on the CPU, in consecutive chunks of at most ``elements``, each valid
        until the next is taken (see ``SafetensorsFile.chunks``); file errors name the file, the caller's do not."""
        source = self._sources[key]
        if isinstance(source, torch.Tensor):
            flat = source.reshape(-1)
            for first in range(0, flat.numel(), elements):
                yield flat[first : first + elements]
            if key in self._mapped:
                _release_pages(source)
            return
        pieces = source.chunks(key, self._staging, elements)
        while True:
            with reading(self.path, "checkpoint", CheckpointError):
                chunk = next(pieces, None)
            if chunk is None:
                return
            yield chunk


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
    keys = handle.keys()
    check_limit(len(sources) + len(keys), MAX_TENSORS, "the number of tensors", path)
    for key in keys:
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


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)`` of a zip-format file, memory-mapped; foreign classes become inert."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a zip-format torch file (legacy or corrupt); legacy torch files are "
                              "not read because their tensors are allocated before they can be checked. Re-save "
                              "it with torch.save, or convert it to safetensors")

    def load():
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)

    try:
        state = load()
    except pickle.UnpicklingError:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        if not names:
            raise
        check_limit(len(names), 64, "the number of foreign classes it names", path)
        if not all(isinstance(n, str) and _GLOBAL_NAME.match(n) for n in names):
            raise CheckpointError(f"{path}: names invalid classes") from None
        logger.info("%s names classes %s; reading them as inert placeholders", path.name, ", ".join(names))
        stand_ins = [_inert_class(*name.rsplit(".", 1)) for name in names]
        with torch.serialization.safe_globals(stand_ins):
            state = load()
    return state


def _check_tensor(tensor: torch.Tensor, key: str, path: Path) -> None:
    """A pickled tensor may not claim more elements than its storage holds (no expanded / overlapping views)."""
    needed = tensor.numel() * tensor.element_size()
    storage = tensor.untyped_storage().nbytes()
    if needed > storage:
        raise CheckpointError(f"{path}: tensor '{key}' of shape {tuple(tensor.shape)} claims {needed} bytes but its "
                              f"storage holds {storage} (an expanded view); refusing to materialise it")


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            check_limit(len(obj), MAX_TENSORS, "the number of tensors", path)
            for key, tensor in obj.items():
                if not isinstance(key, str):
                    raise CheckpointError(f"{path}: state-dict keys must be strings, got {type(key).__name__}")
                _check_tensor(tensor, key, path)
            return obj
        if isinstance(obj, dict):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    raise CheckpointError(f"{path}: no state dict of tensors found (looked at the top level and under {_WRAPPER_KEYS})")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint file or diffusers model folder for lazy reading.

    Raises FileNotFoundError for a missing path and CheckpointError naming the file for anything else.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with reading(path, "checkpoint", CheckpointError):
        sources: dict[str, object] = {}
        mapped: set[str] = set()  # tensors of memory-mapped torch files (every one read: legacy files are refused)
        config = None
        metadata: dict[str, str] = {}
        if path.is_dir():
            config_file = path / "config.json"
            if config_file.is_file():
                config = _read_json(config_file, "config.json")
            for shard in _folder_shards(path):
                _open_safetensors(shard, sources)
            if not sources:
                bins = sorted(p for p in path.iterdir() if p.name.endswith(TORCH_SUFFIXES))
                if not bins:
                    raise CheckpointError(f"{path}: folder holds no .safetensors or .bin weights")
                check_limit(len(bins), MAX_SHARDS, "the number of weight files", path)
                for file in bins:
                    with reading(file, "torch checkpoint", CheckpointError):
                        state = _unwrap_state_dict(_torch_load(file), file)
                    check_limit(len(sources) + len(state), MAX_TENSORS, "the number of tensors", path)
                    sources.update(state)
                    mapped.update(state)
        elif path.name.lower().endswith(SAFETENSORS_SUFFIXES):
            metadata = _open_safetensors(path, sources)
        elif path.name.lower().endswith(TORCH_SUFFIXES):
            state = _unwrap_state_dict(_torch_load(path), path)
            sources.update(state)
            mapped.update(state)
        else:
            raise CheckpointError(f"{path}: unknown checkpoint format (expected {SAFETENSORS_SUFFIXES + TORCH_SUFFIXES} "
                                  "or a folder)")
    if not sources:
        raise CheckpointError(f"{path}: checkpoint holds no tensors")
    return Checkpoint(path, sources, config, metadata, mapped)


def _read_json(file: Path, what: str) -> dict:
    try:
        return read_json_file(file, what)
    except InputError as exc:
        raise CheckpointError(str(exc)) from None


def _folder_shards(folder: Path) -> list[Path]:
    """The safetensors shards of a model folder: those its ``*.safetensors.index.json`` names (each inside the
    folder, none missing), else every safetensors file in it."""
    index = next(iter(sorted(folder.glob("*.safetensors.index.json"))), None)
    if index is None:
        shards = sorted(p for p in folder.iterdir() if p.name.endswith(SAFETENSORS_SUFFIXES))
        check_limit(len(shards), MAX_SHARDS, "the number of safetensors files", folder)
        return shards
    weight_map = _read_json(index, index.name).get("weight_map", {})
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: 'weight_map' must map tensor names to shard file names")
    check_limit(len(weight_map), MAX_TENSORS, "the number of tensors", index)
    names = sorted(set(weight_map.values()))
    check_limit(len(names), MAX_SHARDS, "the number of shards", index)
    shards = []
    for name in names:
        try:
            shard = contained_path(folder, name, f"shard '{name}' listed in {index.name}")
        except InputError as exc:
            raise CheckpointError(f"{index}: {exc}") from None
        if not shard.name.endswith(SAFETENSORS_SUFFIXES):
            raise CheckpointError(f"{index}: shard '{name}' is not a safetensors file")
        shards.append(shard)
    missing = [p.name for p in shards if not p.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: shards listed in {index.name} are missing: {', '.join(missing[:8])}")
    return shards


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

    def get(self, key: str, dtype: torch.dtype | None = None, device: torch.device | str = "cpu",
            out: torch.Tensor | None = None) -> torch.Tensor:
        return self._ckpt.get(self._prefix + key, dtype, device, out=out)


def strip_key_prefix(ckpt: Checkpoint, prefixes: tuple[str, ...]):
    """``ckpt`` read without the first of ``prefixes`` that every key carries (as ComfyUI files may have)."""
    keys = ckpt.keys()
    for prefix in prefixes:
        if keys and all(k.startswith(prefix) for k in keys):
            logger.info("%s: keys carry the prefix %r; reading them without it", ckpt.path, prefix)
            return _PrefixedView(ckpt, prefix)
    return ckpt


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def key_report(expected: Mapping[str, tuple], found: Mapping[str, tuple], limit: int = 8,
               expected_dtypes: Mapping[str, torch.dtype] | None = None,
               found_dtypes: Mapping[str, torch.dtype] | None = None) -> str | None:
    """Readable difference between expected and found key->shape maps (and, given both dtype maps, keys whose
    kind -- floating, integer, bool, complex -- differs), or None if they match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [k for k in expected if k in found and tuple(expected[k]) != tuple(found[k])]
    mistyped = []
    if expected_dtypes is not None and found_dtypes is not None:
        mistyped = [k for k in expected if k in found_dtypes and k not in misshaped
                    and _kind(expected_dtypes[k]) != _kind(found_dtypes[k])]
    if not (missing or unexpected or misshaped or mistyped):
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
    lines += block("keys of the wrong kind", mistyped,
                   lambda k: f"{k}: file {str(found_dtypes[k]).replace('torch.', '')}, model "
                             f"{_kind(expected_dtypes[k])}")
    return "\n".join(lines)


def load_into(
    module: torch.nn.Module,
    ckpt: Checkpoint,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    what: str = "model",
    hint: str = "",
    targets: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Strictly load ``ckpt`` into ``module`` (which may live on the meta device), tensor by tensor.

    ``targets``: key -> tensor to read that key into (``ckpt.get(..., out=...)``) instead of a new allocation,
    e.g. views into one fused q/k/v weight (``fused_linear.fused_targets``).
    """
    state = module.state_dict(keep_vars=True)
    expected = {k: tuple(v.shape) for k, v in state.items()}
    with reading(ckpt.path, "checkpoint", CheckpointError):
        found = ckpt.shapes()
        found_dtypes = {k: ckpt.dtype(k) for k in expected if k in found}
    report = key_report(expected, found, expected_dtypes={k: v.dtype for k, v in state.items()},
                        found_dtypes=found_dtypes)
    if report is not None:
        msg = f"{ckpt.path}: not a {what} checkpoint of the expected layout\n{report}"
        raise CheckpointError(msg + (f"\n{hint}" if hint else ""))
    for key in expected:
        owner_name, _, leaf = key.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        target = targets.get(key) if targets else None
        tensor = ckpt.get(key, dtype, device) if target is None else ckpt.get(key, dtype, device, out=target)
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            owner._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            owner._buffers[leaf] = tensor
