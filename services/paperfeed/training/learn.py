"""What each deployment learns from its own data, on validation carved from its training
data only: the ALS hyperparameters (a small search, run at most daily), the text
features, and the blend of collaborative, content and trending signals.

``learn`` is the one code path of ``paperfeed train`` (and the worker) and of
``paperfeed eval``'s ``production``. It runs nine stages, each a plain function from
typed inputs to a typed result (tested and timed alone), in this order, and records each
one's seconds under its name (``STAGES``; ``GET /v1/admin/model`` shows them as
``learn.<name>``):

1. ``fit_text``: TF-IDF of words, and of words and word pairs, fitted on the papers (a
   retraining that reuses the last search fits the kind chosen with it, alone).
2. ``carve_validation``: validation carved from the training matrix: ``TUNE_SHARE`` of
   the positive papers of up to ``TUNE_READERS`` readers (warm), and ``COLD_SHARE`` of
   the papers held out whole (cold, the way a new paper meets the feed); together at
   most ``TUNE_MAX_SHARE`` of the interactions. Cells the caller holds out for judging
   (the gate's hold-out) are left out of everything.
3. ``validation_als``: ALS on the rest (the validation model): with the given
   hyperparameters, or a search (``search_space``) that scores each trial's plain ALS on
   the warm validation and keeps the best.
4. ``choose_text``: the text features chosen by their content signal's validation nDCG
   (warm and cold).
5. ``knn_lists``: the item-kNN lists of the validation model's matrix
   (``recsys.itemknn``), a signal the blend may weigh.
6. ``papers_affinity``: the papers' authors and topics, for the follow affinity
   (``recsys.affinity``: the reader's liked papers by a candidate's authors and in its
   topic, what follows feed at serving), when the papers have authors
   (``learn(authors=...)``); without them the signal is not learned (None).
7. ``choose_blend``: blend weights by coordinate ascent of the validation nDCG@20 of the
   full ranking (``ranker.blend``) over each reader's best candidates, then the weight
   of text-borrowed factors on the cold validation. The item-kNN and the follow
   affinity's weights are among them: 0 (off) unless they clearly help; the published
   models carry item-kNN lists of their own only when the blend weighs them.
8. ``judged_model`` (with judged cells only): the model the gate judges learns from
   everything but the judged cells.
9. ``final_model``: the model to publish learns from every interaction (the validation
   and judged cells included). Each of the two is a fresh fit up to
   ``FULL_REFIT_MAX_CELLS`` interactions; beyond, the validation model's ALS continued
   for ``REFIT_SWEEPS`` sweeps, a fraction of a fit.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, ParamSpec, TypeVar

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

STAGES: tuple[str, ...] = (
    "fit_text",
    "carve_validation",
    "validation_als",
    "choose_text",
    "knn_lists",
    "papers_affinity",
    "choose_blend",
    "judged_model",
    "final_model",
)
"""``learn``'s stages, in order: the names of their functions, and of their seconds in
``Learned.seconds`` (``GET /v1/admin/model`` shows them as ``learn.<name>``)."""


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


# --- the stages ----------------------------------------------------------------------
# Each a plain function from typed inputs to a typed result, run by ``learn`` in this
# order and timed under its name (``STAGES``).


# 1. fit_text


class Texts(NamedTuple):
    """The papers' text features, fitted (``fit_text``)."""

    kinds: tuple[TextKind, ...]
    """The kinds fitted, in the order ``choose_text`` tries them."""
    features: dict[TextKind, TextFeatures]
    vectors: dict[TextKind, sparse.csr_matrix]
    """(n_items, terms) each paper's text vector, by kind."""


def fit_text(tokens: Tokens, seed: int, reuse: SearchReport | None = None) -> Texts:
    """TF-IDF of the papers' ``tokens`` of every kind (``content.TEXT_KINDS``): the kind
    is chosen with a search (``choose_text``). A retraining that reuses the last search
    (``reuse``) fits the kind chosen then, alone: a search runs at most daily, and the
    text features are half of its cost."""
    kinds: tuple[TextKind, ...] = (reuse.text,) if reuse is not None else TEXT_KINDS
    fitted = TextFeatures.fit_vectors(tokens, seed=seed, kinds=kinds)
    return Texts(
        kinds=kinds,
        features={kind: features for kind, (features, _) in fitted.items()},
        vectors={kind: vectors for kind, (_, vectors) in fitted.items()},
    )


