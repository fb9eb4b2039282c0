"""The item-to-item collaborative signal: each paper's nearest papers by who read them.

ALS is one view of the co-occurrence data (a low-rank fit); item-kNN is another, closer
to the raw counts: two papers are similar when the same readers liked both. For every
paper with interactions its ``K`` nearest papers by the cosine of their reader columns
are kept (``build``, run by the trainer); a reader's score for a paper is the sum of its
similarities to the papers they liked (``scores``), a sparse gather of their history's
rows of the neighbour matrix at feed time, not a product with the whole catalog.

The matrix is binarised: a cell is 1 where the reader liked the paper (any positive
weight; dismissals are left out). The confidences ALS learns from carry the searched
``alpha`` and ``log``/``bm25`` form, fitted for ALS's loss; on the cosine they would let
one reader's many visits to a paper stand for many readers, and the lists would change
with every search. Binarised, a similarity is "how many readers liked both", normalised
by how many liked each: the plain, well-studied form.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.kernels import FloatArray, Indexes, IntArray, jit
from paperfeed.recsys.matrix import positives

NEIGHBOURS = 200
"""Neighbours kept per paper (``PAPERFEED_ITEMKNN_NEIGHBOURS``)."""
BLOCK = 2_048
"""Papers whose neighbours one kernel call finds: its output is ``BLOCK x K`` (the
memory the build holds beyond the result is a few such blocks)."""


def binarised(weights: sparse.csr_matrix) -> sparse.csr_matrix:
    """1 where a reader liked a paper (float32 CSR, sorted indices)."""
    liked = positives(weights)
    liked.data = np.ones_like(liked.data)
    liked.sort_indices()
    return liked


def build(weights: sparse.csr_matrix, k: int = NEIGHBOURS, threads: int = 0) -> sparse.csr_matrix:
    """(n_items, n_items) float32 CSR: row ``i`` holds the ``k`` papers with the highest
    cosine to ``i`` (ties: the lower index), itself left out, indices sorted.

    Computed in blocks of ``BLOCK`` papers (each paper's co-counts accumulated over its
    readers' papers: the non-zeros of XᵀX, never the dense product), ``threads`` blocks
    at a time (0: every core; the kernel releases the GIL)."""
    liked = binarised(weights)
    n_items = liked.shape[1]
    by_item = sparse.csr_matrix(liked.T)
    by_item.sort_indices()
    counts = np.diff(by_item.indptr)
    norms = np.sqrt(counts.astype(np.float32)).astype(np.float32)
    if k <= 0 or n_items == 0:
        return sparse.csr_matrix((n_items, n_items), dtype=np.float32)
    starts = list(range(0, n_items, BLOCK))

    def block(start: int) -> tuple[IntArray, IntArray, FloatArray]:
        return _block_neighbours(
            by_item.indptr, by_item.indices, liked.indptr, liked.indices, norms,
            start, min(start + BLOCK, n_items), k,
        )  # fmt: skip

    workers = threads or min(4, os.cpu_count() or 1)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(block, starts))
    else:
        parts = [block(start) for start in starts]
    lengths = np.concatenate([part[0] for part in parts])
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate([part[1] for part in parts]).astype(np.int32)
    data = np.concatenate([part[2] for part in parts])
    return sparse.csr_matrix((data, indices, indptr), shape=(n_items, n_items))


@jit
def _block_neighbours(
    item_indptr: Indexes,
    item_readers: Indexes,
    reader_indptr: Indexes,
    reader_items: Indexes,
    norms: FloatArray,
    start: int,
    stop: int,
    k: int,
) -> tuple[IntArray, IntArray, FloatArray]:  # pragma: no cover - compiled
    """The neighbours of papers ``start`` to ``stop``: (how many each, their indices,
    their cosines), rows one after the other."""
    n_items = norms.shape[0]
    co = np.zeros(n_items, dtype=np.float32)
    touched = np.empty(n_items, dtype=np.int64)
    values = np.empty(n_items, dtype=np.float32)
    lengths = np.zeros(stop - start, dtype=np.int64)
    out_indices = np.empty((stop - start) * k, dtype=np.int64)
    out_values = np.empty((stop - start) * k, dtype=np.float32)
    filled = 0
    for item in range(start, stop):
        n_touched = 0
        for r in range(item_indptr[item], item_indptr[item + 1]):
            reader = item_readers[r]
            for j in range(reader_indptr[reader], reader_indptr[reader + 1]):
                other = reader_items[j]
                if co[other] == 0:
                    touched[n_touched] = other
                    n_touched += 1
                co[other] += np.float32(1.0)
        # Cosines of the co-read papers (the paper itself left out).
        n = 0
        for t in range(n_touched):
            other = touched[t]
            if other != item:
                touched[n] = other
                values[n] = co[other] / (norms[item] * norms[other])
                n += 1
            co[other] = 0
        keep = _top(touched[:n], values[:n], k)
        for t in range(keep.shape[0]):
            out_indices[filled + t] = touched[keep[t]]
            out_values[filled + t] = values[keep[t]]
        filled += keep.shape[0]
        lengths[item - start] = keep.shape[0]
    return lengths, out_indices[:filled], out_values[:filled]


@jit
def _top(indices: IntArray, values: FloatArray, k: int) -> IntArray:  # pragma: no cover
    """Positions (into ``indices``) of the ``k`` highest ``values``, ties broken by the
    lower index, ordered by index (a CSR row's order)."""
    n = values.shape[0]
    if n <= k:
        return np.argsort(indices)
    # The k-th highest value, by quickselect on a copy (linear on average).
    work = values.copy()
    lo, hi, target = 0, n - 1, k - 1
    while lo < hi:
        pivot = work[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while work[i] > pivot:
                i += 1
            while work[j] < pivot:
                j -= 1
            if i <= j:
                work[i], work[j] = work[j], work[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    threshold = work[target]
    above = np.flatnonzero(values > threshold)
    ties = np.flatnonzero(values == threshold)
    # Ties: the lowest indices among them fill what is left.
    ties = ties[np.argsort(indices[ties])][: k - above.shape[0]]
    chosen = np.concatenate((above, ties))
    return chosen[np.argsort(indices[chosen])]


def scores(rows: sparse.csr_matrix, neighbours: sparse.csr_matrix) -> FloatArray:
    """(n_rows, n_items) each reader's item-kNN score of every paper: the sum of the
    paper's similarities to the papers the reader liked (``rows``: weights over the
    neighbour matrix's papers; liked = positive)."""
    liked = binarised(rows)
    product = sparse.csr_matrix(liked @ neighbours, dtype=np.float32)
    dense: FloatArray = np.asarray(product.toarray(), dtype=np.float32)
    return dense


def history_rows(model_rows: IntArray) -> IntArray:
    """A reader's liked papers as the neighbour matrix's rows: known ones, once each,
    ascending (the order the sparse product and the feed's kernel both add them in)."""
    rows: IntArray = np.unique(model_rows[model_rows >= 0]).astype(np.int64)
    return rows


def pair_similarity(
    neighbours: sparse.csr_matrix, left: IntArray, right: IntArray
) -> npt.NDArray[np.float32]:
    """(len(left), len(right)): the similarity of ``left[i]`` kept in the neighbour list
    of ``right[j]`` (0 where it is not among them, or ``left[i]`` is -1)."""
    out = np.zeros((len(left), len(right)), dtype=np.float32)
    indptr = neighbours.indptr
    known = right >= 0  # a paper the model does not have: no list
    rows = np.where(known, right, 0)
    starts = indptr[rows]
    lengths = np.where(known, indptr[rows + 1] - starts, 0)
    total = int(lengths.sum())
    if total == 0 or len(left) == 0:
        return out
    # The entries of the ``right`` rows, one after the other, and whose each is.
    owner = np.repeat(np.arange(len(right)), lengths)
    first = np.cumsum(lengths) - lengths
    at = np.arange(total) - np.repeat(first - starts, lengths)
    columns = neighbours.indices[at]
    order = np.argsort(left, kind="stable")
    ordered = left[order]
    found = np.minimum(np.searchsorted(ordered, columns), len(left) - 1)
    hit = ordered[found] == columns
    out[order[found[hit]], owner[hit]] = neighbours.data[at[hit]]
    return out
