"""Hypothesis strategies and settings of the fuzz suite (see ``tests/_fuzz.py`` for the worker and verdicts)."""

from __future__ import annotations

import json
from typing import Any

import _fuzz
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def scaled(examples: int) -> settings:
    """Hypothesis settings for a fuzz test of ``examples`` examples in CI (x _fuzz.LONG_SCALE with --fuzz-long)."""
    return settings(
        max_examples=examples * _fuzz.LONG_SCALE if _fuzz.LONG_SCALE else examples,
        derandomize=not _fuzz.LONG_SCALE,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


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
