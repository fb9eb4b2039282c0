"""The feed's inner loops, compiled (numba, ``nogil``): one reader's ranking touches a few
hundred thousand sparse entries, which scipy would reach through a dozen small matrices
built per request (each costing more than its arithmetic, all of it under the GIL).

Each kernel computes exactly what the scipy or numpy expression it replaces computes,
in the same order of additions, in float32 where that is float32: the feed ranks the
same papers with the same scores as the reference pipeline (``tests/test_kernels.py``
holds them together on real and synthetic data). Dense products (a reader's vector
against the pool's factors) stay in BLAS, which releases the GIL too.

Compiled on first use and cached on disk (``NUMBA_CACHE_DIR``, else beside this file;
the container image points it at ``/tmp``); ``warm_up`` compiles them all, which an api
process does in the background when it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Indexes = npt.NDArray[np.integer[Any]]
"""scipy's index arrays: int32, or int64 for very large matrices."""

Kernel = TypeVar("Kernel", bound=Callable[..., Any])


def jit(function: Kernel) -> Kernel:
    """``numba.njit`` without the GIL, cached on disk where numba can write (a process
    whose every cache directory is read-only compiles the kernels itself, once)."""
    try:
        return cast(Kernel, numba.njit(nogil=True, cache=True)(function))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast(Kernel, numba.njit(nogil=True)(function))


@jit
def postings_scores(
    indptr: Indexes,
    indices: Indexes,
    data: FloatArray,
    terms: IntArray,
    weights: FloatArray,
    size: int,
) -> FloatArray:  # pragma: no cover - compiled
    """``weights @ by_term[terms]`` for a CSR ``by_term`` (terms, papers): each paper's
    sum of its terms' postings times the weights, term after term (scipy's order)."""
    out = np.zeros(size, dtype=np.float32)
    for t in range(terms.shape[0]):
        weight = weights[t]
        term = terms[t]
        for j in range(indptr[term], indptr[term + 1]):
            out[indices[j]] += data[j] * weight
    return out


