"""Fuzzing support: a worker process that runs the loaders under a time and memory ceiling, and strategies.

Every example is a file written here and loaded in ``_fuzz_child.py`` (one long-lived worker, so examples
are cheap). The verdict for each example:

* ``ok``: it loaded and the result satisfies the documented invariants (checked in the worker);
* ``input_error``: an ``InputError`` whose message names the file: the pack's one way of saying no;
* anything else fails the test: a raw exception or a message without the file name (``bad``), a worker
  that died (``crash``: segfault, abort, memory ceiling) or did not answer in time (``hang``).

Example counts are small in CI (``scaled``); ``pytest --fuzz-long[=N]`` multiplies them by N (default
30) and lets hypothesis draw fresh random examples instead of the fixed (derandomised) CI set.
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

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CHILD = Path(__file__).resolve().with_name("_fuzz_child.py")
LONG_SCALE = 0  # set from --fuzz-long by conftest
TIMEOUT_S = float(os.environ.get("MTV_FUZZ_TIMEOUT", "60"))  # per example; a loaded 2-core CI box is slow
STATS: collections.Counter = collections.Counter()  # (target, outcome) -> examples, printed after the run
FAILURES: list[str] = []


def scaled(examples: int) -> settings:
    """Hypothesis settings for a fuzz test of ``examples`` examples in CI (x LONG_SCALE with --fuzz-long)."""
    return settings(
        max_examples=examples * LONG_SCALE if LONG_SCALE else examples,
        derandomize=not LONG_SCALE,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


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


# --- strategies ---------------------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 7, 8, 16, 24, 49, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 2**40, 2**62, 2**63 - 1, 2**64 - 1]


class Corpus(tuple):
    """Seed files with a short repr (hypothesis prints strategies and failing examples; seeds are megabytes)."""

    def __repr__(self) -> str:
        return f"<{len(self)} seed files>"


def mutated(seeds: list[bytes], max_ops: int = 6) -> st.SearchStrategy[bytes]:
    """One of ``seeds`` with 1..max_ops byte-level mutations (AFL-style: flips, interesting integers, deletes,
    duplications, inserts, truncation, splices), biased towards the first and last kilobyte where formats
    keep their headers, indexes and central directories."""
    return _mutated(Corpus(seeds), max_ops)


@st.composite
def _mutated(draw, seeds: Corpus, max_ops: int) -> bytes:
    data = bytearray(seeds[draw(st.integers(0, len(seeds) - 1))])
    for _ in range(draw(st.integers(1, max_ops))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        region = draw(st.sampled_from(("head", "head", "tail", "any")))
        n = len(data)
        if region == "head":
            pos = draw(st.integers(0, min(n, 1024) - 1))
        elif region == "tail":
            pos = draw(st.integers(max(0, n - 1024), n - 1))
        else:
            pos = draw(st.integers(0, n - 1))
        op = draw(st.sampled_from(("flip", "byte", "int", "delete", "dup", "insert", "truncate", "swap")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op == "int":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))
            order = draw(st.sampled_from(("little", "big")))
            data[pos : pos + width] = value.to_bytes(width, order)
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "dup":
            length = draw(st.integers(1, 64))
            data[pos:pos] = data[pos : pos + length]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "truncate":
            del data[pos:]
        else:
            other = draw(st.integers(0, n - 1))
            data[pos], data[other] = data[other], data[pos]
    return bytes(data)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(INTERESTING + [-1, 10**9, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=20)


def json_text(value: Any) -> str:
    """JSON as Python writes it (NaN / Infinity included, as configs in the wild sometimes are)."""
    return json.dumps(value, allow_nan=True)


@st.composite
def deeply_nested(draw) -> str:
    depth = draw(st.integers(30, 50_000))
    opener, closer = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
    return opener * depth + "1" + closer * depth
