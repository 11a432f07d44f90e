"""A restricted unpickler for motion and body-model files: data only, never code.

A plain ``pickle.load`` runs whatever callable the file names, so user files are read here with
an allow-list instead. Admitted globals:

* numpy arrays, dtypes and scalars (``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``,
  ``numpy.dtype``, ``scalar``, ``_frombuffer``; ``numpy.core`` spellings too);
* ``collections.OrderedDict`` and ``_codecs.encode`` (Python 2 / protocol 2 byte strings);
* with ``allow_torch``: torch tensors as written by ``pickle.dump`` of a tensor (``torch._utils.
  _rebuild_tensor_v2`` + ``torch.storage._load_from_bytes``). They are rebuilt as **numpy arrays
  on the CPU** by parsing the storage bytes here (a CUDA-saved NLF pickle loads on a CPU machine),
  without ever calling torch's own unpickling;
* with ``allow_body_model``: ``scipy.sparse`` csc/csr matrices and chumpy ``Ch`` objects become
  inert stand-ins that keep only their arrays (see ``densify``), so official SMPL pickles load
  without scipy objects or chumpy being constructed.

Anything else raises ``UnsafePickleError`` naming the file and the forbidden global, before any
object of that global is created.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import functools
import io
import os
import pickle  # noqa: S403 - used only through the allow-listing Unpickler below
import struct
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside the allow-list."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, whatever module it lives in
    scalar = np.float32(0).__reduce__()[0]
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy.core.numeric import _frombuffer
    table: dict[tuple[str, str], Any] = {}
    for core in ("numpy._core", "numpy.core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    # numpy >= 1.25 pickles dtypes by class, e.g. numpy.dtypes.Float32DType
    for name in dir(getattr(np, "dtypes", object())):
        if name.endswith("DType"):
            table[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return table


@functools.lru_cache(maxsize=1)
def _base_globals() -> dict[tuple[str, str], Any]:
    """The allow-list every unpickler starts from (built once; callers copy it)."""
    table = _numpy_globals()
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("_codecs", "encode")] = codecs.encode
    return table


# --- torch tensors, rebuilt as numpy on the CPU --------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip


class _StorageType:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)


class _StorageBlobUnpickler(pickle.Unpickler):
    """Reads the main record of torch's legacy single-storage blob (no code, no torch)."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        self.records: list[tuple[str, np.dtype, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(_TORCH_STORAGE_DTYPES[name])
        raise UnsafePickleError(f"{self.source}: tensor storage of type '{module}.{name}' is not supported")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self.source}: unexpected tensor storage record {pid!r:.80}")
        key, numel = str(pid[2]), int(pid[4])
        self.records.append((key, pid[1].dtype, numel))
        return key


def _load_storage_blob(blob: bytes, source: str) -> np.ndarray:
    """Parse ``torch.save(storage, _use_new_zipfile_serialization=False)`` bytes into a flat array."""
    f = io.BytesIO(blob)
    for _ in range(3):  # magic number, protocol version, sys info: plain ints / dicts
        _SafeUnpickler(f, source).load()
    reader = _StorageBlobUnpickler(f, source)
    key = reader.load()
    keys = _SafeUnpickler(f, source).load()
    if not reader.records or key not in keys:
        raise UnsafePickleError(f"{source}: malformed tensor storage")
    _, dtype, numel = reader.records[0]
    (count,) = struct.unpack("<q", f.read(8))
    data = f.read(count * dtype.itemsize)
    if count != numel or len(data) != count * dtype.itemsize:
        raise UnsafePickleError(f"{source}: truncated tensor storage ({len(data)} bytes for {numel} elements)")
    return np.frombuffer(data, dtype=dtype).copy()


