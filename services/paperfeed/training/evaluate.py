"""Offline evaluation: data sets in the common layout, splits, baselines and metrics.

Splits:
- ``warm``: for every user with at least 5 papers, 20% of their papers (at least one)
  are held out; the model trains on the rest.
- ``cold``: 20% of the papers are held out whole (every interaction with them); each
  user is ranked over the held-out papers only.

Metrics at k over users with held-out papers: Recall@k = hits / min(|held out|, k), and
nDCG@k with binary relevance (the ideal ranking puts min(|held out|, k) hits first).
Train papers are never ranked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.content import FloatArray, paper_text
from paperfeed.recsys.matrix import Indexer, build_matrix

Split = Literal["warm", "cold"]
# A scorer gives (n_batch, n_items) scores for a batch of users from their train rows.
Scorer = Callable[[npt.NDArray[np.int64], sparse.csr_matrix], FloatArray]


class Dataset(msgspec.Struct):
    user_ids: list[str]
    item_ids: list[str]
    item_texts: list[str]
    weights: sparse.csr_matrix
    """(n_users, n_items) float32 interaction weights (1 where the file has none)."""


class Metrics(msgspec.Struct):
    recall: float
    """Mean over users of hits / min(|held out|, k)."""
    ndcg: float
    users: int
    pooled_recall: float = 0.0
    """All hits / sum of min(|held out|, k): implicit's ``precision``."""
    per_user_ndcg: list[float] = msgspec.field(default_factory=list)
    """Each user's nDCG@k (in user order), for paired comparisons."""


