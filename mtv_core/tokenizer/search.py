"""Exact nearest-code search for the 4DMoT quantizer, with an optional bf16 screen on CPU.

The code of a vector ``x`` (code_dim,) is the argmin over codes ``c`` of upstream's fp32 squared distance
``||x||^2 - 2 x.c + ||c||^2``. Searching the released codebook (8192 x 3072) costs rows x 8192 x 3072
multiply-adds: at 49 frames (312 rows) about as much as the whole encoder.

Where bf16 products are much faster than fp32 ones (CPUs with AVX-512 BF16 or AMX), the search first scores
every code with one bf16 matrix product, keeps for each row the codes that a rigorous bound on that product's
error cannot rule out, and scores those again in fp32 with upstream's formula. The screen only decides which codes
are scored in fp32, never which one wins: the answer is the full search's, up to fp32 rounding between codes
whose distances differ by less than it (exact ties still go to the lowest index). Rows whose candidates are too
many (a degenerate codebook) or not finite are searched in full.

Layouts: ``vectors`` (N, D), ``codebook`` (K, D), both fp32; indices (N,) int64, squared distances (N,) fp32.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Rows of the fp32 distance matrix computed at once by the exact search (bounds the (rows, K) temporary).
ROWS_PER_BLOCK = 2048
# Screening pays off once the product is this large (rows x codes x dim multiply-adds).
SCREEN_MIN_MACS = 50_000_000
# A row with more candidates than this fraction of the codebook is searched exactly in full instead.
MAX_CANDIDATE_FRACTION = 1 / 16
# Codes converted to bf16 and screened at once (a block stays in cache).
SCREEN_CODES_PER_BLOCK = 512
# Bytes of gathered candidate codes held at once while re-scoring.
RESCORE_BLOCK_BYTES = 2 * 2**20

_FP32_UNIT = 2.0**-24  # unit roundoff of float32
_BF16_UNIT = 2.0**-9  # unit roundoff of bfloat16 (8 significant bits, round to nearest even)
_HEADROOM = 1.25  # on top of a worst-case bound

_screen_fast: dict[str, bool] = {}


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor, screen: bool | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N,) of the nearest codes to ``vectors`` (N, D) and their fp32 squared distances (N,).

    ``screen``: use the bf16 screen (True), never (False), or where it is measured to be faster (None).
    Ties go to the lowest code index, as ``torch.min`` does in the full search.
    """
    x = vectors.float()
    book = codebook.float()
    if screen is None:
        macs = x.shape[0] * book.shape[0] * book.shape[1]
        screen = macs >= SCREEN_MIN_MACS and bf16_products_are_fast(x.device)
    if not screen or x.shape[0] == 0:
        return exact_search(x, book)
    return screened_search(x, book)


