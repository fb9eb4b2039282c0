"""What each deployment learns from its own data, on validation carved from its training
data only: the ALS hyperparameters (a small search, run at most daily), the text
features, and the blend of collaborative, content and trending signals.

``learn`` is the one code path of ``paperfeed train`` (and the worker) and of
``paperfeed eval``'s ``production``:

1. Text features: TF-IDF of words, and of words and word pairs, fitted on the papers.
2. Validation carved from the training matrix: ``TUNE_SHARE`` of the positive papers of
   up to ``TUNE_READERS`` readers (warm), and ``COLD_SHARE`` of the papers held out
   whole (cold, the way a new paper meets the feed); together at most
   ``TUNE_MAX_SHARE`` of the interactions. Cells the caller holds out for judging (the
   gate's hold-out) are left out of everything.
3. ALS on the rest (the validation model): with the given hyperparameters, or a search
   (``search_space``) that scores each trial's plain ALS on the warm validation and keeps
   the best.
4. Text features chosen by their content signal's validation nDCG (warm and cold).
5. Blend weights by coordinate ascent of the validation nDCG@20 of the full ranking
   (``ranker.blend``) over each reader's best candidates, then the weight of text-borrowed
   factors on the cold validation. The item-kNN signal (``recsys.itemknn``: neighbour
   lists built on the validation model's matrix) is one of the weights: 0 (off) unless
   it clearly helps, and then the published models carry neighbour lists of their own.
   So is the follow affinity (``recsys.affinity``: the reader's liked papers by a
   candidate's authors and in its topic, what follows feed at serving), when the papers
   have authors (``learn(authors=...)``); without them it is not learned (None).
6. The published model learns from every interaction (the validation and judged cells
   included): a fresh fit up to ``FULL_REFIT_MAX_CELLS`` interactions; beyond, the
   validation model's ALS continued for ``REFIT_SWEEPS`` sweeps, a fraction of a fit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys import affinity as follow_affinity
from paperfeed.recsys import itemknn
from paperfeed.recsys.affinity import Affinity
from paperfeed.recsys.content import (
    TEXT_KINDS,
    FloatArray,
    TextFeatures,
    TextKind,
    Tokens,
    neighbour_factors,
    profiles,
    similarity,
)
from paperfeed.recsys.matrix import ConfidenceScale, Scaling, drop_cells, positives
from paperfeed.recsys.model import (
    MODEL_FORMAT,
    AlsParams,
    Choices,
    ModelMeta,
    RecModel,
    SearchReport,
    SearchTrial,
    continue_als,
    fit_als,
    new_version,
)
from paperfeed.recsys.ranker import BlendParams, BoolArray, IntArray, blend
from paperfeed.recsys.topics import learn_topics
from paperfeed.training import evaluate

log = logging.getLogger(__name__)

K = 20
TUNE_READERS = 2_000
TUNE_SHARE = 0.2
TUNE_MAX_SHARE = 0.1
COLD_SHARE = 0.02
COLD_MAX = 500
COLD_MIN = 10
CANDIDATES_PER_SIGNAL = 300
CHOICE_READERS = 500
POOL_READERS = 600
COLD_POOL_READERS = 400
REFIT_SWEEPS = 2
FULL_REFIT_MAX_CELLS = 1_000_000
SIGNIFICANCE = 2.0
"""Standard errors of the readers' mean nDCG gain that a change of hyperparameters or of
a blend weight must clear to be taken (``clearly_better``)."""
SEARCH_MAX_FACTORS = 256

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
SLOPES = (-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5)
COLD_CF = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
# Before there is any validation data to learn from.
PRIOR = BlendParams(content=0.5, trending=0.5, trending_slope=-0.5, median_history=3.0)

Progress = Callable[[str, int, int], None]


class Validation(NamedTuple):
    fit: sparse.csr_matrix
    """The training weights without the validation and judged cells."""
    warm: sparse.csr_matrix
    """Held-out positive cells of the tuning readers."""
    cold: sparse.csr_matrix
    """Positive cells of the papers held out whole."""
    cold_items: BoolArray


def carve_validation(
    weights: sparse.csr_matrix, seed: int, judged: sparse.csr_matrix | None = None
) -> Validation:
    """Validation cells from ``weights`` (see the module doc), never from ``judged``."""
    rng = np.random.default_rng(seed)
    weights = sparse.csr_matrix(weights, dtype=np.float32)
    weights.sort_indices()
    available = drop_cells(weights, judged) if judged is not None and judged.nnz else weights
    liked = positives(available)
    n_items = weights.shape[1]
    budget = max(1, int(TUNE_MAX_SHARE * liked.nnz))
    # Cold: papers held out whole, among those with interactions.
    counts = np.bincount(liked.indices, minlength=n_items)
    with_data = np.flatnonzero(counts > 0)
    n_cold = min(COLD_MAX, round(COLD_SHARE * len(with_data)))
    cold_items = np.zeros(n_items, dtype=bool)
    if n_cold >= COLD_MIN:
        order = rng.permutation(with_data)
        spent = 0
        for item in order[:n_cold]:
            if spent + counts[item] > budget // 2:
                continue
            cold_items[item] = True
            spent += int(counts[item])
        if cold_items.sum() < COLD_MIN:
            cold_items[:] = False
    cold_mask = cold_items[liked.indices]
    rows = np.repeat(np.arange(liked.shape[0]), np.diff(liked.indptr))
    # Warm: a share of the other positive papers of readers with at least 3 of them.
    warm_mask = np.zeros(liked.nnz, dtype=bool)
    remaining = budget - int(cold_mask.sum())
    lengths = np.bincount(rows[~cold_mask], minlength=liked.shape[0])
    readers = rng.permutation(np.flatnonzero(lengths >= 3))[:TUNE_READERS]
    for reader in readers:
        start, end = liked.indptr[reader], liked.indptr[reader + 1]
        own = np.arange(start, end)[~cold_mask[start:end]]
        take = max(1, round(TUNE_SHARE * len(own)))
        if take > remaining:
            break
        warm_mask[rng.choice(own, size=take, replace=False)] = True
        remaining -= take

    def cells(mask: npt.NDArray[np.bool_]) -> sparse.csr_matrix:
        return sparse.csr_matrix(
            (liked.data[mask], (rows[mask], liked.indices[mask])), shape=weights.shape
        )

    warm, cold = cells(warm_mask), cells(cold_mask)
    fit = drop_cells(available, warm + cold)
    # Dismissals of held-out papers go too: a cold paper must be unknown to the fit.
    fit = drop_cells(fit, sparse.csr_matrix(fit.multiply(cold_items[None, :])))
    return Validation(fit=fit, warm=warm, cold=cold, cold_items=cold_items)


class ColumnView(NamedTuple):
    """A model seen over some catalog's columns (its own, or a newer catalog's)."""

    model: RecModel
    column_map: IntArray
    """Column -> the model's item index (-1: unknown to the model)."""
    factors: FloatArray
    """(n_columns, k): the model's factors, or text neighbours' for columns it has no
    interaction for."""
    cold: BoolArray
    text: sparse.csr_matrix
    """(n_columns, terms) text vectors under the model's text features."""
    affinity: Affinity | None = None
    """The columns' authors and topics (None: unknown; the follow signal is off)."""

    @property
    def neighbours(self) -> sparse.csr_matrix | None:
        """The model's item-kNN lists when its blend uses them (None: the signal is off)."""
        model = self.model
        return model.neighbours if model.meta.blend.itemknn != 0 else None

    @property
    def follow_data(self) -> Affinity | None:
        """The columns' authors and topics when the model's blend weighs the follow
        affinity (None: the signal is off)."""
        return self.affinity if self.model.meta.blend.follow else None