@jit
def rows_dot(
    indptr: Indexes, indices: Indexes, data: FloatArray, rows: IntArray, dense: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """``matrix[rows] @ dense`` for a CSR ``matrix``: each row's entries in order."""
    out = np.empty(rows.shape[0], dtype=np.float32)
    for r in range(rows.shape[0]):
        row = rows[r]
        total = np.float32(0.0)
        for j in range(indptr[row], indptr[row + 1]):
            total += data[j] * dense[indices[j]]
        out[r] = total
    return out


@jit
def row_pairs_dot(
    indptr: Indexes,
    indices: Indexes,
    data: FloatArray,
    left: IntArray,
    right: IntArray,
    n_terms: int,
) -> FloatArray:  # pragma: no cover - compiled
    """``matrix[left] @ matrix[right].T`` (dense, float32) for a CSR ``matrix``, summed in
    the order scipy's sparse product sums: along each left row's entries, and for each
    of its terms along the right rows that have it, in their order."""
    # The right rows transposed: for each term, the right rows holding it, in order.
    counts = np.zeros(n_terms + 1, dtype=np.int64)
    for r in range(right.shape[0]):
        row = right[r]
        for j in range(indptr[row], indptr[row + 1]):
            counts[indices[j] + 1] += 1
    starts = np.cumsum(counts)
    fill = starts[:-1].copy()
    owners = np.empty(starts[-1], dtype=np.int64)
    values = np.empty(starts[-1], dtype=np.float32)
    for r in range(right.shape[0]):
        row = right[r]
        for j in range(indptr[row], indptr[row + 1]):
            term = indices[j]
            owners[fill[term]] = r
            values[fill[term]] = data[j]
            fill[term] += 1
    out = np.zeros((left.shape[0], right.shape[0]), dtype=np.float32)
    for i in range(left.shape[0]):
        row = left[i]
        for j in range(indptr[row], indptr[row + 1]):
            term = indices[j]
            value = data[j]
            for e in range(starts[term], starts[term + 1]):
                out[i, owners[e]] += value * values[e]
    return out


@jit
def _mark(positions: IntArray, mark: npt.NDArray[np.uint8], value: int) -> None:  # pragma: no cover
    """``mark[positions] = value``, positions outside ``mark`` left out (never written past
    it: numba checks no bounds; a trending snapshot of another index, mid-swap, holds
    such positions)."""
    for i in range(positions.shape[0]):
        if 0 <= positions[i] < mark.shape[0]:
            mark[positions[i]] = value


@jit
def _marked(mark: npt.NDArray[np.uint8]) -> IntArray:  # pragma: no cover - compiled
    """The positions ``mark`` holds (non-zero), ascending: a scan of the marks, no sort."""
    count = 0
    for position in range(mark.shape[0]):
        count += mark[position] != 0
    out = np.empty(count, dtype=np.int64)
    n = 0
    for position in range(mark.shape[0]):
        if mark[position]:
            out[n] = position
            n += 1
    return out


@jit
def visible_union(
    parts: IntArray, hidden: IntArray, size: int
) -> IntArray:  # pragma: no cover - compiled
    """The distinct positions of ``parts`` but those in ``hidden`` (within ``size``),
    ascending (``np.unique``'s order): one mark a position instead of a sort of every
    part and a set test. No sort in here: numba's sort, cached on disk in two kernels
    compiled by different processes, gave wrong orders when both were loaded into one (a
    full test run caught it): numba names a kernel's inner functions with a per-process
    counter, so two cache files can hold different functions under one symbol
    (numba/numba#10486). Only one cached kernel may sort (``itemknn._top``)."""
    mark = np.zeros(size, dtype=np.uint8)
    _mark(parts, mark, 1)
    _mark(hidden, mark, 0)
    return _marked(mark)


@jit
def weighted_terms(
    indptr: Indexes,
    indices: Indexes,
    data: FloatArray,
    rows: IntArray,
    weights: FloatArray,
    n_terms: int,
) -> tuple[IntArray, npt.NDArray[np.float64]]:  # pragma: no cover - compiled
    """The distinct terms of ``rows`` of a CSR ``matrix`` (in the order first met) and
    the dense sums (``n_terms``) of each term over the rows of their entry times the
    row's weight: the product in float32, summed in float64 along the rows' entries in
    order, as ``np.unique`` with ``np.bincount`` sum them (``content.reader_profile``;
    the caller sorts the terms: no sort in a cached kernel, ``visible_union`` says why)."""
    sums = np.zeros(n_terms, dtype=np.float64)
    seen = np.zeros(n_terms, dtype=np.bool_)
    entries = 0
    for r in range(rows.shape[0]):
        entries += indptr[rows[r] + 1] - indptr[rows[r]]
    touched = np.empty(min(entries, n_terms), dtype=np.int64)
    n = 0
    for r in range(rows.shape[0]):
        row = rows[r]
        weight = weights[r]
        for j in range(indptr[row], indptr[row + 1]):
            term = indices[j]
            sums[term] += np.float64(data[j] * weight)
            if not seen[term]:
                seen[term] = True
                touched[n] = term
                n += 1
    return touched[:n], sums


@jit
def rows_sum(
    indptr: Indexes, indices: Indexes, data: FloatArray, rows: IntArray, size: int
) -> FloatArray:  # pragma: no cover - compiled
    """``ones(rows) @ matrix`` (dense, ``size``) for a CSR ``matrix``: the sum of its
    ``rows``, row after row and each row's entries in order (scipy's sparse product adds
    them so, in float32): a reader's item-kNN scores from their history's neighbour
    lists."""
    out = np.zeros(size, dtype=np.float32)
    for r in range(rows.shape[0]):
        row = rows[r]
        for j in range(indptr[row], indptr[row + 1]):
            out[indices[j]] += data[j]
    return out


@jit
def _block_sum(values: FloatArray, start: int, n: int) -> np.float32:  # pragma: no cover
    """numpy's float32 sum of at most 128 values: eight accumulators, then the rest."""
    if n < 8:
        total = np.float32(0.0)
        for i in range(start, start + n):
            total += values[i]
        return total
    r0, r1, r2, r3 = values[start], values[start + 1], values[start + 2], values[start + 3]
    r4, r5, r6, r7 = values[start + 4], values[start + 5], values[start + 6], values[start + 7]
    i = 8
    while i < n - (n % 8):
        at = start + i
        r0 += values[at]
        r1 += values[at + 1]
        r2 += values[at + 2]
        r3 += values[at + 3]
        r4 += values[at + 4]
        r5 += values[at + 5]
        r6 += values[at + 6]
        r7 += values[at + 7]
        i += 8
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        total += values[start + i]
        i += 1
    return np.float32(total)


@jit
def _sum(values: FloatArray) -> np.float32:  # pragma: no cover - compiled
    """numpy's float32 sum of ``values``: pairwise, halves (rounded down to a multiple
    of 8) until a block of at most 128 (``pairwise_sum`` in numpy's ``loops_utils.h``),
    so that a mean or a spread computed here is numpy's to the last bit. numpy recurses;
    this walks the same tree with a stack (a recursive kernel read back from numba's
    disk cache crashed the process)."""
    depth = 64
    starts = np.empty(depth, dtype=np.int64)
    sizes = np.empty(depth, dtype=np.int64)
    visits = np.zeros(depth, dtype=np.int64)
    sums = np.empty(depth, dtype=np.float32)
    top = 0
    starts[0], sizes[0], visits[0] = 0, values.shape[0], 0
    kept = 0  # values on the ``sums`` stack
    while top >= 0:
        start, n = starts[top], sizes[top]
        if n <= 128:
            sums[kept] = _block_sum(values, start, n)
            kept += 1
            top -= 1
            continue
        half = n // 2
        half -= half % 8
        if visits[top] == 0:  # the left half first
            visits[top] = 1
            top += 1
            starts[top], sizes[top], visits[top] = start, half, 0
        elif visits[top] == 1:  # then the right half
            visits[top] = 2
            top += 1
            starts[top], sizes[top], visits[top] = start + half, n - half, 0
        else:  # both done: left + right
            kept -= 1
            sums[kept - 1] = sums[kept - 1] + sums[kept]
            top -= 1
    return np.float32(sums[0])


@jit
def _spread(
    values: FloatArray, over: npt.NDArray[np.bool_], out: FloatArray
) -> np.float32:  # pragma: no cover - compiled
    """``out`` = ``values`` less their mean over the entries ``over`` (0 elsewhere);
    returns their standard deviation: numpy's ``mean`` and ``std`` in float32, the
    entries not ``over`` counted as 0 in the sums and not at all in the count
    (``ranker.standardize_over``; all ``over``: ``ranker.standardize``)."""
    n = values.shape[0]
    count = 0
    for i in range(n):
        if over[i]:
            count += 1
            out[i] = values[i]
        else:
            out[i] = 0
    count = max(count, 1)
    mean = _sum(out) / np.float32(count)
    squares = np.empty(n, dtype=np.float32)
    for i in range(n):
        centred = values[i] - mean if over[i] else np.float32(0.0)
        out[i] = centred
        squares[i] = centred * centred
    return np.float32(np.sqrt(_sum(squares) / np.float32(count)))


@jit
def _standardized(
    values: FloatArray, over: npt.NDArray[np.bool_], out: FloatArray
) -> FloatArray:  # pragma: no cover - compiled
    """``ranker.standardize_over`` (``ranker.standardize`` when all are ``over``)."""
    std = _spread(values, over, out)
    floor = np.float32(1e-9)
    for i in range(values.shape[0]):
        out[i] = out[i] / max(std, floor) if over[i] and std > floor else np.float32(0.0)
    return out


@jit
def candidate_ages(
    dates: npt.NDArray[np.float64],
    positions: IntArray,
    trending: FloatArray,
    median: np.float32,
    now: float,
    fresh_days: np.float32,
) -> tuple[FloatArray, npt.NDArray[np.bool_], FloatArray, FloatArray]:  # pragma: no cover
    """For the candidates at ``positions``: their age in days, whether it is at most
    ``fresh_days``, their ``trending`` raised to ``median`` when fresh, and minus half
    their age (the exponent of the fresh boost) — ``feed.scores``' numpy, bit for bit."""
    n = positions.shape[0]
    ages = np.empty(n, dtype=np.float32)
    fresh = np.empty(n, dtype=np.bool_)
    raised = np.empty(n, dtype=np.float32)
    halved = np.empty(n, dtype=np.float32)
    for i in range(n):
        age = np.float32(max(0.0, (now - dates[positions[i]]) / 86_400.0))
        ages[i] = age
        fresh[i] = age <= fresh_days
        raised[i] = max(trending[i], median) if fresh[i] else trending[i]
        halved[i] = -age / np.float32(2.0)
    return ages, fresh, raised, halved


@jit
def blend_scores(
    cf: FloatArray,
    content: FloatArray,
    trend_log: FloatArray,
    itemknn: FloatArray,
    follow: FloatArray,
    cold: npt.NDArray[np.bool_],
    fresh: npt.NDArray[np.bool_],
    powers: FloatArray,
    lift: npt.NDArray[np.float64],
    shown: FloatArray,
    collaborative: bool,
    weights: FloatArray,
    penalty: np.float32,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:  # pragma: no cover
    """One reader's ``ranker.blend`` over their candidates and then ``feed.scores``'
    rules, in one pass of numpy's float32 arithmetic (bit for bit: the same operations
    in the same order and precision, numpy's pairwise sums): returns the final scores
    and the standardised collaborative, content, trending and item-kNN signals.

    ``weights``: cold_cf, content, trending (with the tie break), item-kNN (0: off) and
    follow (0: off) weights and the fresh boost, as float32; ``powers``: 2 to the minus
    half age of each (the fresh boost's decay, for the ``fresh`` ones); ``lift``: the
    prior lift of followed papers when the blend has no follow weight (then the rules
    are in float64, as numpy promotes them), else empty; ``shown``: times only shown."""
    n = cf.shape[0]
    everywhere = np.ones(n, dtype=np.bool_)
    cf_z = np.zeros(n, dtype=np.float32)
    if collaborative:
        _standardized(cf, everywhere, cf_z)
    cold_cf = weights[0]
    for i in range(n):
        if cold[i]:
            cf_z[i] = cold_cf * cf_z[i]
    content_z = _standardized(content, everywhere, np.empty(n, dtype=np.float32))
    trend_z = _standardized(trend_log, everywhere, np.empty(n, dtype=np.float32))
    w_content, w_trend, w_knn, w_follow = weights[1], weights[2], weights[3], weights[4]
    blended = np.empty(n, dtype=np.float32)
    for i in range(n):
        blended[i] = (cf_z[i] + w_content * content_z[i]) + w_trend * trend_z[i]
    knn_z = np.zeros(n, dtype=np.float32)
    if w_knn != 0:
        _standardized(itemknn, ~cold, knn_z)
        for i in range(n):
            blended[i] = blended[i] + w_knn * knn_z[i]
    if w_follow != 0:
        follow_z = _standardized(follow, everywhere, np.empty(n, dtype=np.float32))
        for i in range(n):
            blended[i] = blended[i] + w_follow * follow_z[i]
    # The rules are in units of the blend's spread (numpy's std, then a Python float).
    spread = 1.0
    if n > 1:
        spread = float(_spread(blended, everywhere, np.empty(n, dtype=np.float32)))
        spread = spread if spread > 1e-6 else 1.0
    boost = np.zeros(n, dtype=np.float32)
    for i in range(n):
        if fresh[i]:
            boost[i] = weights[5] * powers[i]
    final = np.empty(n, dtype=np.float32)
    if lift.shape[0]:
        for i in range(n):
            rule = (np.float64(boost[i]) + lift[i]) - np.float64(penalty * shown[i])
            final[i] = np.float32(np.float64(blended[i]) + spread * rule)
    else:
        spread32 = np.float32(spread)
        for i in range(n):
            final[i] = blended[i] + spread32 * (boost[i] - penalty * shown[i])
    return final, cf_z, content_z, trend_z, knn_z


@jit
def shown_times(
    shown: IntArray, times: FloatArray, positions: IntArray
) -> FloatArray:  # pragma: no cover - compiled
    """How many times each of ``positions`` is in ``shown`` (sorted) with its ``times``
    (``feed.times_shown``: a binary search each)."""
    out = np.zeros(positions.shape[0], dtype=np.float32)
    if shown.shape[0] == 0:
        return out
    for i in range(positions.shape[0]):
        low, high = 0, shown.shape[0]
        while low < high:
            middle = (low + high) // 2
            if shown[middle] < positions[i]:
                low = middle + 1
            else:
                high = middle
        at = min(low, shown.shape[0] - 1)
        if shown[at] == positions[i]:
            out[i] = times[at]
    return out


@jit
def _nth_largest(scores: FloatArray, n: int) -> np.float32:  # pragma: no cover - compiled
    """The ``n``-th largest of ``scores`` (repeats counted): the smallest of a heap of the
    ``n`` largest met so far. NaN counts as the smallest of all, as numpy's partition
    places it (NaN when fewer than ``n`` are numbers: then nothing is above or equal)."""
    heap = np.empty(n, dtype=np.float32)
    size = 0
    for value in scores:
        if np.isnan(value):
            continue
        if size < n:  # push, sift up
            at = size
            size += 1
            while at > 0 and heap[(at - 1) // 2] > value:
                heap[at] = heap[(at - 1) // 2]
                at = (at - 1) // 2
            heap[at] = value
        elif value > heap[0]:  # replace the smallest, sift down
            at = 0
            while True:
                child = 2 * at + 1
                if child >= n:
                    break
                if child + 1 < n and heap[child + 1] < heap[child]:
                    child += 1
                if heap[child] >= value:
                    break
                heap[at] = heap[child]
                at = child
            heap[at] = value
    return np.float32(heap[0]) if size == n else np.float32(np.nan)


@jit
def _mark_best(
    scores: FloatArray, n: int, pool: IntArray, positive_only: bool, mark: npt.NDArray[np.uint8]
) -> None:  # pragma: no cover - compiled
    """Marks (1) the pool positions of the ``n`` highest ``scores`` (``feed.best``: ties
    broken by the lower index; ``positive_only``: only those above 0 among them)."""
    if scores.shape[0] <= n:
        for i in range(scores.shape[0]):
            if not positive_only or scores[i] > 0:
                mark[pool[i]] = 1
        return
    threshold = _nth_largest(scores, n)
    above = 0
    for i in range(scores.shape[0]):
        if scores[i] > threshold:
            above += 1
    ties = n - above
    for i in range(scores.shape[0]):
        value = scores[i]
        take = value > threshold
        if not take and value == threshold and ties > 0:
            ties -= 1
            take = True
        if take and (not positive_only or value > 0):
            mark[pool[i]] = 1


@jit
def candidate_union(
    fixed: IntArray,
    pool: IntArray,
    by_vector: FloatArray,
    indptr: Indexes,
    indices: Indexes,
    data: FloatArray,
    terms: IntArray,
    weights: FloatArray,
    knn: FloatArray,
    model_rows: IntArray,
    hidden: IntArray,
    size: int,
    n_best: int,
) -> IntArray:  # pragma: no cover - compiled
    """``feed.candidates`` in one pass: the ``fixed`` positions (trending, newest,
    followed), and among the ``pool`` the ``n_best`` by the reader's vector
    (``by_vector``: the pool's scores; empty: none), by their text profile (``terms``
    and ``weights`` over the pool's postings; empty: none) and by item-kNN (``knn``, by
    model row, read with theirs only; empty: none), but the ``hidden`` positions,
    ascending (``visible_union``, with the pool's picks marked too)."""
    mark = np.zeros(size, dtype=np.uint8)
    _mark(fixed, mark, 1)
    if pool.shape[0]:
        if by_vector.shape[0]:
            _mark_best(by_vector, n_best, pool, False, mark)
        if terms.shape[0]:
            by_text = postings_scores(indptr, indices, data, terms, weights, pool.shape[0])
            _mark_best(by_text, n_best, pool, False, mark)
        if knn.shape[0]:
            by_knn = np.empty(pool.shape[0], dtype=np.float32)
            for i in range(pool.shape[0]):
                row = model_rows[pool[i]]
                by_knn[i] = knn[row] if row >= 0 else np.float32(0.0)
            _mark_best(by_knn, n_best, pool, True, mark)
    _mark(hidden, mark, 0)
    return _marked(mark)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for the types the feed gives them:
    scipy's int32 index arrays, int64 positions, float32 values."""
    f32 = np.zeros(4, dtype=np.float32)
    i64 = np.arange(2, dtype=np.int64)
    indptr = np.array([0, 1, 2], dtype=np.int32)
    i32 = np.arange(2, dtype=np.int32)
    postings_scores(indptr, i32, f32[:2], i64, f32[:2], 4)
    rows_dot(indptr, i32, f32[:2], i64, f32)
    row_pairs_dot(indptr, i32, f32[:2], i64, i64, 2)
    visible_union(i64, i64[:1], 2)
    weighted_terms(indptr, i32, f32[:2], i64, f32[:2], 2)
    rows_sum(indptr, i32, f32[:2], i64, 4)
    flags = np.zeros(2, dtype=np.bool_)
    _, fresh, _, halved = candidate_ages(
        np.zeros(4), i64, f32[:2], np.float32(0.0), 0.0, np.float32(7.0)
    )
    weights = np.zeros(6, dtype=np.float32)
    weights.flags.writeable = False  # as ``feed.reader_weights`` shares them
    for lift in (np.zeros(0), np.zeros(2)):
        blend_scores(
            f32[:2], f32[:2], f32[:2], f32[:2], f32[:2], flags, fresh, halved, lift, f32[:2],
            True, weights, np.float32(0.25),
        )  # fmt: skip
    shown_times(i64, f32[:2], i64)
    for by_vector in (f32[:2], f32[:0]):
        candidate_union(
            i64, i64, by_vector, indptr, i32, f32[:2], i64, f32[:2], f32[:2], i64, i64[:1], 4, 1
        )
