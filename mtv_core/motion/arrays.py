"""Reading ``.npy`` files and ``.npz`` members without pickle, checking what they claim before reading it.

``numpy.load`` allocates the shape an ``.npy`` header claims before it reads a byte, and ``NpzFile``
decompresses any member it is asked for. Here the header is read first: the dtype must hold no Python
objects, the bytes the shape needs must be exactly the bytes the file or member holds, and they are
charged to the file's :class:`~mtv_core.limits.Budget` before anything is allocated. Members of an
``.npz`` are read only when asked for, so an unused member is never decompressed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import InputError
from ..limits import Budget, check_limit, shape_nbytes

_MAX_HEADER = 10_000  # numpy's own default limit for .npy headers


def _read_header(fp: IO[bytes], source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_HEADER)
        else:
            raise InputError(f"{source}: unsupported .npy format version {version}")
    except InputError:
        raise
    except Exception as exc:  # numpy parses the header with tokenize + ast: any of their errors means "malformed"
        raise InputError(f"{source}: not a readable .npy array (malformed header: {type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    if dtype.hasobject:
        raise InputError(f"{source}: holds an object array (pickled data is never loaded)")
    if dtype.itemsize == 0:
        raise InputError(f"{source}: holds an array of zero-size elements ({dtype})")
    return shape, fortran, dtype


def _read_array(fp: IO[bytes], available: int, source: str, budget: Budget) -> np.ndarray:
    """The array at ``fp`` (magic + header + data) whose data must be exactly the ``available`` bytes left."""
    start = fp.tell()
    shape, fortran, dtype = _read_header(fp, source)
    data_bytes = available - (fp.tell() - start)
    nbytes = shape_nbytes(shape, dtype.itemsize, source)
    if nbytes != data_bytes:
        raise InputError(f"{source}: header says shape {shape} of {dtype} ({nbytes} bytes) but {data_bytes} bytes "
                         "of data follow")
    budget.charge(max(nbytes, shape_nbytes(shape, 1, source)), f"array of shape {shape}")
    buffer = bytearray(nbytes)
    if fp.readinto(buffer) != nbytes or fp.read(1):
        raise InputError(f"{source}: array data is truncated or followed by extra bytes")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def read_npy(path: str | os.PathLike, budget: Budget | None = None) -> np.ndarray:
    """A ``.npy`` file as an array (no pickle; the header checked against the file size and ``budget``)."""
    path = Path(path)
    budget = budget if budget is not None else Budget.for_file(path)
    with open(path, "rb") as fp:
        return _read_array(fp, os.fstat(fp.fileno()).st_size, str(path), budget)


class NpzArchive:
    """Lazy, checked access to the arrays of an ``.npz`` file: ``keys()``, ``in``, ``read(key)``."""

    def __init__(self, path: str | os.PathLike, budget: Budget | None = None) -> None:
        self.path = Path(path)
        self.budget = budget if budget is not None else Budget.for_file(self.path)
        self._zip = zipfile.ZipFile(self.path)
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members.setdefault(name, info)

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def keys(self) -> list[str]:
        return list(self._members)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def read(self, key: str) -> np.ndarray:
        """Member ``key``; its declared size is checked against the budget before it is decompressed."""
        info = self._members[key]
        source = f"{self.path} (member '{key}')"
        check_limit(info.file_size, self.budget.limit - self.budget.used, "its declared size in bytes", source)
        with self._zip.open(info) as fp:
            return _read_array(fp, info.file_size, source, self.budget)