def column_view(
    model: RecModel, item_ids: Sequence[str], text: sparse.csr_matrix | None = None, *,
    texts: Sequence[str] = (), affinity: Affinity | None = None,
) -> ColumnView:  # fmt: skip
    """``model`` over the columns ``item_ids`` (whose ``texts`` give text vectors;
    ``affinity``: their authors and topics, for the follow signal)."""
    if text is None:
        text = model.text.transform(texts)
    column_map = np.array([model.index.get(pid, -1) for pid in item_ids], dtype=np.int64)
    known = column_map >= 0
    known[known] = ~model.cold[column_map[known]]
    factors = np.zeros((len(item_ids), model.item_factors.shape[1]), dtype=np.float32)
    factors[known] = model.item_factors[column_map[known]]
    factors[~known] = neighbour_factors(text[~known], text[known], factors[known])
    return ColumnView(model, column_map, factors, ~known, text, affinity)


def remap(rows: sparse.csr_matrix, column_map: IntArray, n_model_items: int) -> sparse.csr_matrix:
    """Rows over some columns -> rows over the model's items (unknown columns dropped)."""
    coo = rows.tocoo()
    keep = column_map[coo.col] >= 0
    return sparse.csr_matrix(
        (coo.data[keep], (coo.row[keep], column_map[coo.col[keep]])),
        shape=(rows.shape[0], n_model_items),
        dtype=np.float32,
    )


class Candidates(NamedTuple):
    """One reader's candidates and their raw signals."""

    columns: IntArray
    cf: FloatArray
    content: FloatArray
    trending: FloatArray
    cold: BoolArray
    positives: float
    itemknn: FloatArray | None = None
    """Raw item-kNN scores (None: the model has no neighbour lists in use)."""
    follow: FloatArray | None = None
    """Raw follow affinities (``recsys.affinity``; None: the signal is off)."""


