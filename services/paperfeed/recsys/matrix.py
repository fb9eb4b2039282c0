"""From interaction weights to the confidence matrix ALS learns from."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import sparse

from paperfeed.events import DISMISSED

# A dismissed paper is a confident "not for me" (implicit reads negatives so).
DISMISS_WEIGHT = -1.0


def cell_weight(weight: float, flags: int) -> float:
    """What a reader's record of a paper puts in the matrix (0: leave the cell out)."""
    return DISMISS_WEIGHT if flags & DISMISSED else weight


def confidence(weights: sparse.csr_matrix, alpha: float) -> sparse.csr_matrix:
    """``alpha * log1p(w)`` for positive weights, ``-alpha`` for dismissals (w < 0).

    implicit reads a negative entry as confident non-preference. Log scaling keeps a
    paper read a dozen times from outweighing everything else a reader did.
    """
    out = weights.tocsr(copy=True).astype(np.float32)
    positive = out.data > 0
    out.data = np.where(positive, alpha * np.log1p(np.maximum(out.data, 0)), -alpha).astype(
        np.float32
    )
    out.eliminate_zeros()
    return out


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
    rows: Sequence[int], cols: Sequence[int], values: Sequence[float], shape: tuple[int, int]
) -> sparse.csr_matrix:
    """csr_matrix ``shape`` float32; duplicate cells are summed."""
    matrix = sparse.coo_matrix(
        (np.asarray(values, dtype=np.float32), (np.asarray(rows), np.asarray(cols))), shape=shape
    ).tocsr()
    matrix.sum_duplicates()
    return matrix
