"""The one error type for input the pack cannot use, and the boundary that turns parser failures into it.

Motion files, checkpoints, configs and images reach the pack from strangers. Whatever goes wrong while
reading one is reported as an :class:`InputError` (a ``ValueError``) whose message names the file (or
the input) and the problem; the loaders' own errors derive from it (``MotionFormatError``,
``UnsafePickleError``, ``CheckpointError``, ``LimitError``). The command line maps it to exit code 2
and one line; the nodes raise it as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import struct
import tokenize
import zipfile
import zlib
from typing import Iterator


class InputError(ValueError):
    """A file or value from outside the pack that cannot be used; the message names it and the problem."""


class LimitError(InputError):
    """An input exceeds one of the budgets of ``mtv_core.limits`` (the message names the value and the limit)."""


# What parsers (json, zipfile, numpy.lib.format, pickle, PIL, torch.load, safetensors) raise on malformed
# input. Our own code raises InputError; anything else escaping a loader is a bug and stays visible.
PARSER_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError, OSError, OverflowError,
    RecursionError, MemoryError, UnicodeError, ArithmeticError, AssertionError, SyntaxError, RuntimeError,
    struct.error, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, pickle.UnpicklingError, tokenize.TokenError,
)  # fmt: skip


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "file", error: type[InputError] = InputError) -> Iterator[None]:
    """Run a parser on ``path``: what it raises on malformed input becomes one ``error`` naming the file.

    An ``InputError`` passes unchanged when it names the file, else it is prefixed with it (checks deep in
    a parser do not always know the file name); ``FileNotFoundError`` (a missing file, not a broken one)
    passes unchanged. A ``MemoryError`` is reported as such: the limits keep valid-looking files small, so
    one here means the machine has less memory than the file legitimately needs.
    """
    try:
        yield
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise type(exc)(f"{path}: {exc}") from exc
    except FileNotFoundError:
        raise
    except MemoryError as exc:
        raise error(f"{path}: not enough memory to read this {what}") from exc
    except RecursionError as exc:
        raise error(f"{path}: not a readable {what} (nested too deeply)") from exc
    except PARSER_ERRORS as exc:
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise error(f"{path}: not a readable {what} ({detail})") from exc


def one_line(exc: BaseException) -> str:
    """An error message on one line (key reports and other multi-line details joined with '; ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def log_input_error(exc: BaseException, logger: logging.Logger | None = None) -> None:
    """How the command line reports bad input: one line, no traceback."""
    (logger or logging.getLogger("mtv_core")).error("%s", one_line(exc))
