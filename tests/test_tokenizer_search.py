"""The 4DMoT nearest-code search: the bf16-screened search gives the exact fp32 search's answer.

The screen only decides which codes are scored in fp32; these tests draw adversarial codebooks (exact and near
ties, duplicates, degenerate books, tiny and huge magnitudes, NaN rows) and check its answer against the full
search, with small code blocks so that every branch runs on small shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis")  # in requirements-dev.txt; absent from some integration environments

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mtv_pack.mtv_core.tokenizer import search  # noqa: E402
from mtv_pack.mtv_core.tokenizer.search import exact_search, nearest_codes, screened_search  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few codes and rows, and no fallback for many candidates, so small books exercise the screen."""
    monkeypatch.setattr(search, "SCREEN_CODES_PER_BLOCK", 7)
    monkeypatch.setattr(search, "MAX_CANDIDATE_FRACTION", 1.0)
    monkeypatch.setattr(search, "RESCORE_BLOCK_BYTES", 512)


def _true_distances(x: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), book.double()).square()


def _assert_same_answer(x: torch.Tensor, book: torch.Tensor, exact_ties: bool) -> None:
    want_idx, want_dist = exact_search(x, book)
    got_idx, got_dist = screened_search(x, book)
    if exact_ties:  # every sum is exact in fp32: the same codes, lowest index on ties
        assert torch.equal(got_idx, want_idx)
        assert torch.equal(got_dist, want_dist)
        return
    # float data: the same code, or one whose real distance is within fp32 rounding of the winner's
    true = _true_distances(x, book)
    scale = x.double().square().sum(1) + book.double().square().sum(1).max()
    differ = got_idx != want_idx
    gap = (true.gather(1, got_idx[:, None]) - true.gather(1, want_idx[:, None])).squeeze(1).abs()
    assert bool((gap[differ] <= 1e-5 * scale[differ]).all()), f"{int(differ.sum())} rows differ beyond rounding"
    torch.testing.assert_close(got_dist, want_dist, rtol=1e-5, atol=float(1e-5 * scale.max()))


@st.composite
def search_cases(draw):
    dim = draw(st.integers(1, 48))
    codes = draw(st.integers(1, 40))
    rows = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["random", "near_codes", "near_duplicates", "degenerate", "integers", "mixed_scale"]))
    exponent = draw(st.integers(-30, 30))
    rng = np.random.default_rng(seed)
    if kind == "integers":
        book = rng.integers(-40, 41, (codes, dim))
        book[rng.integers(0, codes, codes // 3)] = book[0]  # exact duplicates
        x = rng.integers(-40, 41, (rows, dim))
        return torch.tensor(x, dtype=torch.float32), torch.tensor(book, dtype=torch.float32), True
    book = rng.standard_normal((codes, dim))
    if kind == "near_duplicates":
        book = book[:1] + rng.standard_normal((codes, dim)) * 10.0 ** draw(st.integers(-9, -2))
    elif kind == "degenerate":
        book[:] = book[0]
    elif kind == "mixed_scale":
        book *= 10.0 ** rng.uniform(-3, 3, (codes, 1))
    x = rng.standard_normal((rows, dim))
    if kind in ("near_codes", "near_duplicates"):
        x = book[rng.integers(0, codes, rows)] + rng.standard_normal((rows, dim)) * 10.0 ** draw(st.integers(-8, 0))
    scale = 2.0**exponent
    return torch.tensor(x * scale, dtype=torch.float32), torch.tensor(book * scale, dtype=torch.float32), False


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # the fixture only sets constants
@given(search_cases())
def test_screened_search_gives_the_exact_answer(small_blocks, case):
    x, book, exact_ties = case
    _assert_same_answer(x, book, exact_ties)


def test_duplicate_codes_resolve_to_the_lowest_index(small_blocks):
    rng = np.random.default_rng(0)
    book = torch.tensor(rng.standard_normal((30, 16)), dtype=torch.float32)
    book[[5, 11, 29]] = book[20].clone()
    x = book[[20, 20]] + 1e-3
    idx, _ = screened_search(x, book)
    assert idx.tolist() == [5, 5]


def test_rows_without_a_finite_distance_are_searched_in_full(small_blocks):
    rng = np.random.default_rng(1)
    book = torch.tensor(rng.standard_normal((20, 8)), dtype=torch.float32)
    x = torch.tensor(rng.standard_normal((4, 8)), dtype=torch.float32)
    x[1, 3] = float("nan")
    x[2, 0] = float("inf")
    want_idx, want_dist = exact_search(x, book)
    got_idx, got_dist = screened_search(x, book)
    assert torch.equal(got_idx, want_idx)
    torch.testing.assert_close(got_dist, want_dist, equal_nan=True)


def test_rows_with_too_many_candidates_fall_back_to_the_full_search(monkeypatch):
    calls = []
    real = search.exact_search

    def counting(x, book):
        calls.append(x.shape[0])
        return real(x, book)

    monkeypatch.setattr(search, "exact_search", counting)
    book = torch.ones(64, 32) + torch.randn(64, 32) * 1e-6  # every code within the bound of every other
    x = torch.randn(3, 32)
    idx, _ = screened_search(x, book)
    assert calls == [3]
    assert torch.equal(idx, real(x, book)[0])


def test_the_screen_scores_few_codes_in_fp32_on_separated_codes(monkeypatch):
    """The point of the screen: on a released-width book with queries near their codes, a handful of fp32
    re-scores per row instead of 2048."""
    widths = []
    real = search._rescore

    def recording(x, book, book_square, picked):
        widths.append(picked.shape[1])
        return real(x, book, book_square, picked)

    monkeypatch.setattr(search, "_rescore", recording)
    generator = torch.Generator().manual_seed(0)
    book = torch.randn(2048, 3072, generator=generator)
    x = book[:40] + 0.5 * torch.randn(40, 3072, generator=generator)
    idx, _ = screened_search(x, book)
    assert torch.equal(idx, torch.arange(40))
    assert widths and max(widths) <= 16


def test_nearest_codes_keeps_small_searches_exact(monkeypatch):
    monkeypatch.setattr(search, "screened_search", lambda *a: pytest.fail("screened a small search"))
    book = torch.randn(16, 8)
    idx, dist = nearest_codes(book[[3, 7]] * 1.001, book)
    assert idx.tolist() == [3, 7]
    assert dist.shape == (2,)


def test_screen_decision_is_measured_once_per_thread_count(monkeypatch):
    measured = []
    monkeypatch.setattr(search, "_screen_fast", {})
    monkeypatch.setattr(search, "_measure_bf16_speedup", lambda: measured.append(1) or 3.0)
    assert search.bf16_products_are_fast(torch.device("cpu"))
    assert search.bf16_products_are_fast(torch.device("cpu"))
    assert measured == [1]
    assert not search.bf16_products_are_fast(torch.device("meta"))


def test_a_quantizer_can_turn_the_screen_off(monkeypatch):
    from mtv_pack.mtv_core.tokenizer.testing import tiny_model

    model = tiny_model()
    monkeypatch.setattr(search, "screened_search", lambda *a: pytest.fail("screened although turned off"))
    monkeypatch.setattr(search, "SCREEN_MIN_MACS", 0)
    monkeypatch.setattr(search, "bf16_products_are_fast", lambda device: True)
    model.vq.screen = False
    idx, _ = model.vq.nearest(model.vq.codebook[[2, 5]] * 1.001)
    assert idx.tolist() == [2, 5]