def candidates(
    view: ColumnView,
    rows: sparse.csr_matrix,
    trending: FloatArray,
    allowed: BoolArray | None = None,
    per_signal: int = CANDIDATES_PER_SIGNAL,
    neighbours: sparse.csr_matrix | None = None,
    affinity: Affinity | None = None,
) -> list[Candidates]:
    """Each reader's candidates, as the feed finds them: the best ``per_signal`` by their
    vector, by their text profile, by trending and by item-kNN (with ``neighbours``, the
    model's lists: ``view.neighbours`` unless given), among the columns ``allowed`` that
    they have no record of; with their follow affinities (``affinity``:
    ``view.follow_data`` unless given; it brings no candidate, as a history brings no
    follow)."""
    model_rows = remap(rows, view.column_map, len(view.model.item_ids))
    vectors = view.model.fold_in(model_rows)
    cf_all = (vectors @ view.factors.T).astype(np.float32)
    text_profiles = profiles(view.text, rows)
    content_all = similarity(text_profiles, view.text)
    neighbours = view.neighbours if neighbours is None else neighbours
    knn_all = None
    if neighbours is not None:
        by_model = itemknn.scores(model_rows, neighbours)
        known = view.column_map >= 0
        knn_all = np.zeros(cf_all.shape, dtype=np.float32)
        knn_all[:, known] = by_model[:, view.column_map[known]]
    affinity = view.follow_data if affinity is None else affinity
    follow_all = None
    if affinity is not None:
        follow_all = follow_affinity.scores(affinity, follow_affinity.readers(affinity, rows))
    blocked = np.zeros(cf_all.shape, dtype=bool)
    blocked[rows.nonzero()] = True
    if allowed is not None:
        blocked[:, ~allowed] = True
    hot = np.argsort(-trending, kind="stable")
    hot = hot[trending[hot] > 0]  # nothing trending: no candidates from it
    liked = np.asarray((rows > 0).sum(axis=1), dtype=np.float64).ravel()
    out = []
    for row in range(rows.shape[0]):
        free = ~blocked[row]
        picks = [
            _top(np.where(free, cf_all[row], -np.inf), per_signal),
            _top(np.where(free, content_all[row], -np.inf), per_signal),
            hot[free[hot]][:per_signal],
        ]
        if knn_all is not None:
            # Only papers co-read with the reader's own (a score of 0 is no neighbour).
            knn_row = np.where(free & (knn_all[row] > 0), knn_all[row], -np.inf)
            picks.append(_top(knn_row, per_signal))
        columns = np.unique(np.concatenate(picks))
        columns = columns[free[columns]]
        out.append(
            Candidates(
                columns=columns,
                cf=cf_all[row, columns],
                content=content_all[row, columns],
                trending=trending[columns],
                cold=view.cold[columns],
                positives=float(liked[row]),
                itemknn=None if knn_all is None else knn_all[row, columns],
                follow=None if follow_all is None else follow_all[row, columns],
            )
        )
    return out


def _top(scores: FloatArray, n: int) -> IntArray:
    n = min(n, len(scores))
    top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return top[np.isfinite(scores[top])].astype(np.int64)


def production_scorer(
    view: ColumnView,
    popularity: npt.NDArray[np.float64],
    params: BlendParams | None = None,
    allowed: BoolArray | None = None,
) -> evaluate.Scorer:
    """The feed's ranking as an evaluation scorer (trending = training popularity):
    each reader's candidates blended, everything else unranked."""
    chosen = params or view.model.meta.blend
    trending = popularity.astype(np.float32)

    def score(users: IntArray, rows: sparse.csr_matrix) -> FloatArray:
        out = np.full((rows.shape[0], len(view.cold)), -np.inf, dtype=np.float32)
        for row, found in enumerate(candidates(view, rows, trending, allowed)):
            blended, _ = blend(
                found.cf[None, :],
                found.content[None, :],
                found.trending,
                np.array([found.positives]),
                found.cold,
                chosen,
                None if found.itemknn is None else found.itemknn[None, :],
                None if found.follow is None else found.follow[None, :],
            )
            out[row, found.columns] = blended[0]
        return out

    return score


# --- blend fitting ---------------------------------------------------------------------


class Pools(NamedTuple):
    """Each validation reader's candidates (the best ``CANDIDATES_PER_SIGNAL`` of each signal)
    with their standardised signals, for fast evaluation of many blends."""

    cf: FloatArray
    content: FloatArray
    trending: FloatArray
    itemknn: FloatArray
    """Standardised over the candidates with interactions (zeros without lists)."""
    cold: BoolArray
    relevant: BoolArray
    valid: BoolArray
    """(n_readers, width) each; ``valid`` marks real entries of the padded rows."""
    n_relevant: IntArray
    history: npt.NDArray[np.float64]
    follow: FloatArray | None = None
    """The follow affinity standardised over the candidates (None: not measured, the
    papers have no authors)."""