def exact_search(x: torch.Tensor, book: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Full fp32 search with upstream's formula, ``ROWS_PER_BLOCK`` rows at a time."""
    idx_out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist_out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    norms = book.square().sum(dim=1)
    for start in range(0, x.shape[0], ROWS_PER_BLOCK):
        rows = x[start : start + ROWS_PER_BLOCK]
        dist = F.linear(rows, book).mul_(-2.0)
        dist.add_(rows.square().sum(dim=1, keepdim=True)).add_(norms)
        best, idx = dist.min(dim=1)
        idx_out[start : start + rows.shape[0]] = idx
        dist_out[start : start + rows.shape[0]] = best
    return idx_out, dist_out


def screened_search(x: torch.Tensor, book: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact search's answer (up to fp32 rounding ties), with a bf16 screen deciding which codes are scored
    in fp32.

    Per row x and code c, with D = code_dim, u = 2^-9 (bf16) and e = 2^-24 (fp32) unit roundoffs, g = D e / (1 - D e)
    and S = sum |x_i c_i| <= ||x|| ||c||: the bf16 product p of the rounded operands, accumulated in fp32 and
    rounded to bf16, is within ``(2u + u^2 + g (1 + u)^2) S + u (1 + u) |p|`` of x.c. The screen's distance
    ``a = s_c - 2p`` (s_c the fp32 sum of c_i^2, within ``g ||c||^2``) is thus within a known
    ``slack`` of the real ``||c||^2 - 2 x.c``, and so is any fp32 evaluation of upstream's formula (less the row
    constant ||x||^2, common to every code of the row): ``g (2S + ||c||^2) + 2e (||x||^2 + 2|x.c| + ||c||^2)``.
    A code is a candidate when ``a - slack`` does not exceed the smallest ``a + slack`` of its row; the code that
    wins the fp32 search is always a candidate. 25 % headroom is added to the bound.
    """
    n = x.shape[0]
    idx_out = torch.empty(n, dtype=torch.long, device=x.device)
    dist_out = torch.empty(n, dtype=torch.float32, device=x.device)
    book_norm = torch.linalg.vector_norm(book, dim=1)  # (K,)
    for start in range(0, n, ROWS_PER_BLOCK):
        rows = x[start : start + ROWS_PER_BLOCK]
        idx, dist = _screened_block(rows, book, book_norm)
        idx_out[start : start + rows.shape[0]] = idx
        dist_out[start : start + rows.shape[0]] = dist
    return idx_out, dist_out


def _screened_block(x: torch.Tensor, book: torch.Tensor, book_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, dim = x.shape
    codes = book.shape[0]
    u, e, tiny = _BF16_UNIT, _FP32_UNIT, torch.finfo(torch.float32).tiny
    g = dim * e / (1 - dim * e)
    # slack = k_outer ||x|| ||c|| + k_p |p| + k_c ||c||^2 + 2e ||x||^2 + flushed subnormals (D tiny (||x|| + ||c||))
    k_outer = (2 * (2 * u + u * u + g * (1 + u) ** 2) + 2 * g) * _HEADROOM
    k_p = (2 * u * (1 + u) + 4 * e) * (1 + u) * _HEADROOM
    k_c = (2 * g + 5 * e) * _HEADROOM
    x_norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)  # (n, 1)
    col = book_norm.square() * k_c + book_norm * (dim * tiny * _HEADROOM)  # (K,)
    c_square = torch.empty(codes, dtype=torch.float32, device=x.device)  # sum of c_i^2, as the full search
    row = x_norm.square() * (2 * e * _HEADROOM) + x_norm * (dim * tiny * _HEADROOM)  # (n, 1)
    x16 = x.bfloat16()
    lower = torch.empty(n, codes, dtype=torch.float32, device=x.device)  # approx - slack, less the row terms
    upper = torch.full((n, 1), torch.inf, dtype=torch.float32, device=x.device)  # min of approx + slack
    # codes in blocks: each block is converted to bf16 and screened while it is in cache
    for k0 in range(0, codes, SCREEN_CODES_PER_BLOCK):
        k1 = min(codes, k0 + SCREEN_CODES_PER_BLOCK)
        block = book[k0:k1]
        torch.sum(block.square(), dim=1, out=c_square[k0:k1])
        products = F.linear(x16, block.bfloat16()).float()  # (n, b)
        slack = torch.addcmul(col[k0:k1], x_norm, book_norm[k0:k1], value=k_outer)
        slack.add_(products.abs().mul_(k_p))
        approx = products.mul_(-2.0).add_(c_square[k0:k1])  # ||c||^2 - 2p, without ||x||^2
        torch.minimum(upper, (approx + slack).amin(dim=1, keepdim=True), out=upper)
        torch.sub(approx, slack, out=lower[:, k0:k1])
    # candidates: lower - row <= upper + row; NaN/inf rows have none
    candidates = lower <= upper.add_(row, alpha=2.0)
    del lower
    counts = candidates.sum(dim=1)
    limit = max(1, int(codes * MAX_CANDIDATE_FRACTION))
    full = (counts > limit) | (counts == 0)
    idx_out = torch.empty(n, dtype=torch.long, device=x.device)
    dist_out = torch.empty(n, dtype=torch.float32, device=x.device)
    if bool(full.any()):
        rows = full.nonzero().squeeze(1)
        logger.debug("codebook screen: %d of %d rows searched in full", rows.numel(), n)
        idx_out[rows], dist_out[rows] = exact_search(x[rows], book)
    keep = (~full).nonzero().squeeze(1)
    if keep.numel():
        every = keep.numel() == n
        flags = (candidates if every else candidates[keep]).view(torch.uint8)
        width = int(counts.max() if every else counts[keep].max())
        # the `width` largest flags of a row hold all its candidates (and, in shorter rows, a few codes the
        # bound rules out, which cannot win); scored in index order, so the first minimum is the lowest index
        picked = flags.topk(width, dim=1).indices.sort(dim=1).values  # (m, width)
        idx_out[keep], dist_out[keep] = _rescore(x if every else x[keep], book, c_square, picked)
    return idx_out, dist_out


def _rescore(x: torch.Tensor, book: torch.Tensor, book_square: torch.Tensor, picked: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Upstream's fp32 distance ``||x||^2 - 2 x.c + ||c||^2`` from each row of ``x`` (m, D) to its codes ``picked``
    (m, W), given the codes' squared norms ``book_square`` (K,); the nearest code and its distance.

    Rows go in blocks whose gathered codes stay in cache (``RESCORE_BLOCK_BYTES``)."""
    m, width = picked.shape
    dim = book.shape[1]
    rows_per_block = max(1, RESCORE_BLOCK_BYTES // (width * dim * 4))
    idx_out = torch.empty(m, dtype=torch.long, device=x.device)
    dist_out = torch.empty(m, dtype=torch.float32, device=x.device)
    x_square = torch.linalg.vecdot(x, x)  # (m,)
    for start in range(0, m, rows_per_block):
        stop = min(m, start + rows_per_block)
        pick = picked[start:stop]  # (b, W)
        codes = book.index_select(0, pick.reshape(-1)).view(stop - start, width, dim)  # (b, W, D)
        products = torch.linalg.vecdot(codes, x[start:stop].unsqueeze(1))  # (b, W)
        dist = (x_square[start:stop].unsqueeze(1) - 2.0 * products) + book_square[pick]
        best, where = dist.min(dim=1)
        idx_out[start:stop] = pick.gather(1, where.unsqueeze(1)).squeeze(1)
        dist_out[start:stop] = best
    return idx_out, dist_out


def bf16_products_are_fast(device: torch.device) -> bool:
    """Whether a bf16 matrix product runs at least twice as fast as the fp32 one on ``device`` (CPU only; measured
    once per process on a small product, about 20 ms)."""
    if device.type != "cpu":
        return False
    key = f"{device.type}:{torch.get_num_threads()}"
    if key not in _screen_fast:
        _screen_fast[key] = _measure_bf16_speedup() >= 2.0
        logger.debug("bf16 codebook screen %s", "on" if _screen_fast[key] else "off")
    return _screen_fast[key]


def _measure_bf16_speedup() -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(256, 1024, generator=generator)
    b = torch.randn(1024, 1024, generator=generator)

    def best_of(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    fp32 = best_of(lambda: F.linear(a, b))
    a16, b16 = a.bfloat16(), b.bfloat16()
    bf16 = best_of(lambda: F.linear(a16, b16))
    return fp32 / bf16 if bf16 > 0 and math.isfinite(bf16) else 0.0
