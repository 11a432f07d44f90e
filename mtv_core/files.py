"""Output files: written all or nothing, only where they belong, checked before the work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from .errors import InputError


def contained_path(root: str | os.PathLike, name: str, what: str = "name", where: str = "") -> Path:
    """``root / name`` when it names something strictly inside ``root``; InputError otherwise.

    The one containment rule for every path built from a name that comes from outside (a save prefix, a
    model name, a shard listed in a checkpoint index): ``name`` is relative, and after ``.`` and ``..`` are
    resolved (lexically, as ComfyUI does; symlinks a user placed inside ``root`` are followed) it stays
    below ``root`` and is not ``root`` itself. ``where`` describes ``root`` in the error message.
    """
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise InputError(f"{what} {name!r:.80} is empty or not a valid path")
    base = os.path.abspath(root)
    where = where or base
    if os.path.isabs(name) or os.path.splitdrive(name)[0]:
        raise InputError(f"{what} '{name}' must be a path inside {where} (not absolute)")
    full = os.path.normpath(os.path.join(base, name))
    try:
        inside = os.path.commonpath([base, full]) == base
    except ValueError:  # different drives (Windows)
        inside = False
    if not inside or full == base:
        raise InputError(f"{what} '{name}' points outside {where}; it must name a path inside it")
    return Path(full)


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it is moved onto ``path``.

    A failed or interrupted write leaves neither a truncated ``path`` nor the temporary file.
    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | os.PathLike, what: str = "output file") -> Path:
    """Make sure ``path`` can be written by :func:`atomic_output` before any long work starts.

    Checks that ``path`` is not a folder, that its nearest existing parent is a folder where a file can be
    created (a probe file is made and removed), and that the temporary name fits the file system. Creates
    nothing that stays. Raises InputError naming the path and the problem.
    """
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise InputError(f"{path}: the {what} is an existing folder")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot write the {what}: {existing} is not a folder")
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if len(os.fsencode(_partial_name(path).name)) > name_max:
        raise InputError(f"{path}: the {what} name is too long for the file system")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".mtv_write_check_"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot write the {what} in {existing} ({exc.strerror or exc})") from None
    return path
