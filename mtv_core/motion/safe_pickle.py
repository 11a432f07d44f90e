"""A restricted unpickler for motion and body-model files: data only, never code, bounded memory.

A plain ``pickle.load`` runs whatever callable the file names, so user files are read here with
an allow-list instead. Nothing the file names is ever the real object: every admitted global is one of
the pack's own builders below, which check their arguments before anything is allocated.

* numpy arrays, dtypes and scalars (``numpy._core.multiarray._reconstruct`` / ``scalar``,
  ``numpy._core.numeric._frombuffer``, ``numpy.dtype``, ``numpy.ndarray`` as the class argument;
  ``numpy.core`` spellings too). Only plain dtypes are built (bool, integers, floats, complex, byte and
  unicode strings): object, structured, sub-array and datetime dtypes are refused, and a dtype's pickled
  state can only choose its byte order (numpy would also take its internal flags from the file, which
  turns bytes into object pointers). Array data must have exactly the bytes its shape needs;
* ``collections.OrderedDict`` and ``_codecs.encode`` for latin-1 only (Python 2 / protocol 2 byte strings;
  other codecs can take quadratic time);
* with ``allow_torch``: torch tensors as written by ``pickle.dump`` of a tensor (``torch._utils.
  _rebuild_tensor_v2`` + ``torch.storage._load_from_bytes``). They are rebuilt as **numpy arrays
  on the CPU** by parsing the storage bytes here (a CUDA-saved NLF pickle loads on a CPU machine),
  without ever calling torch's own unpickling. A view must lie inside its own 1-D storage;
* with ``allow_body_model``: ``scipy.sparse`` csc/csr matrices and chumpy ``Ch`` objects become
  inert stand-ins that keep only their arrays (see ``densify``), so official SMPL pickles load
  without scipy objects or chumpy being constructed.

The opcodes themselves are checked too (the pure-Python unpickler is used so that each one can be):
``BUILD`` may only fill in the pack's own stand-ins (never a global, so a refused file cannot leave
attributes set on allow-listed functions), dictionary keys and set members must be plain scalars
(no tuples, no integers beyond 64 bits: both can be chosen to collide and make a dictionary quadratic),
lengths a file declares must be present in it, and every array is charged to the file's decoding
budget (``mtv_core.limits``) before it exists.

Anything else raises ``UnsafePickleError`` naming the file and the forbidden global or opcode, before any
object of that global is created.
"""

from __future__ import annotations

import collections
import io
import os
import pickle  # noqa: S403 - used only through the allow-listing Unpickler below
import reprlib
import struct
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, reading
from ..limits import MAX_MOTION_FILE_BYTES, Budget, check_file_size, shape_nbytes


class UnsafePickleError(InputError, pickle.UnpicklingError):
    """The file names a global outside the allow-list, or uses an opcode in a way the loader refuses."""


_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 2, 40, 40

# dtype kinds a pickled array may have: bool, signed / unsigned integer, float, complex, bytes, unicode.
_ARRAY_KINDS = "biufcSU"
_MAX_DTYPE_SPEC = 32
_MAX_PLAIN_INT = 1 << 64  # dictionary keys / set members beyond this could be chosen to collide


class _DTypeRecord:
    """What ``numpy.dtype(spec, align, copy)`` in a pickle becomes: a checked plain dtype and its byte order.

    The array and scalar builders turn it into a real dtype; a bare record in the result is inert.
    """

    __slots__ = ("dtype", "source")

    def __init__(self, dtype: np.dtype, source: str) -> None:
        self.dtype, self.source = dtype, source

    def __setstate__(self, state: Any) -> None:
        # numpy's state: (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata]).
        # Only the byte order is taken; a plain dtype has no subarray, names or fields.
        if not isinstance(state, tuple) or len(state) < 5 or any(v is not None for v in state[2:5]):
            raise UnsafePickleError(f"{self.source}: a pickled dtype carries fields or a sub-array; only plain "
                                    "dtypes load")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"{self.source}: a pickled dtype has an invalid byte order {_short.repr(order)}")
        if order in ("<", ">") and self.dtype.byteorder != "|":
            self.dtype = self.dtype.newbyteorder(order)

    def __repr__(self) -> str:
        return f"<pickled dtype {self.dtype}>"


