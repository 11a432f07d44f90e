"""Reading single tensors from a safetensors file with positional reads, no memory map.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(``{key: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``, offsets
relative to the end of the header), then the raw little-endian tensor bytes. ``SafetensorsFile`` parses and
checks the header once and reads one tensor at a time into a buffer of exactly its size, converting it to the
target dtype (on the target device) before the next one is read. Nothing stays mapped, so loading a model costs
about its size in the target dtype plus one tensor, whatever the file's dtype; a memory map would instead keep
every page it touched resident until the map is released (3x the bf16 weights for an fp32 file).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
_READ_CHUNK = 1 << 30  # single read() calls stay well below the 2 GiB some platforms cap them at

DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
}
for _name, _attr in (("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64"),
                     ("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)


class StagingBuffer:
    """One reusable CPU buffer for tensors that are converted or moved after reading.

    Reading every such tensor into a fresh allocation makes the allocator's heap grow by several tensors
    (freed buffers interleave with the kept, converted results); one buffer of the largest size avoids that.
    On CUDA machines the buffer is pinned, which also makes the copy to the GPU faster. Shared by the files of
    one checkpoint; thread-safe through ``lock``.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._buffer: torch.Tensor | None = None

    def get(self, nbytes: int, pin: bool) -> torch.Tensor:
        """A uint8 tensor of ``nbytes`` (hold ``lock`` while using it)."""
        if self._buffer is None or self._buffer.numel() < nbytes or (pin and not self._buffer.is_pinned()):
            self._buffer = None  # free the old one first
            self._buffer = _empty_bytes(nbytes, pin)
        return self._buffer[:nbytes]

    def release(self) -> None:
        with self.lock:
            self._buffer = None


def _empty_bytes(nbytes: int, pin: bool) -> torch.Tensor:
    if pin:
        try:
            return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        except RuntimeError:  # no pinnable memory (e.g. locked-memory limits): pageable works too
            pass
    return torch.empty(nbytes, dtype=torch.uint8)


class SafetensorsError(ValueError):
    """A safetensors file whose header or data cannot be used; the message names the file."""


class SafetensorsFile:
    """Header of one safetensors file; tensors are read on request with :meth:`read`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise self._error(f"{size} bytes, too short for a header")
            header_bytes = int.from_bytes(head, "little")
            if header_bytes > min(MAX_HEADER_BYTES, size - 8):
                raise self._error(f"header length {header_bytes} exceeds the file or the {MAX_HEADER_BYTES}-byte limit")
            raw = f.read(header_bytes)
        try:
            header = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._error(f"header is not JSON ({exc})") from None
        if not isinstance(header, dict):
            raise self._error("header is not a JSON object")
        self.data_start = 8 + header_bytes
        data_bytes = size - self.data_start
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._error("__metadata__ is not a map of strings")
        self.metadata: dict[str, str] = metadata
        spans = []
        for key, info in header.items():
            dtype, shape, begin, end = self._check_entry(key, info, data_bytes)
            self._entries[key] = (dtype, shape, begin, end)
            if end > begin:
                spans.append((begin, end, key))
        spans.sort()
        for (_, end, key), (begin, _, next_key) in zip(spans, spans[1:]):
            if begin < end:
                raise self._error(f"the data of {key!r} and {next_key!r} overlap")

    def _error(self, problem: str) -> SafetensorsError:
        return SafetensorsError(f"{self.path}: not a readable safetensors file: {problem}")

    def _check_entry(self, key: str, info, data_bytes: int):
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise self._error(f"entry {key!r} lacks dtype, shape or data_offsets")
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise self._error(f"tensor {key!r} has unsupported dtype {info['dtype']!r}")
        shape, offsets = info["shape"], info["data_offsets"]
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise self._error(f"tensor {key!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
            raise self._error(f"tensor {key!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        numel = 1
        for d in shape:
            numel *= d
        expected = numel * dtype.itemsize
        if not 0 <= begin <= end <= data_bytes or end - begin != expected:
            raise self._error(
                f"tensor {key!r} ({info['dtype']} {shape}, {expected} bytes) has data_offsets {offsets} outside "
                f"the {data_bytes} data bytes or of the wrong length (file truncated?)"
            )
        return dtype, tuple(shape), begin, end

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key][1]

    def dtype(self, key: str) -> torch.dtype:
        return self._entries[key][0]

    def read(
        self,
        key: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        staging: StagingBuffer | None = None,
    ) -> torch.Tensor:
        """Tensor ``key`` in ``dtype`` (floating tensors only) on ``device``.

        When neither dtype nor device changes, the file's bytes are read straight into the new tensor.
        Otherwise they are read into ``staging`` (or a temporary buffer), copied to ``device`` and converted
        there, so the host never holds more than one tensor in the file's dtype besides the results.
        """
        file_dtype, shape, begin, end = self._entries[key]
        if sys.byteorder != "little" and file_dtype.itemsize > 1:
            raise self._error("big-endian machines are not supported")
        device = torch.device(device)
        convert = dtype is not None and dtype != file_dtype and file_dtype.is_floating_point
        if device.type == "cpu" and not convert:
            return self._read_bytes(begin, end, None).view(file_dtype).reshape(shape)
        if staging is None:
            staging = StagingBuffer()
        with staging.lock:
            raw = self._read_bytes(begin, end, staging.get(end - begin, pin=device.type == "cuda"))
            tensor = raw.view(file_dtype).reshape(shape)
            if device.type == "cpu":  # convert straight into the result
                return tensor.to(dtype=dtype)
            tensor = tensor.to(device=device)  # synchronous: the staging buffer is free again afterwards
        return tensor.to(dtype=dtype) if convert else tensor

    def _read_bytes(self, begin: int, end: int, buffer: torch.Tensor | None) -> torch.Tensor:
        if buffer is None:
            buffer = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            self._read_into(buffer, self.data_start + begin)
        return buffer

    def _read_into(self, buffer: torch.Tensor, offset: int) -> None:
        view = memoryview(buffer.numpy()).cast("B")
        done = 0
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            while done < len(view):
                n = f.readinto(view[done:done + _READ_CHUNK])
                if not n:
                    raise self._error(f"file ended {len(view) - done} bytes early while reading a tensor")
                done += n