# 2. carve_validation


class Validation(NamedTuple):
    """Validation carved from the training data (``carve_validation``)."""

    fit: sparse.csr_matrix
    """The training weights without the validation and judged cells."""
    warm: sparse.csr_matrix
    """Held-out positive cells of the tuning readers."""
    cold: sparse.csr_matrix
    """Positive cells of the papers held out whole."""
    cold_items: BoolArray
    popularity: npt.NDArray[np.float64]
    """(n_items,) readers who liked each paper in ``fit``: the trending signal the
    validation readers are ranked with (``Learned.fit_popularity``)."""


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
    popularity = np.bincount(positives(fit).indices, minlength=n_items).astype(np.float64)
    return Validation(fit=fit, warm=warm, cold=cold, cold_items=cold_items, popularity=popularity)


# 3. validation_als


class Trained(NamedTuple):
    """The validation model's ALS (``validation_als``)."""

    scale: ConfidenceScale
    users: FloatArray
    items: FloatArray
    params: AlsParams
    """The hyperparameters used (the search's best, or the ones given)."""
    search: SearchReport | None
    """The search made now (None: no search). ``learned_choices`` adds the text
    features chosen with it."""


def validation_als(
    validation: Validation,
    params: AlsParams,
    search_trials: int = 0,
    seed: int = 0,
    progress: Progress | None = None,
    reserve: int = 0,
) -> Trained:
    """ALS on ``validation.fit``: with ``params``, or (``search_trials`` > 1) the best of
    a search from them (``search_space``), each trial scored by its plain ALS nDCG on the
    warm validation. ``reserve``: sweeps fewer than a full fit (large data: the later
    models continue this ALS for them)."""
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


# 4. choose_text


class ChosenText(NamedTuple):
    """The text features the models use (``choose_text``)."""

    kind: TextKind
    features: TextFeatures
    vectors: sparse.csr_matrix
    """(n_items, terms) each paper's text vector under ``features``."""
    ndcg: dict[str, float]
    """Validation nDCG@K of the content signal alone, by kind (a reused search's; empty
    with one kind fitted and no search)."""


def choose_text(
    texts: Texts, validation: Validation, seed: int = 0, reuse: SearchReport | None = None
) -> ChosenText:
    """The kind whose content signal alone ranks the validation best (warm and cold
    together; the first kind fitted on a tie): content is what ranks papers nobody read
    yet. With one kind fitted there is nothing to choose: it is ``reuse``'s (the search
    it was chosen with), with the nDCG measured then."""
    best_kind = texts.kinds[0]
    best_score = -1.0
    ndcg: dict[str, float] = {}
    for kind in texts.kinds if len(texts.kinds) > 1 else ():
        scores = []
        for cells, allowed in ((validation.warm, None), (validation.cold, validation.cold_items)):
            if cells.nnz:
                sample = evaluate.sample_users(cells, CHOICE_READERS, seed)
                scores.append(
                    evaluate.ranking_metrics(
                        evaluate.content_scorer(texts.vectors[kind]),
                        validation.fit,
                        sample,
                        K,
                        candidates=allowed,
                    ).ndcg
                )
        score = float(np.mean(scores)) if scores else 0.0
        ndcg[kind] = round(score, 5)
        if score > best_score:
            best_kind, best_score = kind, score
    if len(texts.kinds) == 1 and reuse is not None:
        ndcg = dict(reuse.text_ndcg)
    return ChosenText(best_kind, texts.features[best_kind], texts.vectors[best_kind], ndcg)


# 5. knn_lists


def knn_lists(validation: Validation, neighbours: int) -> sparse.csr_matrix | None:
    """Item-kNN lists (``neighbours`` a paper) of the validation model's matrix: they
    score the validation readers' candidates with the signal the blend may weigh (None:
    ``neighbours`` is 0, no item-kNN signal)."""
    return itemknn.build(validation.fit, neighbours) if neighbours > 0 else None


# 6. papers_affinity


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


# 7. choose_blend