def _plain_dtype(spec: Any, source: str) -> np.dtype:
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str) or not 0 < len(spec) <= _MAX_DTYPE_SPEC:
        raise UnsafePickleError(f"{source}: a pickled dtype has an unsupported description {_short.repr(spec)}")
    try:
        dtype = np.dtype(spec)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise UnsafePickleError(f"{source}: invalid pickled dtype {_short.repr(spec)} ({exc})") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.itemsize == 0:
        raise UnsafePickleError(f"{source}: arrays of dtype {dtype} are not allowed in motion files (only bool, "
                                "integer, float, complex and string arrays)")
    return dtype


def _resolve_dtype(record: Any, source: str) -> np.dtype:
    if not isinstance(record, _DTypeRecord):
        raise UnsafePickleError(f"{source}: expected a pickled numpy dtype, got {_short.repr(record)}")
    return record.dtype


def _as_bytes(data: Any, source: str) -> bytes:
    """Array data as pickled: bytes / bytearray / memoryview, or a str holding latin-1 bytes (Python 2)."""
    if isinstance(data, str):
        try:
            return data.encode("latin-1")
        except UnicodeEncodeError:
            raise UnsafePickleError(f"{source}: array data is a string that is not latin-1 bytes") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise UnsafePickleError(f"{source}: array data must be bytes, got a {type(data).__name__}")


class _CheckedArray(np.ndarray):
    """The arrays a pickle rebuilds; ``__setstate__`` checks the state before numpy's own runs.

    numpy trusts a pickled state: with an object (or flag-forged) dtype it turns the raw bytes into object
    pointers. Here the dtype must be a plain one built by ``_DTypeRecord`` and the data exactly as long as
    the shape needs, charged to the file's budget first.
    """

    _source = "motion file"
    _budget: Budget | None = None

    def __setstate__(self, state: Any) -> None:
        source = self._source
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise UnsafePickleError(f"{source}: malformed pickled array state")
        shape, record, fortran, raw = state
        dtype = _resolve_dtype(record, source)
        if not isinstance(fortran, (bool, int)) or fortran not in (0, 1):
            raise UnsafePickleError(f"{source}: malformed pickled array state (order flag {_short.repr(fortran)})")
        nbytes = shape_nbytes(shape, dtype.itemsize, source, "a pickled array")
        if self._budget is not None:
            self._budget.charge(max(nbytes, shape_nbytes(shape, 1, source)), "a pickled array")
        data = _as_bytes(raw, source)
        if len(data) != nbytes:
            raise UnsafePickleError(f"{source}: pickled array of shape {tuple(int(s) for s in shape)} and dtype "
                                    f"{dtype} needs {nbytes} bytes, the file holds {len(data)}")
        np.ndarray.__setstate__(self, (1, tuple(int(s) for s in shape), dtype, bool(fortran), data))


# --- torch tensors, rebuilt as numpy on the CPU --------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}  # fmt: skip
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy serialisation magic number
_TORCH_PROTOCOL = 1001


class _StorageType:
    __slots__ = ("dtype",)

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)


class _TensorStorage:
    """A tensor storage read from its legacy blob: one flat, read-only array (what ``_rebuild_tensor_v2`` views)."""

    __slots__ = ("flat",)

    def __init__(self, flat: np.ndarray) -> None:
        flat.setflags(write=False)
        self.flat = flat