def _z(values: FloatArray) -> FloatArray:
    from paperfeed.recsys.ranker import standardize

    return standardize(values)


def collect_pools(
    view: ColumnView,
    train: sparse.csr_matrix,
    test: sparse.csr_matrix,
    popularity: npt.NDArray[np.float64],
    allowed: BoolArray | None = None,
    readers: int = POOL_READERS,
    batch: int = 256,
    neighbours: sparse.csr_matrix | None = None,
    affinity: Affinity | None = None,
) -> Pools | None:
    """The readers' candidates (as ``production_scorer`` finds them, with item-kNN's
    when ``neighbours`` are given, the follow affinity when ``affinity`` is) with their
    signals standardised over them, and which are held out: many blends are then
    scored fast."""
    from paperfeed.recsys.ranker import standardize_over

    test = evaluate.sample_users(test, readers, 0)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if len(users) == 0:
        return None
    trending = np.log1p(np.maximum(popularity, 0)).astype(np.float32)
    rows_out: list[tuple[npt.NDArray[np.generic], ...]] = []
    n_relevant: list[int] = []
    history: list[float] = []
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        truth = test[chunk]
        found = candidates(
            view, train[chunk], popularity.astype(np.float32), allowed, neighbours=neighbours,
            affinity=affinity,
        )  # fmt: skip
        for row, reader in enumerate(found):
            relevant = truth.indices[truth.indptr[row] : truth.indptr[row + 1]]
            knn = (
                np.zeros(len(reader.columns), dtype=np.float32)
                if reader.itemknn is None
                else standardize_over(reader.itemknn[None, :], ~reader.cold)[0]
            )
            rows_out.append(
                (
                    _z(reader.cf[None, :])[0],
                    _z(reader.content[None, :])[0],
                    _z(trending[reader.columns][None, :])[0],
                    knn,
                    reader.cold,
                    np.isin(reader.columns, relevant),
                    np.zeros(len(reader.columns), dtype=np.float32)
                    if reader.follow is None
                    else _z(reader.follow[None, :])[0],
                )
            )
            n_relevant.append(len(relevant))
            history.append(reader.positives)
    width = max(len(r[0]) for r in rows_out)
    shape = (len(rows_out), width)
    arrays = [np.zeros(shape, dtype=np.float32) for _ in range(5)]
    flags = [np.zeros(shape, dtype=bool) for _ in range(3)]
    for i, row_out in enumerate(rows_out):
        cf_row, content_row, trend_row, knn_row, cold_row, rel_row, follow_row = row_out
        n = len(cf_row)
        arrays[0][i, :n], arrays[1][i, :n], arrays[2][i, :n] = cf_row, content_row, trend_row
        arrays[3][i, :n] = knn_row
        arrays[4][i, :n] = follow_row
        flags[0][i, :n], flags[1][i, :n], flags[2][i, :n] = cold_row, rel_row, True
    return Pools(
        cf=arrays[0],
        content=arrays[1],
        trending=arrays[2],
        itemknn=arrays[3],
        cold=flags[0],
        relevant=flags[1],
        valid=flags[2],
        n_relevant=np.array(n_relevant, dtype=np.int64),
        history=np.array(history, dtype=np.float64),
        follow=None if affinity is None else arrays[4],
    )


def reader_ndcg(pools: Pools, params: BlendParams, k: int = K) -> npt.NDArray[np.float64]:
    """Each reader's nDCG@k under ``params`` (the same maths as ``ranker.blend``)."""
    from paperfeed.recsys.ranker import TIE_BREAK, history_weight

    w_content = history_weight(
        params.content, params.content_slope, pools.history, params.median_history
    )
    w_trend = history_weight(
        params.trending, params.trending_slope, pools.history, params.median_history
    )
    w_trend = np.where(pools.history > 0, w_trend, 1.0)
    cf = np.where(pools.cold, params.cold_cf * pools.cf, pools.cf)
    scores = (
        cf + w_content[:, None] * pools.content + (w_trend[:, None] + TIE_BREAK) * pools.trending
    )
    if params.itemknn != 0:
        w_knn = history_weight(
            params.itemknn, params.itemknn_slope, pools.history, params.median_history
        )
        scores = scores + w_knn[:, None] * pools.itemknn
    if params.follow and pools.follow is not None:
        scores = scores + params.follow * pools.follow
    scores = np.where(pools.valid, scores, -np.inf)
    width = scores.shape[1]
    top_k = min(k, width)
    top = np.argpartition(-scores, top_k - 1, axis=1)[:, :top_k] if top_k < width else None
    if top is None:
        top = np.broadcast_to(np.arange(width), scores.shape)
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    ranked = np.take_along_axis(top, order, axis=1)
    hits = np.take_along_axis(pools.relevant, ranked, axis=1)
    discounts = 1.0 / np.log2(np.arange(2, top_k + 2))
    dcg = (hits * discounts[None, :]).sum(axis=1)
    ideal_counts = np.minimum(pools.n_relevant, top_k)
    ideal = np.cumsum(discounts)[np.maximum(ideal_counts, 1) - 1]
    result: npt.NDArray[np.float64] = dcg / ideal
    return result


