"""Reading single tensors from a safetensors file with positional reads, no memory map.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(``{key: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}``, offsets
relative to the end of the header), then the raw little-endian tensor bytes. ``SafetensorsFile`` parses and
checks the header once and reads one tensor at a time: straight into the result when it keeps the file's dtype on
the CPU, else chunk by chunk through one small staging buffer into a result allocated in the target dtype on the
target device. Nothing stays mapped, so loading a model costs about its size in the target dtype, whatever the
file's dtype; a memory map would instead keep every page it touched resident until the map is released (3x the
bf16 weights for an fp32 file). The file is opened for each read, so no descriptor outlives a call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
STAGING_BYTES = 16 * 1024 * 1024  # converted or moved tensors pass through a host buffer of at most this size
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
    """One reusable CPU buffer (at most ``STAGING_BYTES``) for tensors that are converted or moved after reading.

    Reading every such tensor into a fresh allocation makes the allocator's heap grow by several tensors
    (freed buffers interleave with the kept, converted results); one small buffer avoids that. For CUDA it is
    pinned, which makes the copies to the GPU faster. Shared by the files of one checkpoint; ``lock`` guards it.
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


def read_header(path: Path) -> tuple[dict, int, int]:
    """(JSON header as a dict, offset of the tensor data, file size) of a safetensors file; only the header is read,
    its entries are not checked. SafetensorsError naming the file otherwise."""

    def error(problem: str) -> SafetensorsError:
        return SafetensorsError(f"{path}: not a readable safetensors file: {problem}")

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise error(f"{size} bytes, too short for a header")
        header_bytes = int.from_bytes(head, "little")
        if header_bytes > min(MAX_HEADER_BYTES, size - 8):
            raise error(f"header length {header_bytes} exceeds the file or the {MAX_HEADER_BYTES}-byte limit")
        raw = f.read(header_bytes)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise error(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise error("header is not a JSON object")
    return header, 8 + header_bytes, size


class SafetensorsFile:
    """Header of one safetensors file; tensors are read on request with :meth:`read`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        header, self.data_start, size = read_header(self.path)
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
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tensor ``key`` in ``dtype`` (floating tensors only) on ``device``.

        When neither dtype nor device changes, the file's bytes are read straight into the new tensor.
        Otherwise the result is allocated in its final dtype on ``device`` and filled chunk by chunk through
        ``staging`` (a temporary buffer when None), so the host holds at most ``STAGING_BYTES`` besides it.
        ``out``: a contiguous tensor of the result's shape, dtype and device to fill and return instead of a new one
        (a view into a larger tensor, e.g. fused q/k/v weights).
        """
        file_dtype, shape, begin, end = self._entries[key]
        if sys.byteorder != "little" and file_dtype.itemsize > 1:
            raise self._error("big-endian machines are not supported")
        device = torch.device(device)
        convert = dtype is not None and dtype != file_dtype and file_dtype.is_floating_point
        target = dtype if convert else file_dtype
        if out is not None and (tuple(out.shape) != tuple(shape) or out.dtype != target or out.device != device
                                or not out.is_contiguous()):
            raise ValueError(f"{self.path}: '{key}' cannot be read into a {tuple(out.shape)} {out.dtype} tensor on "
                             f"{out.device} (needs {tuple(shape)} {target} on {device}, contiguous)")
        if device.type == "cpu" and not convert:
            result = torch.empty(end - begin, dtype=torch.uint8) if out is None else out.reshape(-1).view(torch.uint8)
            with open(self.path, "rb", buffering=0) as f:
                self._read_into(f, result, self.data_start + begin)
            return result.view(file_dtype).reshape(shape) if out is None else out
        result = torch.empty(shape, dtype=target, device=device) if out is None else out
        if result.numel() == 0 or device.type == "meta":
            return result
        flat, first = result.view(-1), 0
        staging = staging if staging is not None else StagingBuffer()
        for raw in self.chunks(key, staging, flat.numel(), pin=device.type == "cuda"):
            if device.type != "cpu":  # to the device as stored, converted there (blocking: the buffer is free after)
                raw = raw.to(device)
            flat[first : first + raw.numel()].copy_(raw)
            first += raw.numel()
        return result

    def chunks(self, key: str, staging: StagingBuffer, elements: int, pin: bool = False) -> Iterator[torch.Tensor]:
        """Tensor ``key`` as stored, flattened, in consecutive chunks of at most ``elements`` (and ``STAGING_BYTES``),
        each read into ``staging`` (pinned with ``pin``, for copies to a GPU) and valid until the next is taken: how
        ``read`` converts, and for a tensor only needed to compute another (an fp8 weight quantised from a bf16 one),
        so that it is never whole in memory."""
        file_dtype, _, begin, end = self._entries[key]
        if sys.byteorder != "little" and file_dtype.itemsize > 1:
            raise self._error("big-endian machines are not supported")
        itemsize = file_dtype.itemsize
        total = (end - begin) // itemsize
        step = max(1, min(elements, STAGING_BYTES // itemsize))
        if total == 0:
            return
        with staging.lock, open(self.path, "rb", buffering=0) as f:
            buffer = staging.get(min(end - begin, step * itemsize), pin=pin)
            for first in range(0, total, step):
                chunk = buffer[: min(step, total - first) * itemsize]
                self._read_into(f, chunk, self.data_start + begin + first * itemsize)
                yield chunk.view(file_dtype)

    def _read_into(self, f, buffer: torch.Tensor, offset: int) -> None:
        """Fill the uint8 tensor ``buffer`` from the open file ``f`` at ``offset``."""
        view = memoryview(buffer.numpy()).cast("B")
        done = 0
        f.seek(offset)
        while done < len(view):
            n = f.readinto(view[done : done + _READ_CHUNK])
            if not n:
                raise self._error(f"file ended {len(view) - done} bytes early while reading a tensor")
            done += n
