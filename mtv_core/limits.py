"""The budget of every input the pack reads, and the checks that enforce it before anything is allocated.

ComfyUI runs every node in one long-lived process, so a file that asks for gigabytes or hours takes the
user's whole session down. Every loader checks what a file *claims* (shapes, counts, sizes, config values)
against this table first and only then allocates; an input over a limit is a :class:`LimitError` naming
the file, the value and the limit.

=========================  ==============================  =====================================================
Input                      Limit                           Why
=========================  ==============================  =====================================================
motion file on disk        ``MAX_MOTION_FILE_BYTES``       pickles are read whole into memory
decoded arrays per file    ``decoded_budget(file bytes)``  arrays rebuilt / decompressed from one file, in total:
                                                           at most 1 GiB and at most 64 MiB + 16 x the file size,
                                                           so a tiny file cannot demand gigabytes
frames per sequence        ``MAX_FRAMES``                  83 min at 20 fps
sequences per file         ``MAX_SEQUENCES``
people per NLF frame       ``MAX_PEOPLE_PER_FRAME``
joint coordinates          ``MAX_ABS_MM``                  10 km; keeps float32 exact enough and finite
frame rate                 ``MIN_FPS`` .. ``MAX_FPS``      what a video writer accepts
JSON (config, index,       ``MAX_JSON_BYTES``,             config.json, sharded-checkpoint indexes, safetensors
metadata)                  ``MAX_JSON_DEPTH``              metadata, motion metadata
motion metadata kept       ``MAX_MOTION_META_CHARS``       from any motion file, so that Save Motion's .npz of it
                                                           reads back (numpy stores it as 4-byte characters)
checkpoint tensors         ``MAX_TENSORS``,                tensors per checkpoint, shards per folder
                           ``MAX_SHARDS``
model config counts        ``MAX_LAYERS``, ``MAX_WIDTH``   and they must equal what the weights hold
reference image            ``MAX_IMAGE_PIXELS``            100 megapixels
guidance, steps            ``MAX_GUIDANCE``, ``MAX_STEPS``
=========================  ==============================  =====================================================

Numbers crossing the boundary (joints, fps, guidance, pixels) are checked here too: finite, in range,
of a real numeric kind (not complex, timedelta, string or object).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .errors import InputError, LimitError

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

MAX_MOTION_FILE_BYTES = 1 * GIB
MAX_DECODED_BYTES = 1 * GIB
DECODED_BYTES_FLOOR = 64 * MIB
DECODED_BYTES_PER_FILE_BYTE = 16
MAX_FRAMES = 100_000
MAX_SEQUENCES = 100_000
MAX_PEOPLE_PER_FRAME = 256
MAX_ABS_MM = 1e7
MIN_FPS, MAX_FPS = 0.1, 1000.0
MAX_JSON_BYTES = 16 * MIB
MAX_JSON_DEPTH = 32
MAX_MOTION_META_CHARS = 1 * MIB  # 4 MiB in an .npz: well inside the reader's member limit
MAX_TENSORS = 200_000
MAX_SHARDS = 1_000
MAX_LAYERS = 1_024
MAX_WIDTH = 1 << 17
MAX_IMAGE_PIXELS = 100_000_000
MAX_GUIDANCE = 100.0
MAX_STEPS = 1_000

# numpy kinds that are plain real numbers: signed/unsigned integers and floats (not bool, complex,
# timedelta/datetime, strings, void or object).
REAL_KINDS = "iuf"


def decoded_budget(file_bytes: int) -> int:
    """Bytes of arrays one file of ``file_bytes`` may decode to (see the table above)."""
    return min(MAX_DECODED_BYTES, DECODED_BYTES_FLOOR + DECODED_BYTES_PER_FILE_BYTE * max(0, int(file_bytes)))


def check_limit(value: int | float, limit: int | float, what: str, source: object) -> None:
    """Raise ``LimitError`` naming ``source``, ``what``, the value and the limit when ``value > limit``."""
    if value > limit:
        raise LimitError(f"{source}: {what} is {_fmt(value)}, over the limit of {_fmt(limit)}")


def _fmt(value: int | float) -> str:
    if isinstance(value, int) and value >= 10 * MIB:
        return f"{value} ({value / MIB:.0f} MiB)" if value < 10 * GIB else f"{value} ({value / GIB:.0f} GiB)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_file_size(path: str | os.PathLike, limit: int, what: str = "file") -> int:
    """Size of ``path`` in bytes; ``LimitError`` when over ``limit``."""
    size = os.stat(path).st_size
    check_limit(size, limit, f"the {what} size in bytes", path)
    return size


class Budget:
    """Bytes one file may still decode to; every rebuilt or decompressed array is charged before it exists."""

    def __init__(self, source: object, limit: int) -> None:
        self.source, self.limit, self.used = source, int(limit), 0

    @classmethod
    def for_file(cls, path: str | os.PathLike) -> "Budget":
        return cls(path, decoded_budget(os.stat(path).st_size))

    def charge(self, nbytes: int, what: str = "array") -> None:
        nbytes = int(nbytes)
        if nbytes < 0:
            raise InputError(f"{self.source}: {what} has a negative size")
        if self.used + nbytes > self.limit:
            raise LimitError(f"{self.source}: {what} needs {_fmt(nbytes)} bytes; with {_fmt(self.used)} already "
                             f"decoded that is over the limit of {_fmt(self.limit)} bytes for this file")
        self.used += nbytes


def shape_nbytes(shape: Any, itemsize: int, source: object, what: str = "array") -> int:
    """Bytes of an array of ``shape`` (a tuple of non-negative Python/numpy ints; no bools); InputError otherwise."""
    if not isinstance(shape, tuple) or len(shape) > 32:
        raise InputError(f"{source}: {what} has an invalid shape {shape!r:.80}")
    count = 1
    for dim in shape:
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 0:
            raise InputError(f"{source}: {what} has an invalid shape {shape!r:.80}")
        count *= int(dim)
    return count * int(itemsize)


# --- numbers at the boundary --------------------------------------------------------------------------


def check_number(value: Any, name: str, low: float | None = None, high: float | None = None,
                 source: object = "", integer: bool = False) -> float:
    """``value`` as a finite float (int with ``integer``) within [low, high]; InputError naming ``name`` otherwise."""
    where = f"{source}: " if source else ""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, (complex, np.complexfloating)):
        raise InputError(f"{where}{name} must be a real number, got {value!r:.40}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{where}{name} must be a number, got {value!r:.40}") from None
    if not math.isfinite(number):
        raise InputError(f"{where}{name} must be a finite number, got {value!r:.40}")
    if integer:
        if number != int(number):
            raise InputError(f"{where}{name} must be a whole number, got {value!r:.40}")
        number = int(number)
    if (low is not None and number < low) or (high is not None and number > high):
        span = f"between {low:g} and {high:g}" if low is not None and high is not None else (
            f"at least {low:g}" if low is not None else f"at most {high:g}")
        raise InputError(f"{where}{name} must be {span}, got {value!r:.40}")
    return number


def check_whole_number(value: Any, name: str, low: int, high: int, what: str = "") -> int:
    """``value`` as an int in [low, high] (bools refused): the check for architecture fields of model configs, which
    may come from a config.json or from key names and size what gets built. ValueError naming ``name`` (not the
    file: the caller, which knows it, adds it)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        prefix = f"{what}: " if what else ""
        raise ValueError(f"{prefix}{name} must be a whole number between {low} and {high}, got {value!r:.40}")
    return int(value)