def pool_ndcg(pools: Pools, params: BlendParams, k: int = K) -> float:
    """Mean nDCG@k of ``params`` over the pools."""
    return float(reader_ndcg(pools, params, k).mean())


def fit_blend(warm: Pools | None, cold: Pools | None, start: BlendParams) -> BlendParams:
    """Coordinate ascent of the validation nDCG over the blend's weights.

    A step is taken only when its gain is clear: ``clearly_better`` over the validation
    readers, and a gain on both halves of them. The climb tries a hundred-odd weights:
    with a bare "it helped", some would win by chance on a small validation set and the
    blend would swing from one training to the next (a trending weight of 5 learned from
    noise, then refused by the gate on the readers' new papers)."""

    def climb(
        pools: Pools, params: BlendParams, grids: dict[str, tuple[float, ...]]
    ) -> BlendParams:
        if len(pools.history) < 2:
            return params  # no two halves to agree
        half = np.random.default_rng(0).permutation(len(pools.history)) % 2 == 0
        best = reader_ndcg(pools, params)
        for _ in range(3):
            improved = False
            for name, grid in grids.items():
                # The best value of this weight, taken if it is clearly better: steps
                # small enough to be within noise one by one still add up.
                trials = [msgspec.structs.replace(params, **{name: value}) for value in grid]
                tried = [reader_ndcg(pools, trial) for trial in trials]
                top = int(np.argmax([scores.mean() for scores in tried]))
                gain = tried[top] - best
                if (
                    clearly_better(tried[top], best)
                    and gain[half].mean() > 0
                    and gain[~half].mean() > 0
                ):
                    best, params, improved = tried[top], trials[top], True
            if not improved:
                break
        return params

    params = start
    if warm is not None:
        median = float(np.median(warm.history)) if len(warm.history) else start.median_history
        params = msgspec.structs.replace(params, median_history=max(median, 1.0))
        grids = {
            "content": WEIGHTS,
            "trending": WEIGHTS,
            "itemknn": WEIGHTS,
            "content_slope": SLOPES,
            "trending_slope": SLOPES,
            "itemknn_slope": SLOPES,
        }
        if warm.follow is not None:
            # Measured: learned like the others, from where it was (0, off, the first time).
            params = msgspec.structs.replace(params, follow=params.follow or 0.0)
            grids["follow"] = WEIGHTS
        params = climb(warm, params, grids)
    if cold is not None:
        params = climb(cold, params, {"cold_cf": COLD_CF})
    return params


# --- hyperparameter search -----------------------------------------------------------


def search_space(current: AlsParams, trials: int, seed: int) -> list[AlsParams]:
    """``current`` first, then trials around it and across the space (log-uniform)."""
    rng = np.random.default_rng(seed)
    out = [current]
    factor_choices = [f for f in (32, 64, 128, 256, 512) if f <= SEARCH_MAX_FACTORS]
    while len(out) < trials:
        local = len(out) % 2 == 1
        if local:
            index = (
                factor_choices.index(current.factors) if current.factors in factor_choices else 2
            )
            factors = factor_choices[
                int(np.clip(index + rng.integers(-1, 2), 0, len(factor_choices) - 1))
            ]
            regularization = current.regularization * math.exp(rng.uniform(-1.2, 1.2))
            alpha = current.alpha * math.exp(rng.uniform(-1.2, 1.2))
            scaling: Scaling = current.scaling if rng.random() < 0.7 else _other(current.scaling)
        else:
            factors = int(rng.choice(factor_choices[1:]))
            regularization = math.exp(rng.uniform(math.log(0.3), math.log(100.0)))
            alpha = math.exp(rng.uniform(math.log(2.0), math.log(200.0)))
            scaling = "bm25" if rng.random() < 0.5 else "log"
        out.append(
            msgspec.structs.replace(
                current,
                factors=factors,
                regularization=round(regularization, 3),
                alpha=round(alpha, 3),
                scaling=scaling,
            )
        )
    return out


def _other(scaling: Scaling) -> Scaling:
    return "bm25" if scaling == "log" else "log"


def cf_ndcg(
    users: FloatArray, items: FloatArray, fit: sparse.csr_matrix, warm: sparse.csr_matrix
) -> npt.NDArray[np.float64]:
    """Each warm validation reader's nDCG@K by the plain ALS factors."""
    if warm.nnz == 0:
        return np.zeros(0)
    metrics = evaluate.ranking_metrics(evaluate.factor_scorer(users, items), fit, warm, K)
    return np.array(metrics.per_user_ndcg)