class BlendChoice(NamedTuple):
    """The blend learned on the validation readers (``choose_blend``), and how it ranks
    them (``Choices``)."""

    params: BlendParams
    blend_ndcg: float
    """Validation nDCG@K of the blend on the warm readers' candidates (0: no warm
    validation) ..."""
    cf_ndcg: float
    """... and of the collaborative signal alone, on the same readers and candidates."""
    cold_ndcg: dict[str, float]
    """nDCG@K among the papers held out whole: content alone, the blend (empty: no cold
    validation)."""


def choose_blend(
    validation: Validation,
    trained: Trained,
    text: ChosenText,
    item_ids: Sequence[str],
    lists: sparse.csr_matrix | None = None,
    affinity: Affinity | None = None,
    blend_start: BlendParams | None = None,
) -> BlendChoice:
    """The blend's weights (``fit_blend``) on the validation readers' candidates, as the
    validation model (``trained``, over ``text``) ranks them, with the item-kNN signal of
    ``lists`` and the follow affinity of ``affinity`` (None: not measured, not learned).

    It starts from ``blend_start`` (the current model's blend: consecutive models do not
    swing), else the default (``PRIOR`` with no warm validation). An item-kNN weight
    learned 0 leaves the feed without candidates by item-kNN: the blend is then learned
    again on the candidates it will rank."""
    content_only = BlendParams(collaborative=False, content=1.0)
    meta = ModelMeta(
        version=new_version(),
        trained_at=time.time(),
        als=trained.params,
        blend=content_only,
        format=MODEL_FORMAT,
    )
    model = RecModel(
        meta, list(item_ids), trained.items, validation.popularity, text.features, trained.scale
    )
    view = column_view(model, item_ids, text.vectors)
    fit, popularity = validation.fit, validation.popularity
    warm_pools = collect_pools(
        view, fit, validation.warm, popularity, neighbours=lists, affinity=affinity
    )
    cold_pools = collect_pools(
        view,
        fit,
        validation.cold,
        popularity,
        allowed=validation.cold_items,
        readers=COLD_POOL_READERS,
        neighbours=lists,
        affinity=affinity,
    )
    if warm_pools is None:
        start = PRIOR
    elif blend_start is not None and blend_start.collaborative:
        start = blend_start
    else:
        start = BlendParams()
    if lists is None:
        start = msgspec.structs.replace(start, itemknn=0.0, itemknn_slope=0.0)
    if affinity is None:
        start = msgspec.structs.replace(start, follow=None)  # not measured: not learned
    params = fit_blend(warm_pools, cold_pools, start)
    if lists is not None and params.itemknn == 0 and warm_pools is not None:
        # Off: the feed will have no candidates by item-kNN either. The blend is learned
        # again on the candidates it will rank (the cold pools have none by item-kNN:
        # papers nobody read have no neighbours), exactly as without the signal.
        warm_pools = collect_pools(view, fit, validation.warm, popularity, affinity=affinity)
        start = msgspec.structs.replace(start, itemknn=0.0, itemknn_slope=0.0)
        params = fit_blend(warm_pools, cold_pools, start)
    blend_ndcg = cf_ndcg = 0.0
    cold_ndcg: dict[str, float] = {}
    if warm_pools is not None:
        # Both on the same readers and candidates: what the blend adds to the
        # collaborative signal alone (no extra ranking of every validation reader).
        blend_ndcg = round(pool_ndcg(warm_pools, params), 5)
        collaborative = BlendParams(median_history=params.median_history)
        cf_ndcg = round(pool_ndcg(warm_pools, collaborative), 5)
    if cold_pools is not None:
        cold_ndcg = {
            "content": round(pool_ndcg(cold_pools, content_only), 5),
            "blend": round(pool_ndcg(cold_pools, params), 5),
        }
    return BlendChoice(params, blend_ndcg, cf_ndcg, cold_ndcg)


# 8. judged_model, 9. final_model