def check_fps(value: Any, source: object = "", name: str = "fps") -> float:
    """A frame rate in [MIN_FPS, MAX_FPS] (what a video writer accepts)."""
    try:
        return check_number(value, name, MIN_FPS, MAX_FPS, source)
    except InputError:
        where = f"{source}: " if source else ""
        raise InputError(f"{where}{name} must be a positive number of frames per second between {MIN_FPS:g} and "
                         f"{MAX_FPS:g}, got {value!r:.40}") from None


def real_array(values: Any, name: str, source: object = "", max_abs: float | None = None,
               dtype: Any = np.float32) -> np.ndarray:
    """``values`` as a ``dtype`` array of real, finite numbers with ``|x| <= max_abs``; InputError otherwise.

    The range is checked before the cast, so values that would overflow ``dtype`` are refused, not
    turned into inf.
    """
    where = f"{source}: " if source else ""
    try:
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InputError(f"{where}{name} is not a regular numeric array ({exc})") from None
    if array.dtype.kind not in REAL_KINDS:
        raise InputError(f"{where}{name} must hold real numbers, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{where}{name} contains NaN or inf values ({int((~finite).sum())} of {array.size})")
    limit = max_abs if max_abs is not None else float(np.finfo(dtype).max) if np.dtype(dtype).kind == "f" else None
    if limit is not None and array.size:
        peak = float(np.max(np.abs(array.astype(np.float64, copy=False))))
        if peak > limit:
            raise InputError(f"{where}{name} has a value of magnitude {peak:g}, over the limit of {limit:g}")
    return np.asarray(array, dtype=dtype)


# --- JSON ----------------------------------------------------------------------------------------------


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: never recurses)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            depth = max(depth, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return depth


def parse_json(text: str | bytes, source: object, what: str = "JSON", expect: type | None = dict) -> Any:
    """Parse JSON from a file or a metadata string within ``MAX_JSON_BYTES`` / ``MAX_JSON_DEPTH``.

    ``expect`` (dict by default) is the type the top level must have. Raises InputError naming
    ``source`` for malformed, oversized, too deeply nested or mistyped JSON.
    """
    check_limit(len(text), MAX_JSON_BYTES, f"the {what} size", source)
    try:
        value = json.loads(text)
    except RecursionError:
        raise InputError(f"{source}: {what} is nested too deeply") from None
    except (ValueError, TypeError, UnicodeError) as exc:
        raise InputError(f"{source}: {what} is not valid JSON ({exc})") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise LimitError(f"{source}: {what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if expect is not None and not isinstance(value, expect):
        raise InputError(f"{source}: {what} must be a JSON {'object' if expect is dict else expect.__name__}, "
                         f"got a {type(value).__name__}")
    return value


def read_json_file(path: str | os.PathLike, what: str = "JSON file", expect: type | None = dict) -> Any:
    """``parse_json`` of a file, refusing files over ``MAX_JSON_BYTES`` before reading them."""
    check_file_size(path, MAX_JSON_BYTES, what)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc})") from None
    return parse_json(data, path, what, expect)
