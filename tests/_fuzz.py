"""Fuzzing support: a worker process that runs the loaders under a time and memory ceiling, and strategies.

Every example is a file written here and loaded in ``_fuzz_child.py`` (one long-lived worker, so examples
are cheap). The verdict for each example:

* ``ok``: it loaded and the result satisfies the documented invariants (checked in the worker);
* ``input_error``: an ``InputError`` whose message names the file: the pack's one way of saying no;
* anything else fails the test: a raw exception (``bad``), an InputError without the file name
  (``unnamed``), a worker
  that died (``crash``: segfault, abort, memory ceiling) or did not answer in time (``hang``).

Example counts are small in CI (``_fuzz_strategies.scaled``); ``pytest --fuzz-long[=N]`` multiplies them by
N (default 30) and lets hypothesis draw fresh random examples instead of the fixed (derandomised) CI set.
This module does not need hypothesis (the regression tests and the ComfyUI integration run use it too).
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = Path(__file__).resolve().with_name("_fuzz_child.py")
LONG_SCALE = 0  # set from --fuzz-long by conftest
TIMEOUT_S = float(os.environ.get("MTV_FUZZ_TIMEOUT", "60"))  # per example; a loaded 2-core CI box is slow
STATS: collections.Counter = collections.Counter()  # (target, outcome) -> examples, printed after the run
FAILURES: list[str] = []


class FuzzWorker:
    """The worker process: ``run(target, path)`` -> verdict dict; restarted after a crash or a hang."""

    def __init__(self, scratch: Path, memory_mb: int = 1536) -> None:
        self.scratch, self.memory_mb = scratch, memory_mb
        self.proc: subprocess.Popen | None = None
        self._buffer = b""
        self.limit_mb = 0

    def _start(self) -> None:
        env = dict(os.environ, MTV_FUZZ_MEMORY_MB=str(self.memory_mb), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self._stderr = open(self.scratch / "worker_stderr.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, env=env)
        self._buffer = b""
        ready = self._readline(300.0)
        if ready is None:
            raise RuntimeError(f"fuzz worker did not start (see {self.scratch / 'worker_stderr.log'})")
        self.limit_mb = json.loads(ready)["limit_mb"]

    def _readline(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
                try:
                    stream.close()
                except OSError:  # a dead worker's pipe
                    pass
        self.proc = None

    def run(self, target: str, path: Path, timeout: float | None = None, **extra: Any) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._kill()
            self._start()
        request = dict(extra, target=target, path=str(path))
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        started = time.monotonic()
        timeout = timeout or TIMEOUT_S
        line = self._readline(timeout)
        if line is None:
            alive = self.proc.poll() is None
            code = self.proc.returncode
            self._kill()
            if alive:
                verdict = {"outcome": "hang", "message": f"no answer within {timeout:.0f} s"}
            else:
                verdict = {"outcome": "crash", "message": f"worker died ({_describe_exit(code)})"}
        else:
            verdict = json.loads(line)
        verdict["seconds"] = time.monotonic() - started
        verdict["target"] = target
        STATS[(target, verdict["outcome"])] += 1
        return verdict

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._kill()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def check(verdict: dict, path: Path, names: tuple[str, ...] = ()) -> None:
    """Assert ``verdict`` is a valid load or an InputError naming ``path`` (or one of ``names``)."""
    outcome = verdict["outcome"]
    if outcome == "ok":
        return
    if outcome == "input_error":
        message = verdict["message"]
        if any(str(n) in message for n in (str(path), *names)):
            return
        problem = f"InputError without the file name: {message[:500]}"
        target = verdict.get("target", "?")
        STATS[(target, "input_error")] -= 1
        STATS[(target, "unnamed")] += 1
    else:
        problem = f"{outcome}: {verdict.get('type', '')}: {verdict.get('message', '')[:500]}\n" \
                  f"{verdict.get('traceback', '')}"
    FAILURES.append(f"{path}: {problem.splitlines()[0][:200]}")
    raise AssertionError(f"{path.name}: {problem}")


def keep_failure(path: Path, keep_dir: Path | None = None) -> Path:
    """Copy a failing example out of the scratch folder (for reproduction); returns the copy."""
    import shutil

    keep_dir = keep_dir or Path(tempfile.gettempdir()) / "mtv_fuzz_failures"
    keep_dir.mkdir(parents=True, exist_ok=True)
    target = keep_dir / f"{int(time.time() * 1000)}_{path.name}"
    (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
    return target


# --- hand-assembled pickles ------------------------------------------------------------------------------
# A hostile pickle is not one Python's pickler would write; these push one object each.


def pk_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pk_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def pk_str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def pk_bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def pk_tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def pk_call(fn: bytes, *args: bytes) -> bytes:
    return fn + pk_tuple(*args) + b"R"


def pk_build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b"b"