class Refit(NamedTuple):
    """What the judged and the final model share: learned on the validation, passed to
    each (``refit``)."""

    meta: ModelMeta
    """The models' metadata: the ALS hyperparameters, the blend, the choices (each model
    adds its own version and sizes)."""
    item_ids: Sequence[str]
    text: ChosenText
    neighbours: int
    """Item-kNN neighbours kept a paper when the blend weighs the signal (0: the models
    carry no lists)."""
    large: bool
    """More than ``FULL_REFIT_MAX_CELLS`` interactions: the models continue the
    validation model's ALS for ``REFIT_SWEEPS`` rather than fit afresh."""
    started: float
    """``time.perf_counter()`` when learning began (the models' ``train_seconds``)."""


class Refitted(NamedTuple):
    model: RecModel
    users: FloatArray
    """(n_users, k) the readers' vectors under ``model`` (exact for its item factors)."""


def refit(
    target: sparse.csr_matrix,
    start: tuple[FloatArray, FloatArray],
    shared: Refit,
    stage: str,
    lists: sparse.csr_matrix | None = None,
    progress: Progress | None = None,
) -> Refitted:
    """A model of ``target`` (all of it: no validation) with the learned ``shared``.
    Small data: a fresh fit. Large: the ALS of the factors ``start`` continued (the
    validation model's, or the judged model's). Papers without interactions in
    ``target`` get their text neighbours' factors; the item-kNN lists are ``lists``, or
    built on ``target``, when the blend weighs them. ``stage`` names its progress."""
    params = shared.meta.als
    scale = ConfidenceScale.fit(target, params.alpha, params.scaling)
    confidences = scale(target)
    if shared.large:
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
        text = shared.text.vectors
        items = items.copy()
        items[cold] = neighbour_factors(text[cold], text[~cold], items[~cold])
    uses_lists = shared.neighbours > 0
    if uses_lists and lists is None:
        lists = itemknn.build(target, shared.neighbours)
    meta = msgspec.structs.replace(
        shared.meta,
        version=new_version(),
        n_users=int(target.shape[0]),
        n_items=int(target.shape[1]),
        n_interactions=int(target.nnz),
        train_seconds=time.perf_counter() - shared.started,
        neighbours=shared.neighbours,
    )
    model = RecModel(
        meta, list(shared.item_ids), items, counts.astype(np.float64), shared.text.features,
        scale, lists if uses_lists else None,
    )  # fmt: skip
    return Refitted(model, users)


def judged_model(
    weights: sparse.csr_matrix,
    judged: sparse.csr_matrix,
    start: tuple[FloatArray, FloatArray],
    shared: Refit,
    lists: sparse.csr_matrix | None = None,
    progress: Progress | None = None,
) -> Refitted:
    """The model the gate judges: everything but the ``judged`` cells, so that it
    compares fairly with a current model that never saw them. Large data: its item-kNN
    lists are the validation model's (``lists``: they never saw the judged cells, and
    lack the validation ones: the judged model is, if anything, a little weaker than the
    one published), as its ALS continues the validation model's (``start``): the whole
    costs about one fit."""
    own_lists = lists if shared.large else None
    return refit(drop_cells(weights, judged), start, shared, "judge", own_lists, progress)


def final_model(
    weights: sparse.csr_matrix,
    start: tuple[FloatArray, FloatArray],
    shared: Refit,
    progress: Progress | None = None,
) -> Refitted:
    """The model to publish: every interaction, the validation and judged cells
    included (large data: the ALS of ``start``, the judged model's when there is one,
    continued)."""
    return refit(weights, start, shared, "refit", progress=progress)


# --- the whole ----------------------------------------------------------------------


StageArgs = ParamSpec("StageArgs")
StageResult = TypeVar("StageResult")


def timed(
    seconds: dict[str, float],
    stage: Callable[StageArgs, StageResult],
    *args: StageArgs.args,
    **kwargs: StageArgs.kwargs,
) -> StageResult:
    """``stage(*args, **kwargs)``, its seconds recorded in ``seconds`` under its name,
    one of ``STAGES`` (the names ``GET /v1/admin/model`` shows, as ``learn.<name>``)."""
    name = stage.__name__
    if name not in STAGES:
        raise ValueError(f"{name!r} is not a stage of learn (STAGES)")
    begun = time.perf_counter()
    result = stage(*args, **kwargs)
    seconds[name] = round(time.perf_counter() - begun, 3)
    return result