def _rebuild_tensor_as_numpy(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *unused: Any) -> np.ndarray:
    size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
    if len(size) != len(stride) or any(s < 0 for s in size + stride):
        raise UnsafePickleError(f"tensor has an invalid size {size} / stride {stride}")
    if int(np.prod(size)) == 0:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if offset < 0 or last >= storage.size:
        raise UnsafePickleError("tensor view exceeds its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(st * item for st in stride), writeable=False)
    return np.array(view)


# --- body-model stand-ins ------------------------------------------------------------------------


class SparseStub:
    """What a pickled ``scipy.sparse`` csc/csr matrix becomes: its arrays only (see ``densify``)."""

    kind = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}

    def to_dense(self) -> np.ndarray:
        data = np.asarray(self.state.get("data"))
        indices = np.asarray(self.state.get("indices"), dtype=np.int64)
        indptr = np.asarray(self.state.get("indptr"), dtype=np.int64)
        shape = tuple(int(s) for s in self.state.get("_shape", self.state.get("shape", ())))
        if len(shape) != 2 or data.ndim != 1:
            raise ValueError("sparse matrix in the model file has no usable data/indices/indptr/shape")
        dense = np.zeros(shape, dtype=np.float64)
        major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        if self.kind == "csc":  # indptr runs over columns
            np.add.at(dense, (indices, major), data)
        else:
            np.add.at(dense, (major, indices), data)
        return dense


class ChStub:
    """What a pickled chumpy ``Ch`` becomes: its value array ``x`` (chumpy is never imported)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}

    def to_array(self) -> np.ndarray:
        if "x" not in self.state:
            raise ValueError("chumpy object in the model file holds no plain array 'x'")
        return np.asarray(self.state["x"])


class _CscStub(SparseStub):
    kind = "csc"


class _CsrStub(SparseStub):
    kind = "csr"


def densify(value: Any) -> Any:
    """Replace the stand-ins of a loaded body model with plain numpy arrays."""
    if isinstance(value, SparseStub):
        return value.to_dense()
    if isinstance(value, ChStub):
        return value.to_array()
    return value


# --- the unpickler -------------------------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source: str, allow_torch: bool = False, allow_body_model: bool = False) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.allowed = dict(_base_globals())
        if allow_torch:
            self.allowed[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor_as_numpy
            self.allowed[("torch.storage", "_load_from_bytes")] = lambda blob: _load_storage_blob(blob, source)
        if allow_body_model:
            for module in ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr"):
                self.allowed[(module, "csc_matrix")] = _CscStub
                self.allowed[(module, "csr_matrix")] = _CsrStub
            self.allowed[("chumpy.ch", "Ch")] = ChStub
            self.allowed[("copyreg", "_reconstructor")] = self._safe_reconstructor
            self.allowed[("builtins", "object")] = object  # the ``base`` argument of _reconstructor

    def _safe_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # copyreg._reconstructor(cls, object, None) is how protocol 0/1 pickles create plain objects;
        # only our inert stand-in classes may be built this way.
        if isinstance(cls, type) and issubclass(cls, (ChStub, SparseStub)):
            return cls.__new__(cls)
        raise UnsafePickleError(f"{self.source}: refusing to construct {cls!r:.80}")

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 spellings (copy_reg, __builtin__) mapped as the standard Unpickler does; the result
        # still has to pass the allow-list.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self.allowed[(module, name)]
        except KeyError:
            hint = "only numpy arrays, plain containers and tensors are allowed in motion files"
            if module.split(".")[0] in ("chumpy", "scipy"):
                hint = "convert the model to plain numpy arrays first, e.g. with smplx's tools/clean_ch.py"
            raise UnsafePickleError(f"{self.source}: refusing to load the pickled global '{module}.{name}' ({hint})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in motion files")


def safe_load_pickle(path: str | os.PathLike, allow_torch: bool = False, allow_body_model: bool = False) -> Any:
    """Unpickle ``path`` with the allow-list above; ``UnsafePickleError`` names any forbidden global."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _SafeUnpickler(f, str(path), allow_torch=allow_torch, allow_body_model=allow_body_model).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                struct.error, OverflowError, MemoryError) as exc:
            raise ValueError(f"{path}: not a readable motion pickle ({exc})") from exc