def _rebuild_tensor_as_numpy(storage: Any, offset: Any, size: Any, stride: Any, *unused: Any,
                             source: str = "motion file", budget: Budget | None = None) -> np.ndarray:
    """The (copied) array a tensor view describes; the view must lie inside its own flat storage."""
    if not isinstance(storage, _TensorStorage):
        raise UnsafePickleError(f"{source}: a tensor must be rebuilt from a tensor storage, got "
                                f"{_short.repr(storage)}")
    flat = storage.flat
    if not (isinstance(size, tuple) and isinstance(stride, tuple)) or len(size) != len(stride):
        raise UnsafePickleError(f"{source}: tensor has an invalid size {_short.repr(size)} / stride "
                                f"{_short.repr(stride)}")
    for value in (offset, *size, *stride):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnsafePickleError(f"{source}: tensor has an invalid size {_short.repr(size)} / stride "
                                    f"{_short.repr(stride)} / offset {_short.repr(offset)}")
    nbytes = shape_nbytes(size, flat.itemsize, source, "a tensor")
    if budget is not None:
        budget.charge(nbytes, "a tensor")
    if nbytes == 0:
        return np.zeros(size, dtype=flat.dtype)
    # strides of length-1 dimensions are never used; the others bound the last element read
    stride = tuple(st if s > 1 else 0 for s, st in zip(size, stride))
    last = offset + sum((s - 1) * st for s, st in zip(size, stride))
    if last >= flat.size:
        raise UnsafePickleError(f"{source}: tensor view (offset {offset}, size {size}, stride {stride}) exceeds its "
                                f"storage of {flat.size} elements")
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, tuple(st * flat.itemsize for st in stride),
                                           writeable=False)
    return np.array(view)


# --- body-model stand-ins ------------------------------------------------------------------------


