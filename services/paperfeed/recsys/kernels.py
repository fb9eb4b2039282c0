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
def visible_union(
    parts: IntArray, hidden: IntArray, size: int
) -> IntArray:  # pragma: no cover - compiled
    """The distinct positions of ``parts`` but those in ``hidden`` (all within
    ``size``), in the order first met (``np.sort`` them for ``np.unique``'s order): one
    mark a position instead of a sort of every part and a set test. No sort in here:
    numba's sort, cached on disk in two kernels compiled by different processes, gave
    wrong orders when both were loaded into one (a full test run caught it): numba names
    a kernel's inner functions with a per-process counter, so two cache files can hold
    different functions under one symbol (numba/numba#10486). Only one cached kernel
    may sort (``itemknn._top``)."""
    mark = np.zeros(size, dtype=np.uint8)
    for i in range(parts.shape[0]):
        mark[parts[i]] = 1
    for i in range(hidden.shape[0]):
        mark[hidden[i]] = 0
    out = np.empty(parts.shape[0], dtype=np.int64)
    n = 0
    for i in range(parts.shape[0]):
        position = parts[i]
        if mark[position] == 1:
            mark[position] = 2
            out[n] = position
            n += 1
    return out[:n]


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