def load_dataset(interactions: Path, items: Path) -> Dataset:
    """The common layout: ``interactions.tsv`` (user, item[, weight, ts]) and ``items.jsonl``."""
    item_index = Indexer()
    texts: list[str] = []
    with open(items, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            record = json.loads(line)
            item_index.add(str(record["id"]))
            texts.append(paper_text(record.get("title") or "", record.get("abstract") or ""))
    users = Indexer()
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    with open(interactions, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        weight_col = header.index("weight") if "weight" in header else None
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2:
                continue
            item = item_index.index.get(fields[1])
            if item is None:
                continue  # an interaction with a paper we know nothing of
            rows.append(users.add(fields[0]))
            cols.append(item)
            values.append(float(fields[weight_col]) if weight_col is not None else 1.0)
    weights = build_matrix(rows, cols, values, (len(users), len(item_index)))
    weights.data = np.minimum(weights.data, 1.0) if weight_col is None else weights.data
    return Dataset(users.ids, item_index.ids, texts, weights)


def warm_split(
    weights: sparse.csr_matrix, seed: int, fraction: float = 0.2, min_items: int = 5
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """(train, test): ``fraction`` of the papers of each user with >= ``min_items``."""
    rng = np.random.default_rng(seed)
    weights = weights.tocsr()
    test_mask = np.zeros(weights.nnz, dtype=bool)
    for user in range(weights.shape[0]):
        start, end = weights.indptr[user], weights.indptr[user + 1]
        n = end - start
        if n < min_items:
            continue
        held = rng.choice(n, size=max(1, round(fraction * n)), replace=False)
        test_mask[start + held] = True
    return _mask_split(weights, test_mask)


def cold_split(
    weights: sparse.csr_matrix, seed: int, fraction: float = 0.2
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, npt.NDArray[np.bool_]]:
    """(train, test, held-out paper mask): ``fraction`` of the papers held out whole."""
    rng = np.random.default_rng(seed)
    n_items = weights.shape[1]
    held = np.zeros(n_items, dtype=bool)
    held[rng.choice(n_items, size=round(fraction * n_items), replace=False)] = True
    weights = weights.tocsr()
    train, test = _mask_split(weights, held[weights.indices])
    return train, test, held


def _mask_split(
    weights: sparse.csr_matrix, test_mask: npt.NDArray[np.bool_]
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    coo = weights.tocoo()
    order = np.lexsort((coo.col, coo.row))  # csr order, matching test_mask
    rows, cols, data = coo.row[order], coo.col[order], coo.data[order]

    def part(mask: npt.NDArray[np.bool_]) -> sparse.csr_matrix:
        return sparse.csr_matrix((data[mask], (rows[mask], cols[mask])), shape=weights.shape)

    return part(~test_mask), part(test_mask)


def sample_users(test: sparse.csr_matrix, n: int, seed: int) -> sparse.csr_matrix:
    """``test`` with the held-out cells of at most ``n`` of its users (seeded choice)."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if len(users) <= n:
        return test
    keep = np.zeros(test.shape[0], dtype=bool)
    keep[np.random.default_rng(seed).choice(users, n, replace=False)] = True
    return sparse.csr_matrix(sparse.diags(keep.astype(np.float32)) @ test, dtype=np.float32)


def batches(users: npt.NDArray[np.int64], size: int) -> Iterator[npt.NDArray[np.int64]]:
    for start in range(0, len(users), size):
        yield users[start : start + size]


def ranking_metrics(
    scorer: Scorer,
    train: sparse.csr_matrix,
    test: sparse.csr_matrix,
    k: int,
    candidates: npt.NDArray[np.bool_] | None = None,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> Metrics:
    """Recall@k and nDCG@k of ``scorer`` over the users with held-out papers."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall_sum = ndcg_sum = 0.0
    hits_total = ideal_total = 0
    per_user: list[float] = []
    for batch in batches(users, batch_size):
        scores = np.array(scorer(batch, train[batch]), dtype=np.float32, copy=True)
        if candidates is not None:
            scores[:, ~candidates] = -np.inf
        seen = train[batch]
        scores[seen.nonzero()] = -np.inf
        top = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1), axis=1)
        truth = test[batch]
        for row, user_top in enumerate(top):
            relevant = truth.indices[truth.indptr[row] : truth.indptr[row + 1]]
            hits = np.isin(user_top, relevant)
            ideal = min(len(relevant), k)
            recall_sum += hits.sum() / ideal
            hits_total += int(hits.sum())
            ideal_total += ideal
            user_ndcg = float(discounts[: len(hits)][hits].sum()) / float(discounts[:ideal].sum())
            ndcg_sum += user_ndcg
            per_user.append(user_ndcg)
        if progress:
            progress(len(batch))
    n = max(len(users), 1)
    return Metrics(
        recall=float(recall_sum / n),
        ndcg=float(ndcg_sum / n),
        users=len(users),
        pooled_recall=float(hits_total / max(ideal_total, 1)),
        per_user_ndcg=per_user,
    )


def popularity_scorer(train: sparse.csr_matrix) -> Scorer:
    counts = np.asarray((train > 0).sum(axis=0), dtype=np.float32).ravel()

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        return np.broadcast_to(counts, (len(users), counts.shape[0]))

    return score


def content_scorer(text: sparse.csr_matrix) -> Scorer:
    """Cosine between each paper's text vector and the reader's text profile (the sum of
    the text vectors of their papers)."""
    from paperfeed.recsys.content import profiles, similarity

    text = sparse.csr_matrix(text)

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        return similarity(profiles(text, rows), text)

    return score


def lsa_scorer(text: sparse.csr_matrix, dims: int = 128, seed: int = 0) -> Scorer:
    """The same over a dense reduction (LSA: truncated SVD) of the text vectors."""
    from sklearn.decomposition import TruncatedSVD

    from paperfeed.recsys.content import l2_normalize

    n_papers, n_terms = text.shape
    if min(n_papers, n_terms) <= dims:
        dense = np.asarray(text.toarray(), dtype=np.float32)
    else:
        svd = TruncatedSVD(n_components=dims, random_state=seed, algorithm="randomized")
        dense = np.asarray(svd.fit_transform(text), dtype=np.float32)
    vectors = l2_normalize(dense)

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        liked = rows.copy()
        liked.data = np.maximum(liked.data, 0)
        return (l2_normalize(np.asarray(liked @ vectors, dtype=np.float32)) @ vectors.T).astype(
            np.float32
        )

    return score


def factor_scorer(user_factors: FloatArray, item_factors: FloatArray) -> Scorer:
    """Plain matrix factorisation: the users' trained factors dotted with the items'."""

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        return (user_factors[users] @ item_factors.T).astype(np.float32)

    return score


def itemknn_scorer(neighbours: sparse.csr_matrix) -> Scorer:
    """Item-kNN alone: each paper's summed similarity to the reader's liked papers
    (``recsys.itemknn``)."""
    from paperfeed.recsys import itemknn

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        return itemknn.scores(rows, neighbours)

    return score