class _Sealed(type):
    """Metaclass of the stand-ins: a file cannot set attributes on the classes themselves."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise UnsafePickleError(f"refusing to set '{name}' on {cls.__name__}")


class SparseStub(metaclass=_Sealed):
    """What a pickled ``scipy.sparse`` csc/csr matrix becomes: its arrays only (see ``densify``)."""

    kind = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.state = dict(state) if isinstance(state, dict) else {}

    def to_dense(self, budget: Budget | None = None) -> np.ndarray:
        data = np.asarray(self.state.get("data"))
        indices = np.asarray(self.state.get("indices"))
        indptr = np.asarray(self.state.get("indptr"))
        shape = self.state.get("_shape", self.state.get("shape", ()))
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else ()
        if len(shape) != 2 or data.ndim != 1 or data.dtype.kind not in "iuf" or indices.dtype.kind not in "iu" \
                or indptr.dtype.kind not in "iu":
            raise ValueError("sparse matrix in the model file has no usable data/indices/indptr/shape")
        nbytes = shape_nbytes(shape, 8, "sparse matrix", "a sparse matrix")
        if budget is not None:
            budget.charge(nbytes, "a dense copy of a sparse matrix")
        rows, cols = int(shape[0]), int(shape[1])
        majors = cols if self.kind == "csc" else rows
        minors = rows if self.kind == "csc" else cols
        indptr = indptr.astype(np.int64)
        if len(indptr) != majors + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(data) \
                or len(indices) != len(data) or (len(indices) and (indices.min() < 0 or indices.max() >= minors)):
            raise ValueError("sparse matrix in the model file has inconsistent data/indices/indptr/shape")
        dense = np.zeros(shape, dtype=np.float64)
        major = np.repeat(np.arange(majors), np.diff(indptr))
        if self.kind == "csc":  # indptr runs over columns
            np.add.at(dense, (indices.astype(np.int64), major), data)
        else:
            np.add.at(dense, (major, indices.astype(np.int64)), data)
        return dense


class ChStub(metaclass=_Sealed):
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


def densify(value: Any, budget: Budget | None = None) -> Any:
    """Replace the stand-ins of a loaded body model with plain numpy arrays."""
    if isinstance(value, SparseStub):
        return value.to_dense(budget)
    if isinstance(value, ChStub):
        return value.to_array()
    return value


# --- the unpickler -------------------------------------------------------------------------------

_BUILDABLE = (_CheckedArray, _DTypeRecord, SparseStub, ChStub)
_PLAIN_KEYS = (str, bytes, float, bool, type(None))


class _Callable:
    """An admitted global: calls the pack's builder; it has no state a file could change."""

    __slots__ = ("name", "func")

    def __init__(self, name: str, func: Any) -> None:
        self.name, self.func = name, func

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)

    def __repr__(self) -> str:
        return f"<allowed global {self.name}>"


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with the opcode checks described in the module docstring.

    Subclasses define ``find_class`` (the allow-list) and ``persistent_load``.
    """

    def __init__(self, stream: io.BytesIO, source: str, budget: Budget | None = None) -> None:
        super().__init__(stream, encoding="latin1")
        with stream.getbuffer() as view:
            size = view.nbytes
        self.source, self.budget, self._size = source, budget, size

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing to load the pickled global "
                                f"'{_short.repr(module)[1:-1]}.{_short.repr(name)[1:-1]}' here")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed in motion files")

    def _refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(f"{self.source}: {what}")

    def _check_key(self, key: Any) -> None:
        if isinstance(key, int) and not isinstance(key, bool):
            if -_MAX_PLAIN_INT <= key < _MAX_PLAIN_INT:
                return
        elif isinstance(key, _PLAIN_KEYS):
            return
        raise self._refuse(f"dictionary keys and set members must be strings or numbers, got {_short.repr(key)}")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, type) or not isinstance(inst, _BUILDABLE):
            raise self._refuse(f"refusing to set the state of {_short.repr(inst)} (only arrays and the pack's "
                               "stand-ins take a pickled state)")
        inst.__setstate__(state)

    def _target(self, kind: type) -> Any:
        target = self.stack[-1]
        if not isinstance(target, kind):
            raise self._refuse(f"cannot add items to {_short.repr(target)}")
        return target

    def load_dict(self) -> None:
        items = self.pop_mark()
        for key in items[::2]:
            self._check_key(key)
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._check_key(key)
        self._target(dict)[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target(dict)
        for i in range(0, len(items), 2):
            self._check_key(items[i])
            target[items[i]] = items[i + 1]

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target(list).extend(items)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target(list).append(value)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target(set)
        for item in items:
            self._check_key(item)
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        for item in items:
            self._check_key(item)
        self.append(frozenset(items))

    def load_bytearray8(self) -> None:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > self._size:
            raise self._refuse(f"a byte array claims {length} bytes in a file of {self._size}")
        data = self.read(length)
        if len(data) != length:
            raise self._refuse("truncated byte array")
        self.append(bytearray(data))

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _NDArrayClass:
    """What ``numpy.ndarray`` in a pickle becomes: only the class argument of ``_reconstruct``.

    Calling ``numpy.ndarray(shape, dtype)`` directly would hand out uninitialised memory.
    """

    def __call__(self, *args: Any) -> Any:
        raise UnsafePickleError("numpy.ndarray may not be called directly in a motion file")

    def __repr__(self) -> str:
        return "<allowed global numpy.ndarray>"


_NDARRAY = _NDArrayClass()


class _SafeUnpickler(_RestrictedUnpickler):
    """The allow-list of the module docstring; each admitted global is a builder bound to this file."""

    def __init__(self, stream: io.BytesIO, source: str, allow_torch: bool = False, allow_body_model: bool = False,
                 budget: Budget | None = None) -> None:
        super().__init__(stream, source, budget)
        self.allowed = self._globals(allow_torch, allow_body_model)

    # builders (each checks its arguments; see the module docstring)

    def _checked(self, array: np.ndarray) -> _CheckedArray:
        """``array`` as a ``_CheckedArray`` that knows this file (for a later ``BUILD`` on it)."""
        checked = array.view(_CheckedArray)
        checked._source, checked._budget = self.source, self.budget
        return checked

    def _reconstruct(self, cls: Any, shape: Any = None, dtype: Any = None) -> np.ndarray:
        if cls is not _NDARRAY:
            raise self._refuse(f"numpy's _reconstruct may only build numpy.ndarray, not {_short.repr(cls)}")
        return self._checked(np.empty((0,), np.uint8))

    def _dtype(self, spec: Any, align: Any = False, copy: Any = True) -> _DTypeRecord:
        if align not in (False, True, 0, 1) or copy not in (False, True, 0, 1):
            raise self._refuse("malformed pickled dtype")
        return _DTypeRecord(_plain_dtype(spec, self.source), self.source)

    def _scalar(self, record: Any, data: Any = None) -> Any:
        dtype = _resolve_dtype(record, self.source)
        raw = _as_bytes(data, self.source)
        if len(raw) != dtype.itemsize:
            raise self._refuse(f"pickled {dtype} scalar needs {dtype.itemsize} bytes, the file holds {len(raw)}")
        return np.frombuffer(raw, dtype=dtype, count=1)[0]

    def _frombuffer(self, buffer: Any, record: Any, shape: Any, order: Any) -> np.ndarray:
        dtype = _resolve_dtype(record, self.source)
        if order not in ("C", "F"):
            raise self._refuse(f"pickled array has an invalid order {_short.repr(order)}")
        nbytes = shape_nbytes(shape, dtype.itemsize, self.source, "a pickled array")
        if self.budget is not None:
            self.budget.charge(max(nbytes, shape_nbytes(shape, 1, self.source)), "a pickled array")
        raw = _as_bytes(buffer, self.source)
        if len(raw) != nbytes:
            raise self._refuse(f"pickled array of shape {shape} and dtype {dtype} needs {nbytes} bytes, the file "
                               f"holds {len(raw)}")
        flat = np.frombuffer(raw, dtype=dtype)
        return self._checked(np.array(flat.reshape(tuple(int(s) for s in shape), order=order), order=order))

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        # Python 2 / protocol 2 byte strings: _codecs.encode(text, "latin1"). No other codec: some are quadratic.
        if not isinstance(text, str) or not isinstance(encoding, str) or \
                encoding.lower().replace("-", "_") not in ("latin1", "latin_1", "iso8859_1", "iso_8859_1"):
            raise self._refuse(f"only latin-1 byte strings may be encoded, not {_short.repr(encoding)}")
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            raise self._refuse("a latin-1 byte string holds characters beyond latin-1") from None

    def _ordered_dict(self, *args: Any) -> collections.OrderedDict:
        if len(args) > 1 or (args and not isinstance(args[0], (list, dict))):
            raise self._refuse("malformed OrderedDict")
        pairs = list(args[0].items()) if args and isinstance(args[0], dict) else list(args[0]) if args else []
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise self._refuse("malformed OrderedDict")
            self._check_key(pair[0])
        return collections.OrderedDict(pairs)

    def _load_from_bytes(self, blob: Any) -> _TensorStorage:
        if not isinstance(blob, bytes):
            raise self._refuse("a tensor storage must be given as bytes")
        return _load_storage_blob(blob, self.source, self.budget)

    def _rebuild_tensor(self, *args: Any) -> np.ndarray:
        if len(args) < 4:
            raise self._refuse("malformed tensor record")
        return self._checked(_rebuild_tensor_as_numpy(*args[:4], source=self.source, budget=self.budget))

    def _safe_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        # copyreg._reconstructor(cls, object, None) is how protocol 0/1 pickles create plain objects;
        # only our inert stand-in classes may be built this way.
        if isinstance(cls, type) and issubclass(cls, (ChStub, SparseStub)) and state is None:
            return cls.__new__(cls)
        raise self._refuse(f"refusing to construct {_short.repr(cls)}")

    def _globals(self, allow_torch: bool, allow_body_model: bool) -> dict[tuple[str, str], Any]:
        table: dict[tuple[str, str], Any] = {}
        for core in ("numpy._core", "numpy.core"):
            table[(f"{core}.multiarray", "_reconstruct")] = _Callable("numpy _reconstruct", self._reconstruct)
            table[(f"{core}.multiarray", "scalar")] = _Callable("numpy scalar", self._scalar)
            table[(f"{core}.numeric", "_frombuffer")] = _Callable("numpy _frombuffer", self._frombuffer)
        table[("numpy", "ndarray")] = _NDARRAY
        table[("numpy", "dtype")] = _Callable("numpy.dtype", self._dtype)
        table[("collections", "OrderedDict")] = _Callable("collections.OrderedDict", self._ordered_dict)
        table[("_codecs", "encode")] = _Callable("_codecs.encode", self._encode)
        if allow_torch:
            table[("torch._utils", "_rebuild_tensor_v2")] = _Callable("torch tensor", self._rebuild_tensor)
            table[("torch.storage", "_load_from_bytes")] = _Callable("torch storage", self._load_from_bytes)
        if allow_body_model:
            for module in ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr"):
                table[(module, "csc_matrix")] = _CscStub
                table[(module, "csr_matrix")] = _CsrStub
            table[("chumpy.ch", "Ch")] = ChStub
            table[("copyreg", "_reconstructor")] = _Callable("copyreg._reconstructor", self._safe_reconstructor)
            table[("builtins", "object")] = _Callable("builtins.object", self._refuse_object)
        return table

    def _refuse_object(self, *args: Any) -> Any:
        raise self._refuse("builtins.object may only be named as the base of a stand-in")

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 spellings (copy_reg, __builtin__) mapped as the standard Unpickler does; the result
        # still has to pass the allow-list.
        import _compat_pickle

        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return self.allowed[(module, name)]
        except (KeyError, TypeError):
            hint = "only numpy arrays, plain containers and tensors are allowed in motion files"
            if str(module).split(".")[0] in ("chumpy", "scipy"):
                hint = "convert the model to plain numpy arrays first, e.g. with smplx's tools/clean_ch.py"
            raise UnsafePickleError(f"{self.source}: refusing to load the pickled global "
                                    f"'{_short.repr(module)[1:-1]}.{_short.repr(name)[1:-1]}' ({hint})") from None


class _StorageBlobUnpickler(_RestrictedUnpickler):
    """Reads the main record of torch's legacy single-storage blob (no code, no torch)."""

    def __init__(self, stream: io.BytesIO, source: str) -> None:
        super().__init__(stream, source)
        self.records: list[tuple[str, np.dtype, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(_TORCH_STORAGE_DTYPES[name])
        raise UnsafePickleError(f"{self.source}: tensor storage of type '{_short.repr(module)[1:-1]}."
                                f"{_short.repr(name)[1:-1]}' is not supported")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and not isinstance(pid[4], bool)
                and pid[4] >= 0):
            raise UnsafePickleError(f"{self.source}: unexpected tensor storage record {_short.repr(pid)}")
        self.records.append((pid[2], pid[1].dtype, pid[4]))
        return pid[2]


def _load_storage_blob(blob: bytes, source: str, budget: Budget | None = None) -> _TensorStorage:
    """Parse ``torch.save(storage, _use_new_zipfile_serialization=False)`` bytes into a flat array.

    Layout: five pickles (magic number, protocol version, system info, the storage record, its key list),
    then per storage an 8-byte element count and the raw elements.
    """
    f = io.BytesIO(blob)
    magic = _RestrictedUnpickler(f, source).load()  # plain values only: no global is allowed in these
    protocol = _RestrictedUnpickler(f, source).load()
    if magic != _TORCH_MAGIC or protocol != _TORCH_PROTOCOL:
        raise UnsafePickleError(f"{source}: a tensor storage is not in torch's serialisation format")
    _RestrictedUnpickler(f, source).load()  # system info: a plain dict
    reader = _StorageBlobUnpickler(f, source)
    key = reader.load()
    keys = _RestrictedUnpickler(f, source).load()
    if len(reader.records) != 1 or not isinstance(keys, list) or keys != [key]:
        raise UnsafePickleError(f"{source}: malformed tensor storage")
    _, dtype, numel = reader.records[0]
    header = f.read(8)
    if len(header) != 8:
        raise UnsafePickleError(f"{source}: truncated tensor storage")
    (count,) = struct.unpack("<q", header)
    if count != numel:
        raise UnsafePickleError(f"{source}: tensor storage holds {count} elements, its record says {numel}")
    nbytes = shape_nbytes((count,), dtype.itemsize, source, "a tensor storage")
    if budget is not None:
        budget.charge(nbytes, "a tensor storage")
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise UnsafePickleError(f"{source}: truncated tensor storage ({len(data)} bytes for {numel} elements)")
    return _TensorStorage(np.frombuffer(data, dtype=dtype).copy())


def safe_load_pickle(path: str | os.PathLike, allow_torch: bool = False, allow_body_model: bool = False,
                     budget: Budget | None = None) -> Any:
    """Unpickle ``path`` with the allow-list above.

    ``UnsafePickleError`` names any forbidden global or opcode; every other problem is an ``InputError``
    naming the file. ``budget`` (default: ``Budget.for_file(path)``) bounds the bytes of all arrays built.
    """
    path = Path(path)
    with reading(path, "pickle"):
        check_file_size(path, MAX_MOTION_FILE_BYTES, "pickle")
        data = path.read_bytes()
        budget = budget if budget is not None else Budget.for_file(path)
        return _SafeUnpickler(io.BytesIO(data), str(path), allow_torch=allow_torch,
                              allow_body_model=allow_body_model, budget=budget).load()