def clearly_better(trial: npt.NDArray[np.float64], best: npt.NDArray[np.float64]) -> bool:
    """``trial`` beats ``best`` (each reader's nDCG, the same readers) by more than
    ``SIGNIFICANCE`` standard errors of the paired difference: noise never replaces what
    works."""
    if len(trial) < 2:
        return False
    difference = trial - best
    error = float(difference.std(ddof=1)) / float(np.sqrt(len(difference)))
    return float(difference.mean()) > SIGNIFICANCE * max(error, 1e-9)


class Trained(NamedTuple):
    scale: ConfidenceScale
    users: FloatArray
    items: FloatArray
    params: AlsParams
    search: SearchReport | None


def train_validation_als(
    validation: Validation,
    params: AlsParams,
    search_trials: int,
    seed: int,
    progress: Progress | None,
    reserve: int = 0,
) -> Trained:
    """The validation model's ALS (``reserve`` sweeps fewer than a full fit)."""
    fit = validation.fit
    sweeps = max(1, params.iterations - reserve)
    if search_trials <= 1:
        scale = ConfidenceScale.fit(fit, params.alpha, params.scaling)
        users, items = fit_als(
            scale(fit),
            params,
            (lambda it: progress("als", it, sweeps)) if progress else None,
            iterations=sweeps,
        )
        return Trained(scale, users, items, params, None)
    started = time.time()
    space = search_space(params, search_trials, seed)
    short = max(1, min(sweeps, params.iterations // 2))
    results: list[SearchTrial] = []
    best: tuple[npt.NDArray[np.float64], Trained] | None = None
    for number, trial in enumerate(space):
        begun = time.perf_counter()
        scale = ConfidenceScale.fit(fit, trial.alpha, trial.scaling)
        users, items = fit_als(scale(fit), trial, iterations=short)
        per_user = cf_ndcg(users, items, fit, validation.warm)
        score = float(per_user.mean()) if len(per_user) else 0.0
        seconds = round(time.perf_counter() - begun, 2)
        results.append(SearchTrial(trial, round(score, 5), seconds))
        log.info("search trial", extra={"trial": msgspec.to_builtins(trial), "ndcg": score})
        # The first trial is where the search starts (the parameters in use).
        if best is None or clearly_better(per_user, best[0]):
            best = (per_user, Trained(scale, users, items, trial, None))
        if progress:
            progress("search", number + 1, len(space))
    assert best is not None
    chosen = best[1]
    users, items = continue_als(
        chosen.scale(fit),
        chosen.users,
        chosen.items,
        chosen.params,
        max(0, chosen.params.iterations - reserve - short),
    )
    report = SearchReport(
        at=started,
        start=params,
        best=chosen.params,
        trials=results,
        seconds=round(time.time() - started, 2),
    )
    return Trained(chosen.scale, users, items, chosen.params, report)


# --- the whole ----------------------------------------------------------------------


class Learned(NamedTuple):
    judge_model: RecModel | None
    """Trained on everything but the judged cells: the one the gate judges."""
    model: RecModel
    """Trained on everything: the one to publish."""
    user_factors: FloatArray
    """(n_users, k) readers' vectors under ``model`` (exact for its item factors)."""
    fit_popularity: npt.NDArray[np.float64]
    """Interactions each paper had in the validation model's training data."""
    seconds: dict[str, float]
    """Seconds spent in each step."""
    text: sparse.csr_matrix
    """(n_items, terms) the papers' text vectors under the models' text features."""
    affinity: Affinity | None = None
    """The papers' authors and topics the follow signal was measured with (None: the
    papers have no authors, the signal is not learned)."""


def papers_affinity(
    authors: Sequence[Sequence[str]] | None,
    text: sparse.csr_matrix,
    vocabulary: Sequence[str],
    seed: int,
) -> Affinity | None:
    """The papers' authors and topics (topics learned from ``text`` as the catalog index
    learns them, ``recsys.topics``), or None when no two papers share an author: then
    the follow affinity measures nothing of what an author follow says, and is not
    learned (``paperfeed eval``'s data sets have no authors)."""
    if not authors or not any(authors):
        return None
    topics = learn_topics(text, vocabulary, seed)
    data = follow_affinity.affinity_data(authors, topics.of_paper, len(topics.names))
    return data if data.has_authors else None


def learn(
    weights: sparse.csr_matrix,
    item_ids: Sequence[str],
    tokens: Tokens,
    params: AlsParams,
    *,
    search_trials: int = 0,
    search: SearchReport | None = None,
    judged: sparse.csr_matrix | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    blend_start: BlendParams | None = None,
    neighbours: int = itemknn.NEIGHBOURS,
    authors: Sequence[Sequence[str]] | None = None,
) -> Learned:
    """Everything a model needs, learned on ``weights`` (n_users, n_items) float32 with
    dismissals < 0, whose papers' texts are ``tokens`` (``content.tokenize``).

    ``search_trials`` > 1 searches the ALS hyperparameters (starting from ``params``);
    otherwise ``params`` are used (``search`` records where they came from). ``judged``
    cells are kept out of everything but the final model. ``blend_start``: the current
    model's blend, where a retraining's blend starts (it moves only where this data says
    so clearly on its validation readers: consecutive models do not swing).
    ``neighbours``: item-kNN neighbours kept per paper (0: no item-kNN signal).
    ``authors``: each paper's authors (as the catalog writes them), for the follow
    affinity (None, or no shared author: that signal is not learned)."""
    started = time.perf_counter()
    laps: dict[str, float] = {}
    mark = [started]

    def lap(name: str) -> None:
        now = time.perf_counter()
        laps[name] = round(now - mark[0], 3)
        mark[0] = now

    weights = sparse.csr_matrix(weights, dtype=np.float32)
    # The text features are chosen with the search; retrainings fit the chosen kind.
    reuse_text = search_trials <= 1 and search is not None
    kinds: tuple[TextKind, ...] = (search.text,) if reuse_text and search else TEXT_KINDS
    fitted = TextFeatures.fit_vectors(tokens, seed=seed, kinds=kinds)
    features = {kind: f for kind, (f, _) in fitted.items()}
    text = {kind: vectors for kind, (_, vectors) in fitted.items()}
    if progress:
        progress("text", 1, 1)
    lap("text")
    validation = carve_validation(weights, seed, judged)
    # Large data: the later models continue this ALS, and the sweeps they take are
    # saved here, so that the whole costs about one fit. Small data: fresh fits.
    large = weights.nnz > FULL_REFIT_MAX_CELLS
    stages = 2 if judged is not None and judged.nnz else 1
    reserve = REFIT_SWEEPS * stages if large else 0
    trained = train_validation_als(validation, params, search_trials, seed, progress, reserve)
    lap("search" if trained.search else "als")
    fit_counts = np.bincount(positives(validation.fit).indices, minlength=weights.shape[1])
    fit_popularity = fit_counts.astype(np.float64)
    choices = Choices(
        search=trained.search or search,
        tune_readers=int((np.diff(validation.warm.indptr) > 0).sum()),
        tune_cold_papers=int(validation.cold_items.sum()),
    )

    def model_for(kind: TextKind, blend_params: BlendParams) -> RecModel:
        meta = ModelMeta(
            version=new_version(),
            trained_at=time.time(),
            als=trained.params,
            blend=blend_params,
            choices=choices,
            format=MODEL_FORMAT,
        )
        return RecModel(
            meta, list(item_ids), trained.items, fit_popularity, features[kind], trained.scale
        )

    # Text features: the content signal alone, warm and cold.
    best_kind: TextKind = kinds[0]
    best_score = -1.0
    for kind in kinds if len(kinds) > 1 else ():
        scores = []
        for cells, candidates in (
            (validation.warm, None),
            (validation.cold, validation.cold_items),
        ):
            if cells.nnz:
                sample = evaluate.sample_users(cells, CHOICE_READERS, seed)
                scores.append(
                    evaluate.ranking_metrics(
                        evaluate.content_scorer(text[kind]),
                        validation.fit,
                        sample,
                        K,
                        candidates=candidates,
                    ).ndcg
                )
        score = float(np.mean(scores)) if scores else 0.0
        choices.text_ndcg[kind] = round(score, 5)
        if score > best_score:
            best_kind, best_score = kind, score
    choices.text = best_kind
    if trained.search is not None:
        trained.search.text = best_kind
        trained.search.text_ndcg = dict(choices.text_ndcg)
    elif search is not None and reuse_text:
        choices.text_ndcg = dict(search.text_ndcg)
    if progress:
        progress("content", 1, 1)
    lap("text_choice")
    # Item-kNN lists of the validation model's matrix: a signal the blend may weigh.
    validation_lists = itemknn.build(validation.fit, neighbours) if neighbours > 0 else None
    lap("itemknn")
    # The papers' authors and topics: the follow affinity, a signal the blend may weigh.
    affinity = papers_affinity(authors, text[best_kind], features[best_kind].vocabulary, seed)
    lap("affinity")
    # Blend.
    content_only = BlendParams(collaborative=False, content=1.0)
    view = column_view(model_for(best_kind, content_only), item_ids, text[best_kind])
    warm_pools = collect_pools(
        view, validation.fit, validation.warm, fit_popularity, neighbours=validation_lists,
        affinity=affinity,
    )  # fmt: skip
    cold_pools = collect_pools(
        view,
        validation.fit,
        validation.cold,
        fit_popularity,
        allowed=validation.cold_items,
        readers=COLD_POOL_READERS,
        neighbours=validation_lists,
        affinity=affinity,
    )
    if warm_pools is None:
        start = PRIOR
    elif blend_start is not None and blend_start.collaborative:
        start = blend_start
    else:
        start = BlendParams()
    if validation_lists is None:
        start = msgspec.structs.replace(start, itemknn=0.0, itemknn_slope=0.0)
    if affinity is None:
        start = msgspec.structs.replace(start, follow=None)  # not measured: not learned
    blend_params = fit_blend(warm_pools, cold_pools, start)
    if validation_lists is not None and blend_params.itemknn == 0 and warm_pools is not None:
        # Off: the feed will have no candidates by item-kNN either. The blend is learned
        # again on the candidates it will rank (the cold pools have none by item-kNN:
        # papers nobody read have no neighbours), exactly as without the signal.
        warm_pools = collect_pools(
            view, validation.fit, validation.warm, fit_popularity, affinity=affinity
        )
        start = msgspec.structs.replace(start, itemknn=0.0, itemknn_slope=0.0)
        blend_params = fit_blend(warm_pools, cold_pools, start)
    # The published models carry lists only when the blend weighs them.
    uses_lists = blend_params.itemknn != 0 and neighbours > 0
    if warm_pools is not None:
        # Both on the same readers and candidates: what the blend adds to the
        # collaborative signal alone (no extra ranking of every validation reader).
        choices.blend_ndcg = round(pool_ndcg(warm_pools, blend_params), 5)
        collaborative = BlendParams(median_history=blend_params.median_history)
        choices.cf_ndcg = round(pool_ndcg(warm_pools, collaborative), 5)
    if cold_pools is not None:
        choices.cold_ndcg = {
            "content": round(pool_ndcg(cold_pools, content_only), 5),
            "blend": round(pool_ndcg(cold_pools, blend_params), 5),
        }
    if progress:
        progress("blend", 1, 1)
    lap("blend")
    log.info(
        "learned",
        extra={"text": best_kind, "blend": msgspec.to_builtins(blend_params)},
    )
    learned_meta = model_for(best_kind, blend_params).meta

    # Models that learn from more: the judged one (everything but the judged cells, so
    # the gate compares it fairly with a current model that never saw them) and the one
    # to publish (everything).
    def refit(
        target: sparse.csr_matrix,
        start: tuple[FloatArray, FloatArray],
        stage: str,
        lists: sparse.csr_matrix | None = None,
    ) -> tuple[RecModel, FloatArray]:
        params = trained.params
        scale = ConfidenceScale.fit(target, params.alpha, params.scaling)
        confidences = scale(target)
        if large:
            users, items = continue_als(
                confidences, *start, params, REFIT_SWEEPS,
                (lambda it: progress(stage, it, REFIT_SWEEPS)) if progress else None,
            )  # fmt: skip
        else:
            # The last sweep solves items, then readers: their vectors are exact.
            users, items = fit_als(
                confidences, params,
                (lambda it: progress(stage, it, params.iterations)) if progress else None,
                iterations=params.iterations - 1,
            )  # fmt: skip
            users, items = continue_als(confidences, users, items, params, 1)
        counts = np.bincount(positives(target).indices, minlength=target.shape[1])
        cold = counts <= 0
        if cold.any():
            items = items.copy()
            items[cold] = neighbour_factors(
                text[best_kind][cold], text[best_kind][~cold], items[~cold]
            )
        if uses_lists and lists is None:
            lists = itemknn.build(target, neighbours)
        meta = msgspec.structs.replace(
            learned_meta,
            version=new_version(),
            n_users=int(target.shape[0]),
            n_items=int(target.shape[1]),
            n_interactions=int(target.nnz),
            train_seconds=time.perf_counter() - started,
            neighbours=neighbours if uses_lists else 0,
        )
        model = RecModel(
            meta, list(item_ids), items, counts.astype(np.float64), features[best_kind], scale,
            lists if uses_lists else None,
        )  # fmt: skip
        return model, users

    factors = (trained.users, trained.items)
    judge_model = None
    if judged is not None and judged.nnz:
        # Large data: the judged model's lists are the validation model's (they never saw
        # the judged cells, and lack the validation ones: the judged model is, if
        # anything, a little weaker than the one published), as its ALS continues the
        # validation model's: the whole costs about one fit.
        judge_lists = validation_lists if large else None
        judge_model, judge_users = refit(drop_cells(weights, judged), factors, "judge", judge_lists)
        lap("judge_model")
        factors = (judge_users, judge_model.item_factors)
    final, users = refit(weights, factors, "refit")
    lap("final_model")
    return Learned(judge_model, final, users, fit_popularity, laps, text[best_kind], affinity)