def learned_choices(
    validation: Validation,
    trained: Trained,
    text: ChosenText,
    blend: BlendChoice,
    search: SearchReport | None = None,
) -> Choices:
    """What the stages chose and measured, as the models record it. A search made now
    records the text features chosen with it: retrainings reuse both (``search``, the
    one reused, is recorded as it is)."""
    searched = trained.search
    if searched is not None:
        searched = msgspec.structs.replace(searched, text=text.kind, text_ndcg=dict(text.ndcg))
    return Choices(
        text=text.kind,
        text_ndcg=dict(text.ndcg),
        blend_ndcg=blend.blend_ndcg,
        cf_ndcg=blend.cf_ndcg,
        cold_ndcg=blend.cold_ndcg,
        tune_readers=int((np.diff(validation.warm.indptr) > 0).sum()),
        tune_cold_papers=int(validation.cold_items.sum()),
        search=searched or search,
    )


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
    """Seconds spent in each stage, by its name (``STAGES``, in order; ``judged_model``
    only with judged cells)."""
    text: sparse.csr_matrix
    """(n_items, terms) the papers' text vectors under the models' text features."""
    affinity: Affinity | None = None
    """The papers' authors and topics the follow signal was measured with (None: the
    papers have no authors, the signal is not learned)."""


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
    dismissals < 0, whose papers' texts are ``tokens`` (``content.tokenize``): the
    stages (``STAGES``), in order, each timed.

    ``search_trials`` > 1 searches the ALS hyperparameters (starting from ``params``);
    otherwise ``params`` are used (``search`` records where they came from). ``judged``
    cells are kept out of everything but the final model. ``blend_start``: the current
    model's blend, where a retraining's blend starts (it moves only where this data says
    so clearly on its validation readers: consecutive models do not swing).
    ``neighbours``: item-kNN neighbours kept per paper (0: no item-kNN signal).
    ``authors``: each paper's authors (as the catalog writes them), for the follow
    affinity (None, or no shared author: that signal is not learned)."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    weights = sparse.csr_matrix(weights, dtype=np.float32)
    # The text features are chosen with the search; retrainings fit the chosen kind.
    reuse = search if search_trials <= 1 else None
    texts = timed(seconds, fit_text, tokens, seed, reuse)
    if progress:
        progress("text", 1, 1)
    validation = timed(seconds, carve_validation, weights, seed, judged)
    # Large data: the later models continue this ALS, and the sweeps they take are
    # saved here, so that the whole costs about one fit. Small data: fresh fits.
    large = weights.nnz > FULL_REFIT_MAX_CELLS
    refits = 2 if judged is not None and judged.nnz else 1
    reserve = REFIT_SWEEPS * refits if large else 0
    trained = timed(
        seconds, validation_als, validation, params, search_trials, seed, progress, reserve
    )
    text = timed(seconds, choose_text, texts, validation, seed, reuse)
    if progress:
        progress("content", 1, 1)
    lists = timed(seconds, knn_lists, validation, neighbours)
    affinity = timed(
        seconds, papers_affinity, authors, text.vectors, text.features.vocabulary, seed
    )
    blend = timed(
        seconds, choose_blend, validation, trained, text, item_ids, lists, affinity, blend_start
    )
    if progress:
        progress("blend", 1, 1)
    log.info("learned", extra={"text": text.kind, "blend": msgspec.to_builtins(blend.params)})
    meta = ModelMeta(
        version=new_version(),
        trained_at=time.time(),
        als=trained.params,
        blend=blend.params,
        choices=learned_choices(validation, trained, text, blend, search),
        format=MODEL_FORMAT,
    )
    # The published models carry item-kNN lists only when the blend weighs them.
    kept = neighbours if blend.params.itemknn != 0 else 0
    shared = Refit(meta, item_ids, text, kept, large, started)
    start = (trained.users, trained.items)
    judge = None
    if judged is not None and judged.nnz:
        judge = timed(seconds, judged_model, weights, judged, start, shared, lists, progress)
        start = (judge.users, judge.model.item_factors)
    final = timed(seconds, final_model, weights, start, shared, progress)
    return Learned(
        judge.model if judge is not None else None,
        final.model,
        final.users,
        validation.popularity,
        seconds,
        text.vectors,
        affinity,
    )
