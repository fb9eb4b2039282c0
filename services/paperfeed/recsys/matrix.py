"""From interaction weights to the confidence matrix ALS learns from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.events import DISMISSED

# A dismissed paper is a confident "not for me" (implicit reads negatives so).
DISMISS_WEIGHT = -1.0
# BM25's saturation and length normalisation, as implicit's examples use them.
BM25_K1 = 100.0
BM25_B = 0.8

Scaling = Literal["log", "bm25"]


def cell_weight(weight: float, flags: int) -> float:
    """What a reader's record of a paper puts in the matrix (0: leave the cell out)."""
    return DISMISS_WEIGHT if flags & DISMISSED else weight


class ConfidenceScale:
    """How interaction weights become ALS confidences; fitted on the training matrix.

    ``log``: ``alpha * log1p(w)``. ``bm25``: ``log1p(w)`` re-weighted by BM25 (papers
    many readers have count less, long histories count less per paper), scaled so its
    mean equals the ``log`` form's, times ``alpha``. Dismissals are ``-alpha`` in both.
    """

    def __init__(
        self,
        alpha: float,
        scaling: Scaling = "log",
        item_idf: npt.NDArray[np.float32] | None = None,
        mean_length: float = 1.0,
        rescale: float = 1.0,
    ) -> None:
        self.alpha = alpha
        self.scaling: Scaling = scaling
        self.item_idf = item_idf
        """BM25 idf of each training column (bm25 only)."""
        self.mean_length = mean_length
        """Mean positive papers a reader (bm25)."""
        self.rescale = rescale
        """Makes the bm25 weights' mean that of log1p (bm25)."""

    @classmethod
    def fit(cls, weights: sparse.csr_matrix, alpha: float, scaling: Scaling) -> ConfidenceScale:
        if scaling == "log":
            return cls(alpha)
        liked = _positive_log(weights)
        n_users = max(weights.shape[0], 1)
        df = np.bincount(liked.indices, minlength=weights.shape[1]).astype(np.float64)
        idf = (np.log(n_users / (1.0 + df)).clip(min=0.0) + 1.0).astype(np.float32)
        lengths = np.diff(liked.indptr).astype(np.float64)
        mean_length = float(lengths[lengths > 0].mean()) if (lengths > 0).any() else 1.0
        scale = cls(alpha, "bm25", idf, mean_length)
        raw = scale._bm25(liked)
        scale.rescale = float(liked.data.mean() / raw.data.mean()) if raw.nnz else 1.0
        return scale

    def _bm25(self, liked: sparse.csr_matrix) -> sparse.csr_matrix:
        assert self.item_idf is not None
        lengths = np.diff(liked.indptr).astype(np.float64)
        norm = 1.0 - BM25_B + BM25_B * lengths / self.mean_length
        rows = np.repeat(np.arange(liked.shape[0]), np.diff(liked.indptr))
        tf = liked.data.astype(np.float64)
        data = tf * (BM25_K1 + 1.0) / (BM25_K1 * norm[rows] + tf) * self.item_idf[liked.indices]
        out = liked.copy()
        out.data = data.astype(np.float32)
        return out

    def __call__(self, weights: sparse.csr_matrix) -> sparse.csr_matrix:
        """Confidences (same shape, float32 CSR) of interaction weights."""
        weights = sparse.csr_matrix(weights, dtype=np.float32)
        weights.sort_indices()
        positive = weights.data > 0
        scaled = np.log1p(np.maximum(weights.data, 0)).astype(np.float64)
        if self.scaling == "bm25":
            bm25 = self._bm25(_positive_log(weights))
            # Both are in CSR order: the positives of each row keep their order.
            scaled = np.zeros(weights.nnz, dtype=np.float64)
            scaled[positive] = bm25.data * self.rescale
        out = weights.copy()
        out.data = np.where(positive, self.alpha * scaled, -self.alpha).astype(np.float32)
        out.eliminate_zeros()
        return out

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        if self.item_idf is None:
            return {}
        return {
            "confidence_idf": self.item_idf,
            "confidence_stats": np.array([self.mean_length, self.rescale], dtype=np.float64),
        }

    @classmethod
    def from_arrays(
        cls, alpha: float, scaling: Scaling, arrays: dict[str, npt.NDArray[np.generic]]
    ) -> ConfidenceScale:
        if scaling == "log":
            return cls(alpha)
        mean_length, rescale = (float(v) for v in arrays["confidence_stats"])
        idf = np.asarray(arrays["confidence_idf"], dtype=np.float32)
        return cls(alpha, "bm25", idf, mean_length, rescale)


def _positive_log(weights: sparse.csr_matrix) -> sparse.csr_matrix:
    out = sparse.csr_matrix(weights, dtype=np.float32, copy=True)
    out.data = np.where(out.data > 0, np.log1p(np.maximum(out.data, 0)), 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def confidence(weights: sparse.csr_matrix, alpha: float) -> sparse.csr_matrix:
    """``alpha * log1p(w)`` for positive weights, ``-alpha`` for dismissals (w < 0)."""
    return ConfidenceScale(alpha=alpha)(weights)


def positives(weights: sparse.csr_matrix) -> sparse.csr_matrix:
    """The positive cells of ``weights`` (dismissals dropped), float32 CSR."""
    out = sparse.csr_matrix(weights, dtype=np.float32, copy=True)
    out.data = np.maximum(out.data, 0)
    out.eliminate_zeros()
    return out


def drop_cells(weights: sparse.csr_matrix, drop: sparse.csr_matrix) -> sparse.csr_matrix:
    """``weights`` without the cells where ``drop`` is non-zero (same shape)."""
    keep = sparse.csr_matrix(weights, dtype=np.float32, copy=True)
    rows, cols = drop.nonzero()
    if len(rows) == 0:
        return keep
    mask = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=weights.shape
    )
    keep = sparse.csr_matrix(keep - keep.multiply(mask), dtype=np.float32)
    keep.eliminate_zeros()
    return keep


class Indexer:
    """Stable dense indexes for string ids, in first-seen order."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        for item in ids:
            self.add(item)

    def add(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.ids)
            self.ids.append(key)
        return found

    def __len__(self) -> int:
        return len(self.ids)


def build_matrix(
    rows: Sequence[int] | npt.NDArray[np.int64],
    cols: Sequence[int] | npt.NDArray[np.int64],
    values: Sequence[float] | npt.NDArray[np.float32],
    shape: tuple[int, int],
) -> sparse.csr_matrix:
    """csr_matrix ``shape`` float32; duplicate cells are summed."""
    matrix = sparse.coo_matrix(
        (np.asarray(values, dtype=np.float32), (np.asarray(rows), np.asarray(cols))), shape=shape
    ).tocsr()
    matrix.sum_duplicates()
    return matrix
