"""The personalized trending feed and similar papers, ranked on the catalog index.

One feed is four stages, each a plain function on arrays (``rank`` runs them, in the
api's bounded thread pool):

1. ``candidates``: positions of the week's ``TRENDING_CANDIDATES`` and the day's
   ``TODAY_CANDIDATES`` hottest papers, the ``RECENT_CANDIDATES`` newest, and among the
   ``POOL`` newest the reader's best ``PERSONAL_CANDIDATES`` by their vector, by their
   text profile and (when the model's blend weighs it) by item-kNN: papers read with
   theirs (a trending feed looks for what is new).
2. ``visible``: dismissed papers never appear; papers the reader opened, upvoted, saved
   or shared are dropped (they have them).
3. ``scores``: ``ranker.blend`` (the code ``paperfeed eval`` measures as
   ``production``, with the weights the deployment learned; before any model, content
   and trending), then two rules of a trending product: papers of the last
   ``FRESH_DAYS`` count as at least as trending as the median candidate (trending
   cannot know them yet) and get up to ``FRESH_BOOST`` (halving every 2 days); papers
   only shown sink by ``IMPRESSION_PENALTY`` a showing (both in units of the spread of
   the blended scores, whose scale the learned weights set).
4. ``reasons``: for the returned papers only: the reader's paper it is closest to in
   text, "readers of <title> also read it" (the reader's paper whose neighbour list
   gave it its item-kNN score, when that signal put it high), "popular with readers
   like you" (a paper readers interacted with, scoring high
   for the reader's vector), trending today or this week, and "new in
   <topic>" for a paper of the last ``FRESH_DAYS`` in a topic of the reader's own papers
   (topics learned from the catalog's text, ``recsys.topics``), else new today or this
   week. A paper a reader's follows brought (``paperfeed.follows``) says "new from
   <author>" or "new in <topic>" first.

Follows: the followed authors' and topics' papers of the last ``FRESH_DAYS`` join the
candidates. A model whose blend learned the follow affinity's weight
(``BlendParams.follow``: the reader's liked papers by a candidate's authors and in its
topic, each follow counting as ``affinity.FOLLOW_PAPERS`` of them) scores every
candidate with it in the blend; before such a model (None: an older model, data without
authors) and for a reader ranked without the learned blend (no history yet), the
followed papers are lifted by the prior ``FOLLOW_WEIGHT`` instead (in units of the
blended scores' spread, like the rules of stage 3; ``docs/follows.md``).

Only the returned papers are read from Redis.
"""

from __future__ import annotations

import functools
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from prometheus_client import Counter
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError
from scipy import sparse

from paperfeed.catalog.papers import Paper, no_such_paper
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import Unauthorized
from paperfeed.events import (
    DISMISSED,
    RECORD_FIELDS,
    SAVED,
    UPVOTED,
    UserPaper,
    confidence,
    record_table,
)
from paperfeed.follows import (
    NOTHING_FOLLOWED,
    Followed,
    StoredFollows,
    decode_follows,
    followed_papers,
    no_follows,
)
from paperfeed.offload import Offload
from paperfeed.recsys import affinity, itemknn, kernels
from paperfeed.recsys.content import (
    FloatArray,
    ReaderProfile,
    WeightedTerms,
    profile_scores,
    profile_similarity,
    reader_profile,
    weighted_terms,
)
from paperfeed.recsys.index import (
    HOT_TODAY_BIT,
    HOT_WEEK_BIT,
    CatalogIndex,
    TrendSnapshot,
)
from paperfeed.recsys.matrix import DISMISS_WEIGHT, cell_weight
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.ranker import (
    CONTENT_ONLY,
    TIE_BREAK,
    BlendParams,
    IntArray,
    Signals,
    blend,
    history_weight,
)
from paperfeed.recsys.repository import ModelRepository, decode_vector, encode_vector
from paperfeed.recsys.search import INLINE_WORK, Found, find, query_columns, work
from paperfeed.serving.holder import ModelHolder
from paperfeed.store import keys
from paperfeed.store.budgets import LocalWindows, OverBudget, ReaderBudget
from paperfeed.store.client import is_cluster
from paperfeed.store.pressure import note_refused, refused_for_memory
from paperfeed.store.scripts import lua
from paperfeed.users import Users

FEED_CACHE = Counter(
    "paperfeed_feed_cache_total",
    "Feeds answered from the reader's cached ranking (hit), its candidates re-sorted"
    " after impressions (resort), or ranked anew (miss)",
    ["result"],
)
for _result in ("hit", "resort", "miss"):
    FEED_CACHE.labels(result=_result)  # every series from the start, at 0

FEED_WORK = Counter(
    "paperfeed_feed_work_total",
    "Re-sorts after impressions by where they ran: on the event loop (a small one costs"
    " less than handing it to a thread) or in the feed pool",
    ["work", "on"],
)
for _on in ("loop", "pool"):
    FEED_WORK.labels(work="resort", on=_on)

TRENDING_CANDIDATES = 300
TODAY_CANDIDATES = 100
RECENT_CANDIDATES = 200
PERSONAL_CANDIDATES = 200
IMPRESSION_PENALTY = 0.25
FRESH_BOOST = 1.0
FRESH_DAYS = 7.0
FOLLOW_PAGE = 10
"""A followed author's new paper, not yet shown, ranks at least this high (the popup's
first screen; ``first_page_for_followed_authors``)."""
FOLLOW_WEIGHT = 2.0
"""How far a paper of a followed author or topic is lifted, in spreads of the blended
scores, when the blend has no learned follow weight (``BlendParams.follow`` None: a
model from before it, data without authors, or a reader ranked without the learned
blend): a prior (``docs/follows.md``)."""
ANCHOR_SIMILARITY = 0.3
ANCHORS = 100
CACHE_DEPTH = 50
"""Papers kept in a reader's cached feed (a larger ``limit`` computes and keeps more)."""


class FeedItem(msgspec.Struct):
    paper: Paper
    score: float
    reasons: list[str]


class Feed(msgspec.Struct):
    items: list[FeedItem]
    model_version: str | None


class SimilarItem(msgspec.Struct):
    paper: Paper
    score: float


class Similar(msgspec.Struct):
    items: list[SimilarItem]
    model_version: str | None


class SearchItem(msgspec.Struct):
    paper: Paper
    score: float


class SearchResults(msgspec.Struct):
    query: str
    items: list[SearchItem]
    personal: bool
    """Ranked for the caller too (a token was sent), not by text and trending alone."""


class Reader(NamedTuple):
    """What the feed knows of a reader, over the catalog index."""

    positions: IntArray
    """Catalog positions of the papers they have a record of."""
    weights: FloatArray
    """Their matrix weight (confidence; -1 dismissed; 0 only shown)."""
    verbs: list[str]
    hidden: IntArray
    """Positions never to show: opened, flagged (upvoted, saved, shared, dismissed)."""
    shown: IntArray
    """Positions of the papers only shown to the reader, sorted ..."""
    shown_times: FloatArray
    """... and how many times each was."""

    @property
    def liked(self) -> IntArray:
        return self.positions[self.weights > 0]

    @property
    def positives(self) -> int:
        return int((self.weights > 0).sum())


class Table(NamedTuple):
    """A ranking's candidates and what the reader's vector and text profile made of
    each: all an impression leaves unchanged (it changes only their penalty), kept with
    the cached feed so that a feed after impressions re-sorts them (``finish``) instead
    of ranking anew."""

    positions: IntArray
    cf: FloatArray
    """The reader's vector dotted with each candidate's factors (zeros without one)."""
    content: FloatArray
    """The cosine of the reader's text profile and each candidate's text."""
    personal: bool
    """Whether the reader had a vector (the learned blend, else ``CONTENT_ONLY``)."""
    trending: FloatArray
    """Each candidate's week trending score in the snapshot it was ranked with ..."""
    hot: npt.NDArray[np.uint8]
    """... and whether it was among that snapshot's hottest (``HOT_TODAY_BIT``,
    ``HOT_WEEK_BIT``): a re-sort ranks with the snapshot the candidates came from, as
    the ranking did (each process takes its own snapshot, every ten minutes)."""
    itemknn: FloatArray
    """The sum of each candidate's similarities to the reader's liked papers in the
    model's item-kNN lists (zeros when the model's blend does not use them)."""


class Ranked(NamedTuple):
    positions: IntArray
    scores: FloatArray
    reasons: list[list[str]]
    vector: FloatArray | None
    """The reader's vector, when it was folded in for this feed."""
    table: Table | None = None
    """The candidates this ranking sorted (None: none)."""


def verb(record: UserPaper) -> str:
    if record.saved:
        return "saved"
    if record.upvoted:
        return "upvoted"
    return "read"


def reader_of(index: CatalogIndex, records: dict[str, UserPaper]) -> Reader:
    ids = list(records)
    positions = index.positions(ids)
    weights = np.array([cell_weight(records[p].w, records[p].f) for p in ids], dtype=np.float32)
    hidden = np.array(
        [
            pos
            for pos, pid in zip(positions, ids, strict=True)
            if records[pid].opened or records[pid].f
        ],
        dtype=np.int64,
    )
    times = np.array([records[pid].i for pid in ids], dtype=np.float32)
    was_shown = (positions >= 0) & (times > 0)
    order = np.argsort(positions[was_shown], kind="stable")
    known = positions >= 0
    return Reader(
        positions=positions[known],
        weights=weights[known],
        verbs=[verb(records[pid]) for pid, k in zip(ids, known, strict=True) if k],
        hidden=hidden[hidden >= 0],
        shown=positions[was_shown][order],
        shown_times=times[was_shown][order],
    )


class Ops(NamedTuple):
    """The sparse primitives a ranking is made of. ``COMPILED`` (``recsys.kernels``)
    serves; ``REFERENCE`` (scipy) is what they are held to: the same papers, in the same
    order, with the same scores (``tests/test_kernels.py``)."""

    similarity: Callable[[sparse.csr_matrix, ReaderProfile], FloatArray]
    """The profile's cosine with every paper of a postings matrix (terms, papers)."""
    scores: Callable[[sparse.csr_matrix, IntArray, ReaderProfile], FloatArray]
    """The profile's cosine with the papers at some rows of the text matrix."""
    pairs: Callable[[sparse.csr_matrix, IntArray, IntArray], npt.NDArray[np.float32]]
    """Cosine of the text of the papers at two lists of rows (rows x columns)."""
    terms: WeightedTerms
    """The first step of the reader's text profile (``content.reader_profile``)."""
    union: Callable[[IntArray, IntArray, int], IntArray]
    """The distinct positions of the candidate lists (concatenated), but the hidden
    ones, ascending (positions within the catalog's size)."""
    rows_sum: Callable[[sparse.csr_matrix, IntArray], FloatArray]
    """The sum of some rows (distinct, ascending) of a CSR matrix, dense: a reader's
    item-kNN scores from their liked papers' neighbour lists."""
    final: Callable[
        [CatalogIndex, Table, Reader, float, Followed], tuple[FloatArray, Signals, FloatArray]
    ]
    """Stage 3, ``scores``: the blend and the rules over a candidate table."""
    choose: Callable[
        [
            CatalogIndex, TrendSnapshot, FloatArray | None, ReaderProfile, IntArray, Followed,
            FloatArray | None,
        ],
        IntArray,
    ]  # fmt: skip
    """Stage 1, ``candidates``."""


def best(scores: FloatArray, n: int) -> IntArray:
    """Indexes of the ``n`` highest ``scores``, ties broken by the lower index (a rule,
    where ``argpartition`` alone picks among ties as its algorithm falls), ascending.
    numpy's introselect finds the threshold (numba's partition is 40 times slower)."""
    if len(scores) <= n:
        return np.arange(len(scores), dtype=np.int64)
    threshold = np.partition(-scores, n - 1)[n - 1]
    above = np.flatnonzero(-scores < threshold)
    ties = np.flatnonzero(-scores == threshold)[: n - len(above)]
    return np.sort(np.concatenate([above, ties])).astype(np.int64)


def _pairs_reference(
    text: sparse.csr_matrix, left: IntArray, right: IntArray
) -> npt.NDArray[np.float32]:
    return np.asarray((text[left] @ text[right].T).todense(), dtype=np.float32)


def _union_reference(parts: IntArray, hidden: IntArray, size: int) -> IntArray:
    found = np.unique(parts).astype(np.int64)
    return found[~np.isin(found, hidden)]


def _rows_sum_reference(matrix: sparse.csr_matrix, rows: IntArray) -> FloatArray:
    ones = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (np.zeros(len(rows), dtype=np.int64), rows)),
        shape=(1, matrix.shape[0]),
    )
    return np.asarray((ones @ matrix).toarray(), dtype=np.float32).ravel()


def _final_reference(
    index: CatalogIndex, table: Table, reader: Reader, now: float, followed: Followed
) -> tuple[FloatArray, Signals, FloatArray]:
    return scores_reference(index, table, reader, now, followed)


def _choose_reference(
    index: CatalogIndex,
    trend: TrendSnapshot,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    hidden: IntArray,
    followed: Followed,
    knn: FloatArray | None,
) -> IntArray:
    return candidates_numpy(index, trend, vector, text_profile, hidden, REFERENCE, followed, knn)


REFERENCE = Ops(
    profile_similarity,
    profile_scores,
    _pairs_reference,
    weighted_terms,
    _union_reference,
    _rows_sum_reference,
    _final_reference,
    _choose_reference,
)


def _similarity_compiled(by_term: sparse.csr_matrix, profile: ReaderProfile) -> FloatArray:
    return kernels.postings_scores(
        by_term.indptr, by_term.indices, by_term.data, profile.terms, profile.weights,
        by_term.shape[1],
    )  # fmt: skip


def _scores_compiled(text: sparse.csr_matrix, rows: IntArray, profile: ReaderProfile) -> FloatArray:
    dense = np.zeros(text.shape[1], dtype=np.float32)
    dense[profile.terms] = profile.weights
    return kernels.rows_dot(text.indptr, text.indices, text.data, rows, dense)


def _pairs_compiled(
    text: sparse.csr_matrix, left: IntArray, right: IntArray
) -> npt.NDArray[np.float32]:
    return kernels.row_pairs_dot(text.indptr, text.indices, text.data, left, right, text.shape[1])


def _terms_compiled(
    text: sparse.csr_matrix, rows: IntArray, weights: FloatArray
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    touched, sums = kernels.weighted_terms(
        text.indptr, text.indices, text.data, rows, weights, text.shape[1]
    )
    terms = np.sort(touched)
    return terms, sums[terms]


def _union_compiled(parts: IntArray, hidden: IntArray, size: int) -> IntArray:
    return kernels.visible_union(parts, hidden, size)


def _rows_sum_compiled(matrix: sparse.csr_matrix, rows: IntArray) -> FloatArray:
    return kernels.rows_sum(matrix.indptr, matrix.indices, matrix.data, rows, matrix.shape[1])


def _final_compiled(
    index: CatalogIndex, table: Table, reader: Reader, now: float, followed: Followed
) -> tuple[FloatArray, Signals, FloatArray]:
    return scores_compiled(index, table, reader, now, followed)


def _choose_compiled(
    index: CatalogIndex,
    trend: TrendSnapshot,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    hidden: IntArray,
    followed: Followed,
    knn: FloatArray | None,
) -> IntArray:
    return candidates_compiled(index, trend, vector, text_profile, hidden, followed, knn)


COMPILED = Ops(
    _similarity_compiled,
    _scores_compiled,
    _pairs_compiled,
    _terms_compiled,
    _union_compiled,
    _rows_sum_compiled,
    _final_compiled,
    _choose_compiled,
)


_T, _F, _V, _C, _I, _DW = (RECORD_FIELDS.index(name) for name in ("t", "f", "v", "c", "i", "dw"))


def reader_of_stored(index: CatalogIndex, raw_records: dict[str, str]) -> Reader:
    """``reader_of`` the records as read from Redis, decoded in one pass (``record_table``)
    instead of one object a record: the same reader."""
    ids = list(raw_records)
    table = record_table([str(raw) for raw in raw_records.values()])
    flags = table[:, _F].astype(np.int64)
    views, clicks = table[:, _V], table[:, _C]
    weights = np.where(
        flags & DISMISSED, DISMISS_WEIGHT, confidence(flags, views, clicks, table[:, _DW])
    ).astype(np.float32)
    positions = index.positions(ids)
    hidden = positions[((views > 0) | (clicks > 0) | (flags != 0)) & (positions >= 0)]
    times = table[:, _I].astype(np.float32)
    was_shown = (positions >= 0) & (times > 0)
    order = np.argsort(positions[was_shown], kind="stable")
    known = positions >= 0
    verbs = np.where(flags & SAVED, "saved", np.where(flags & UPVOTED, "upvoted", "read"))
    return Reader(
        positions=positions[known],
        weights=weights[known],
        verbs=verbs[known].tolist(),
        hidden=hidden.astype(np.int64),
        shown=positions[was_shown][order],
        shown_times=times[was_shown][order],
    )


def fold_in(model: RecModel, index: CatalogIndex, reader: Reader) -> FloatArray:
    """The reader's vector from everything they did with papers the model knows."""
    rows = index.model_rows[reader.positions]
    keep = (rows >= 0) & (reader.weights != 0)
    rows, weights = rows[keep], reader.weights[keep]
    if len(np.unique(rows)) == len(rows):
        return model.fold_in_row(rows, weights)
    # Two of the reader's ids for one paper (a merge): the sparse row adds them up.
    row = sparse.csr_matrix(
        (weights, (np.zeros(len(rows), dtype=np.int64), rows)), shape=(1, len(model.item_ids))
    )
    return model.fold_in_reader(row)


def profile(index: CatalogIndex, reader: Reader, ops: Ops = COMPILED) -> ReaderProfile:
    """The reader's text profile: their liked papers' text, weighted (``profiles``)."""
    return reader_profile(index.text, reader.positions, reader.weights, ops.terms)


def neighbour_scores(index: CatalogIndex, reader: Reader, ops: Ops = COMPILED) -> FloatArray | None:
    """The reader's item-kNN score of every paper of the model (the sum of the
    neighbour lists of the papers they liked: a sparse gather), or None when the model
    has no lists in use or the reader liked nothing it knows."""
    model = index.model
    if model is None or model.neighbours is None or model.meta.blend.itemknn == 0:
        return None
    rows = itemknn.history_rows(index.model_rows[reader.liked])
    if len(rows) == 0:
        return None
    return ops.rows_sum(model.neighbours, rows)


def at_positions(index: CatalogIndex, by_model: FloatArray, positions: IntArray) -> FloatArray:
    """Values over the model's papers at catalog ``positions`` (0 where it has none)."""
    rows = index.model_rows[positions]
    values: FloatArray = np.where(rows >= 0, by_model[np.maximum(rows, 0)], 0.0).astype(np.float32)
    return values


# --- 1. candidates ------------------------------------------------------------------


def candidates(
    index: CatalogIndex,
    trend: TrendSnapshot,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    hidden: IntArray,
    ops: Ops = COMPILED,
    followed: Followed = NOTHING_FOLLOWED,
    knn: FloatArray | None = None,
) -> IntArray:
    """Positions worth ranking for the reader (the module doc says which), but the
    ``hidden`` ones (``Reader.hidden``: what they opened or flagged), ascending;
    ``knn``: their ``neighbour_scores``."""
    return ops.choose(index, trend, vector, text_profile, hidden, followed, knn)


def candidates_compiled(
    index: CatalogIndex,
    trend: TrendSnapshot,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    hidden: IntArray,
    followed: Followed = NOTHING_FOLLOWED,
    knn: FloatArray | None = None,
) -> IntArray:
    """``candidates_numpy`` in one compiled pass (``kernels.candidate_union``: the
    text match, the three best-of-the-pool picks, the union and the hidden filter)
    after the pool's product with the reader's vector (numpy's, as the reference's:
    the same BLAS, the same sums)."""
    pool = index.pool
    fixed = np.concatenate([
        trend.week_top[:TRENDING_CANDIDATES], trend.today_top[:TODAY_CANDIDATES],
        index.newest[:RECENT_CANDIDATES], followed.positions,
    ]).astype(np.int64, copy=False)  # fmt: skip
    by_vector = (
        (index.pool_factors @ vector).astype(np.float32, copy=False)
        if vector is not None and index.pool_factors is not None and len(pool)
        else NO_FLOATS
    )
    by_term = index.newest_by_term
    if by_term.shape[1] != len(pool):  # the kernel writes by these columns: no bounds checks
        raise ValueError(f"postings of {by_term.shape[1]} papers for a pool of {len(pool)}")
    return kernels.candidate_union(
        fixed, pool, by_vector, by_term.indptr, by_term.indices, by_term.data,
        text_profile.terms, text_profile.weights, NO_FLOATS if knn is None else knn,
        index.model_rows, hidden.astype(np.int64, copy=False), len(index), PERSONAL_CANDIDATES,
    )  # fmt: skip


def candidates_numpy(
    index: CatalogIndex,
    trend: TrendSnapshot,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    hidden: IntArray,
    ops: Ops = REFERENCE,
    followed: Followed = NOTHING_FOLLOWED,
    knn: FloatArray | None = None,
) -> IntArray:
    """``candidates`` in numpy, with ``ops``' text match and union."""
    parts = [
        trend.week_top[:TRENDING_CANDIDATES],
        trend.today_top[:TODAY_CANDIDATES],
        index.newest[:RECENT_CANDIDATES],
        followed.positions,
    ]
    pool = index.pool
    if vector is not None and index.pool_factors is not None and len(pool):
        parts.append(pool[best(index.pool_factors @ vector, PERSONAL_CANDIDATES)])
    if len(text_profile.terms) and len(pool):
        by_text = ops.similarity(index.newest_by_term, text_profile)
        parts.append(pool[best(by_text, PERSONAL_CANDIDATES)])
    if knn is not None and len(pool):
        by_knn = at_positions(index, knn, pool)
        picked = best(by_knn, PERSONAL_CANDIDATES)
        parts.append(pool[picked[by_knn[picked] > 0]])  # read with theirs, not zeros
    return ops.union(
        np.concatenate(parts).astype(np.int64), hidden.astype(np.int64, copy=False), len(index)
    )


# --- 3. scores ----------------------------------------------------------------------


def signals_of(
    index: CatalogIndex,
    trend: TrendSnapshot,
    positions: IntArray,
    vector: FloatArray | None,
    text_profile: ReaderProfile,
    ops: Ops = COMPILED,
    knn: FloatArray | None = None,
) -> Table:
    """The candidates' raw collaborative, content, trending and item-kNN signals."""
    n = len(positions)
    if vector is not None and index.factors is not None:
        cf = (index.factors[positions] @ vector).astype(np.float32)
    else:
        cf = np.zeros(n, dtype=np.float32)
    content = ops.scores(index.text, positions, text_profile)
    trending = (
        trend.week[positions].astype(np.float32)
        if len(trend.week) == len(index)
        else np.zeros(n, np.float32)
    )
    hot = trend.hot[positions] if len(trend.hot) == len(index) else np.zeros(n, np.uint8)
    by_knn = np.zeros(n, np.float32) if knn is None else at_positions(index, knn, positions)
    return Table(positions, cf, content, vector is not None, trending, hot, by_knn)


def scores(
    index: CatalogIndex,
    table: Table,
    reader: Reader,
    now: float,
    followed: Followed = NOTHING_FOLLOWED,
    ops: Ops = COMPILED,
) -> tuple[FloatArray, Signals, FloatArray]:
    """(final scores, the blend's signals, ages in days) of the candidates."""
    return ops.final(index, table, reader, now, followed)


def scores_reference(
    index: CatalogIndex,
    table: Table,
    reader: Reader,
    now: float,
    followed: Followed = NOTHING_FOLLOWED,
) -> tuple[FloatArray, Signals, FloatArray]:
    """``scores`` in numpy: ``ranker.blend`` (the code ``paperfeed eval`` measures), then
    the rules. ``scores_compiled`` is held to it bit for bit."""
    model = index.model
    positions = table.positions
    n = len(positions)
    cf = table.cf[None, :]
    content = table.content[None, :]
    ages = np.maximum(0.0, (now - index.dates[positions]) / 86_400).astype(np.float32)
    trending = table.trending.copy()
    # Trending cannot know yet what a paper of this week is worth: a fresh paper counts
    # as at least as hot as the median candidate, and competes on relevance.
    fresh = ages <= FRESH_DAYS
    if n:
        trending[fresh] = np.maximum(trending[fresh], np.median(trending))
    params = model.meta.blend if model is not None and table.personal else CONTENT_ONLY
    blended, signals = blend(
        cf,
        content,
        trending,
        np.array([reader.positives], dtype=np.float64),
        index.cold[positions],
        params,
        table.itemknn[None, :],
        follow_signal(index, reader, followed, positions) if params.follow else None,
    )
    shown = times_shown(reader, positions)
    # The rules are in units of the blend's spread: learned weights set its scale.
    spread = float(blended[0].std()) if n > 1 else 1.0
    spread = spread if spread > 1e-6 else 1.0
    boost = np.where(fresh, FRESH_BOOST * 2 ** (-ages / 2), 0.0)
    if not params.follow:
        # The reader asked for these papers by following their author or topic; with no
        # learned weight for that (none, or 0: reading history said author affinity does
        # not predict reading, but a follow is a request), the prior lifts them (a
        # positive learned weight is in the blend).
        boost = boost + FOLLOW_WEIGHT * np.isin(positions, followed.positions)
    final = (blended[0] + spread * (boost - IMPRESSION_PENALTY * shown)).astype(np.float32)
    return first_page_for_followed_authors(final, positions, followed, shown), signals, ages


def scores_compiled(
    index: CatalogIndex,
    table: Table,
    reader: Reader,
    now: float,
    followed: Followed = NOTHING_FOLLOWED,
) -> tuple[FloatArray, Signals, FloatArray]:
    """``scores_reference`` to the last bit, in two compiled passes (``kernels``:
    ``candidate_ages``, ``blend_scores``) around numpy's own log1p and power, where the
    reference makes some forty numpy calls on arrays of a few hundred (each costing more
    than its arithmetic, and taking the GIL from the event loop)."""
    model = index.model
    positions = table.positions
    params = model.meta.blend if model is not None and table.personal else CONTENT_ONLY
    ages, fresh, raised, halved = kernels.candidate_ages(
        index.dates, positions, table.trending, median(table.trending), now,
        np.float32(FRESH_DAYS),
    )  # fmt: skip
    # numpy's transcendental functions, as the reference's (not numba's libm).
    trend_log = np.log1p(np.maximum(raised, 0)).astype(np.float32)
    powers = np.float32(2.0) ** halved
    weights = reader_weights(params, reader.positives)
    follow = (
        follow_signal(index, reader, followed, positions)[0].astype(np.float32, copy=False)
        if params.follow
        else NO_FLOATS
    )
    # Without a learned follow weight the prior lifts followed papers, and numpy's
    # promotion of that lift puts the rules in float64: the kernel follows it.
    lift = (
        NO_DOUBLES
        if params.follow
        else FOLLOW_WEIGHT * np.isin(positions, followed.positions).astype(np.float64)
    )
    shown = kernels.shown_times(reader.shown, reader.shown_times, positions)
    final, cf_z, content_z, trend_z, knn_z = kernels.blend_scores(
        table.cf, table.content, trend_log, table.itemknn, follow, index.cold[positions],
        fresh, powers, lift, shown, params.collaborative, weights.blend,
        np.float32(IMPRESSION_PENALTY),
    )  # fmt: skip
    knn_used = params.itemknn != 0
    signals = Signals(
        cf=cf_z[None, :],
        content=content_z[None, :],
        trending=trend_z,
        content_weight=weights.content,
        trending_weight=weights.trending,
        itemknn=knn_z[None, :] if knn_used else None,
        itemknn_weight=weights.itemknn if knn_used else None,
    )
    return first_page_for_followed_authors(final, positions, followed, shown), signals, ages


def median(values: FloatArray) -> np.float32:
    """``np.median`` of float32 ``values`` (0 when empty), without its generality (a
    fifth of a re-sort's time): the middle order statistic, or the mean of the two in
    float32 (numpy's mean of two values is their float32 sum halved)."""
    n = len(values)
    if n == 0:
        return np.float32(0.0)
    middle = n // 2
    if n % 2:
        return np.float32(np.partition(values, middle)[middle])
    part = np.partition(values, (middle - 1, middle))
    return np.float32((part[middle - 1] + part[middle]) / np.float32(2.0))


NO_FLOATS = np.zeros(0, dtype=np.float32)
NO_DOUBLES = np.zeros(0, dtype=np.float64)


class ReaderWeights(NamedTuple):
    """A reader's blend weights, as ``ranker.blend`` computes them for their history."""

    content: FloatArray
    trending: FloatArray
    itemknn: FloatArray
    blend: FloatArray
    """``kernels.blend_scores``' weights: cold_cf, content, trending with the tie
    break, item-kNN (0: off), follow (0: off), the fresh boost; float32."""


@functools.lru_cache(maxsize=4096)
def reader_weights(params: BlendParams, positives: int) -> ReaderWeights:
    """``ranker.blend``'s weights for a history of ``positives`` (the same numpy calls,
    once a history length and blend: readers share them)."""
    history = np.array([positives], dtype=np.float64)
    median = params.median_history
    content = history_weight(params.content, params.content_slope, history, median)
    trending = history_weight(params.trending, params.trending_slope, history, median)
    trending = np.where(history > 0, trending, 1.0).astype(np.float32)
    itemknn = history_weight(params.itemknn, params.itemknn_slope, history, median)
    blend = np.array(
        [
            np.float32(params.cold_cf),
            content[0],
            (trending + TIE_BREAK)[0],
            itemknn[0] if params.itemknn != 0 else 0.0,
            np.float32(params.follow) if params.follow else 0.0,
            np.float32(FRESH_BOOST),
        ],
        dtype=np.float32,
    )
    for array in (content, trending, itemknn, blend):
        array.flags.writeable = False  # shared by every ranking
    return ReaderWeights(content, trending, itemknn, blend)


def first_page_for_followed_authors(
    final: FloatArray, positions: IntArray, followed: Followed, shown: FloatArray
) -> FloatArray:
    """``final`` with each new paper of a followed author that the reader has not been
    shown yet raised, if it is lower, just above the ``FOLLOW_PAGE``-th best of the other
    candidates: an author followed is a request to be told of their papers, which a blend
    weighing everything else may leave on page four. Once shown, it competes as the
    others do (its lift, its impressions). Topics bring many papers: they are not owed."""
    if not len(followed.by_author) or not len(final):
        return final
    owed = np.isin(positions, followed.by_author) & (shown == 0)
    others = final[~owed]
    if not owed.any() or not len(others):
        return final
    nth = min(FOLLOW_PAGE, len(others))
    nth_best = np.partition(others, len(others) - nth)[len(others) - nth]
    floor = np.nextafter(nth_best, np.float32(np.inf), dtype=np.float32)
    raised = final.copy()
    raised[owed] = np.maximum(final[owed], floor)
    return raised


def follow_signal(
    index: CatalogIndex, reader: Reader, followed: Followed, positions: IntArray
) -> FloatArray:
    """(1, n) the reader's follow affinity to the papers at ``positions``: their liked
    papers by each one's authors and in its topic, their follows counting as several
    (``recsys.affinity``, the signal the trainer learned the weight of)."""
    return affinity.one_reader(
        index.affinity, reader.liked, positions, followed.authors, followed.topics
    )


def times_shown(reader: Reader, positions: IntArray) -> FloatArray:
    """How many times each paper at ``positions`` was only shown to the reader."""
    if len(reader.shown) == 0:
        return np.zeros(len(positions), dtype=np.float32)
    at = np.minimum(np.searchsorted(reader.shown, positions), len(reader.shown) - 1)
    return np.where(reader.shown[at] == positions, reader.shown_times[at], 0.0).astype(np.float32)


# --- 4. reasons ---------------------------------------------------------------------


def reasons(
    index: CatalogIndex,
    reader: Reader,
    table: Table,
    chosen: IntArray,
    signals: Signals,
    ages: FloatArray,
    ops: Ops = COMPILED,
    followed: Followed = NOTHING_FOLLOWED,
) -> list[list[str]]:
    """Why each chosen candidate (indexes into ``table``) is in the feed."""
    positions = table.positions
    liked = reader.weights > 0
    anchor_order = np.argsort(-reader.weights[liked], kind="stable")[:ANCHORS]
    anchors = reader.positions[liked][anchor_order]
    anchor_verbs = [reader.verbs[i] for i in np.flatnonzero(liked)[anchor_order]]
    similarity = (
        ops.pairs(index.text, positions[chosen], anchors)
        if len(anchors)
        else np.zeros((len(chosen), 0), dtype=np.float32)
    )
    topics = index.topics
    own_topics = (
        set(topics.of_paper[reader.liked].tolist()) - {-1} if len(topics.of_paper) else set()
    )
    chosen_hot = table.hot[chosen].tolist()
    personal = reader.positives > 0 and index.model is not None
    # Python numbers for the loop below (a numpy scalar costs ten times more each).
    if similarity.shape[1]:
        nearest = similarity.argmax(axis=1)
        nearest_similarity = similarity[np.arange(len(chosen)), nearest].tolist()
        nearest_list = nearest.tolist()
    # "Readers like you" only of a paper readers interacted with: a paper without any
    # (cold) has factors borrowed from its text neighbours, so a high collaborative score
    # there says "like papers you read", which the text reason says when it is true.
    chosen_cf = np.where(index.cold[positions[chosen]], 0.0, signals.cf[0, chosen]).tolist()
    co_read, co_read_anchor = read_with(index, anchors, positions[chosen], signals, chosen)
    chosen_ages = ages[chosen].tolist()
    chosen_topics = (
        topics.of_paper[positions[chosen]].tolist() if len(topics.of_paper) else [-1] * len(chosen)
    )
    anchor_list = anchors.tolist()
    chosen_followed = [followed.reasons.get(p) for p in positions[chosen].tolist()]
    out = []
    for row in range(len(chosen)):
        why: list[str] = []
        follow_reason = chosen_followed[row]
        if follow_reason is not None:
            why.append(follow_reason)  # what the reader asked for, first
        if similarity.shape[1]:
            nearest_anchor = nearest_list[row]
            if nearest_similarity[row] >= ANCHOR_SIMILARITY:
                title = index.titles[anchor_list[nearest_anchor]]
                why.append(f"because you {anchor_verbs[nearest_anchor]} “{title}”")
        if co_read[row]:
            # Read with one of theirs (and not the paper the text reason names).
            anchor = anchor_list[co_read_anchor[row]]
            if not why or index.titles[anchor] not in why[0]:
                why.append(f"readers of “{index.titles[anchor]}” also read it")
        if personal and chosen_cf[row] > 1.0:
            why.append("popular with readers like you")
        if chosen_hot[row] & HOT_TODAY_BIT:
            why.append("trending today")
        elif chosen_hot[row] & HOT_WEEK_BIT:
            why.append("trending this week")
        topic = chosen_topics[row]
        age = chosen_ages[row]
        if follow_reason is not None:
            pass  # a follow's reason says new already (it brings only new papers)
        elif age <= FRESH_DAYS and topic in own_topics:
            # New in a topic of the reader's own papers: says more than "new".
            why.append(f"new in {topics.names[topic]}")
        elif age < 1:
            why.append("new today")
        elif age <= FRESH_DAYS:
            why.append("new this week")
        if not why:
            why.append("matches your interests" if reader.positives else "trending")
        out.append(why)
    return out


READ_WITH_SIGNAL = 1.0
"""A paper's standardised item-kNN signal above which its reason names the reader's
paper it was most read with (as "popular with readers like you" takes the collaborative
signal above 1)."""


def read_with(
    index: CatalogIndex, anchors: IntArray, chosen_positions: IntArray, signals: Signals,
    chosen: IntArray,
) -> tuple[list[bool], list[int]]:  # fmt: skip
    """For each chosen paper: whether the item-kNN signal put it high (weighed, above
    ``READ_WITH_SIGNAL``), and the anchor (index into ``anchors``, the reader's liked
    papers) whose neighbour list holds it with the highest similarity: other readers
    liked both, in the model's data."""
    model = index.model
    none = ([False] * len(chosen), [0] * len(chosen))
    weight = signals.itemknn_weight
    if (
        model is None
        or model.neighbours is None
        or signals.itemknn is None
        or weight is None
        or float(weight[0]) <= 0
        or len(anchors) == 0
    ):
        return none
    similarity = itemknn.pair_similarity(
        model.neighbours, index.model_rows[chosen_positions], index.model_rows[anchors]
    )
    nearest = similarity.argmax(axis=1)
    held = similarity[np.arange(len(chosen)), nearest] > 0
    high = signals.itemknn[0, chosen] > READ_WITH_SIGNAL
    return (held & high).tolist(), nearest.tolist()


def rank_stored(
    index: CatalogIndex,
    trend: TrendSnapshot,
    raw_records: dict[str, str],
    raw_vector: str | None,
    events: int,
    limit: int,
    now: float,
    ops: Ops = COMPILED,
    follows: StoredFollows | None = None,
    follows_at: float | None = None,
) -> Ranked:
    """``rank`` from the reader's records as read from Redis (decoding a long history
    is CPU work too: it runs in the pool with the rest); ``events``: their event count,
    read before the records; ``follows``: theirs, their papers of the ``FRESH_DAYS``
    before ``follows_at`` (default ``now``; ``follows_window``)."""
    vector = cached_vector(index, raw_vector, events)
    followed = followed_papers(index, follows or no_follows(), follows_at or now, FRESH_DAYS)
    reader = reader_of_stored(index, raw_records)
    return rank(index, trend, reader, vector, limit, now, ops, followed)


def rank(
    index: CatalogIndex,
    trend: TrendSnapshot,
    reader: Reader,
    vector: FloatArray | None,
    limit: int,
    now: float,
    ops: Ops = COMPILED,
    followed: Followed = NOTHING_FOLLOWED,
) -> Ranked:
    """The whole pipeline for one reader (CPU only: run it off the event loop)."""
    folded = None
    if index.model is not None and vector is None and reader.positives:
        vector = folded = fold_in(index.model, index, reader)
    text_profile = profile(index, reader, ops)
    knn = neighbour_scores(index, reader, ops) if vector is not None else None
    found = candidates(index, trend, vector, text_profile, reader.hidden, ops, followed, knn)
    if len(found) == 0:
        return Ranked(found, np.zeros(0, np.float32), [], folded)
    table = signals_of(index, trend, found, vector, text_profile, ops, knn)
    return finish(index, reader, table, limit, now, ops, folded, followed)


def finish(
    index: CatalogIndex,
    reader: Reader,
    table: Table,
    limit: int,
    now: float,
    ops: Ops = COMPILED,
    folded: FloatArray | None = None,
    followed: Followed = NOTHING_FOLLOWED,
) -> Ranked:
    """Scores, order and reasons of the candidates in ``table``: the end of ``rank``,
    and all of a re-sort after impressions."""
    final, signals, ages = scores(index, table, reader, now, followed, ops)
    chosen = np.argsort(-final, kind="stable")[:limit]
    why = reasons(index, reader, table, chosen, signals, ages, ops, followed)
    return Ranked(table.positions[chosen], final[chosen], why, folded, table)


TABLE_HEAD = "<BBQI"
"""A kept table's head: its layout (``TABLE_FORMAT``), whether the reader had a vector,
the catalog index's fingerprint (its positions are the index's) and a CRC of the stamp
of the feed it was ranked for."""
TABLE_FORMAT = 2
"""2: with the item-kNN signal. A table of the layout before (17 bytes a candidate, its
first byte the reader's 0 or 1) is not this format: a miss, ranked anew."""
TABLE_BYTES_EACH = 21
"""A kept candidate: position, collaborative, content, trending and item-kNN signals (4
bytes each, little-endian) and its hot flags (1 byte)."""


def table_key(index: CatalogIndex, stamp: str) -> tuple[int, int]:
    """What a kept table must have been made with to be re-sorted now."""
    return index.fingerprint, zlib.crc32(stamp.encode())


def encode_table(table: Table, made_with: tuple[int, int]) -> bytes:
    """``table`` as kept in Redis: ``TABLE_HEAD``, then its columns."""
    head = struct.pack(TABLE_HEAD, TABLE_FORMAT, int(table.personal), *made_with)
    return b"".join([
        head,
        table.positions.astype("<i4").tobytes(),
        table.cf.astype("<f4").tobytes(),
        table.content.astype("<f4").tobytes(),
        table.trending.astype("<f4").tobytes(),
        table.itemknn.astype("<f4").tobytes(),
        table.hot.astype(np.uint8).tobytes(),
    ])  # fmt: skip


def decode_table(raw: bytes, made_with: tuple[int, int]) -> Table | None:
    """The kept table, if it was made with ``made_with`` (``table_key``): the same index
    and feed stamp, in this layout; else None (the feed is ranked anew)."""
    head = struct.calcsize(TABLE_HEAD)
    if len(raw) < head or (len(raw) - head) % TABLE_BYTES_EACH:
        return None
    layout, personal, *kept_with = struct.unpack_from(TABLE_HEAD, raw)
    if layout != TABLE_FORMAT or tuple(kept_with) != made_with:
        return None
    n = (len(raw) - head) // TABLE_BYTES_EACH

    def column(dtype: str, at: int) -> npt.NDArray[np.generic]:
        return np.frombuffer(raw, dtype=dtype, count=n, offset=head + at * n)

    return Table(
        column("<i4", 0).astype(np.int64),
        column("<f4", 4).astype(np.float32),
        column("<f4", 8).astype(np.float32),
        bool(personal),
        column("<f4", 12).astype(np.float32),
        column("u1", 20).astype(np.uint8),
        column("<f4", 16).astype(np.float32),
    )


class CachedFeed(msgspec.Struct, array_like=True):
    """A reader's ranked feed as kept in Redis, with what it was computed from."""

    stamp: str
    """Published model, catalog version, trending epoch, the reader's event count."""
    model_version: str | None
    ids: list[str]
    scores: list[float]
    reasons: list[list[str]]
    depth: int = 0
    """How many papers were asked of the ranking (fewer ``ids``: there were no more)."""
    events: int = -1
    """The reader's events it was computed after, impressions included (the stamp counts
    the others: a feed of the same stamp and fewer events is re-sorted, not served).
    Last, and kept last: ``feed_read.lua`` reads it at the end of the JSON array."""


encode_cached = msgspec.json.Encoder().encode
decode_cached = msgspec.json.Decoder(CachedFeed).decode


def follows_window(user_id: str, now: float, trend_s: float) -> float:
    """When the reader's current trending epoch began: the end of the window of their
    follows' recent papers (``followed_papers``) for every ranking in the epoch, so that
    a cached feed's candidates, and a re-sort of them, are what a full ranking now would
    find (a paper leaving the window mid-epoch would otherwise be in the kept table but
    not in a new ranking)."""
    offset = (zlib.crc32(user_id.encode()) % 1024) / 1024 * trend_s
    return reader_epoch(user_id, now, trend_s) * trend_s - offset


def reader_epoch(user_id: str, now: float, trend_s: float) -> int:
    """The reader's trending epoch: which ``trend_s`` window ``now`` falls in, on a clock
    offset by a hash of their id. On the common clock every cached feed would go stale at
    the same instant (a full re-rank of every reader at each snapshot boundary); offset,
    the re-ranks are spread evenly over the window, and each still waits at most
    ``trend_s`` for the newest snapshot."""
    offset = (zlib.crc32(user_id.encode()) % 1024) / 1024 * trend_s
    return int((now + offset) // trend_s)


class ReaderState(NamedTuple):
    """What ranking a reader again reads of them, in one atomic read: when it was read,
    (events, impressions among them), their records, their stored vector, their last
    ranking's candidate table and their follows (as ``_read_reader`` returns them)."""

    read_at: float
    counts: tuple[int, int]
    records: dict[str, str]
    vector: str | None
    table: bytes | None
    follows: dict[str, str]


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()


def _hash(flat: list[bytes]) -> dict[str, str]:
    """A flat HGETALL answer of a script (field, value, ...) as the client's dict."""
    it = iter(flat)
    return {field.decode(): value.decode() for field, value in zip(it, it, strict=True)}


class FeedService:
    """Feeds, each kept for its reader in Redis (``pf:{u:<id>}:feed``, shared by every
    api process) and served as it is until something that changes it happens: the
    reader's own event, a new model, a catalog change, the next trending snapshot (every
    ``trend_s``; the cache's time to live). A feed computed while Redis refuses writes
    (at ``maxmemory``) is answered without being kept (``store.pressure``)."""

    def __init__(
        self,
        catalog: Catalog,
        users: Users,
        holder: ModelHolder,
        repository: ModelRepository,
        offload: Offload,
        trend_s: float,
    ) -> None:
        self.catalog = catalog
        self.users = users
        self.holder = holder
        self.repository = repository
        self.offload = offload
        self.trend_s = trend_s
        self.redis = repository.redis
        self._keep = self.redis.register_script(lua("reader_cache"))
        self._read_script = lua("reader_budget") + lua("feed_read")
        self._one_server = not is_cluster(self.redis)
        self._local = LocalWindows()

    async def index(
        self, catalog_version: str | None = None, model_version: str | None = None
    ) -> CatalogIndex:
        """The catalog index, rebuilt first when it is older than the versions given (an
        import or a new model shows in the very next feed)."""
        index = self.holder.index
        if (
            index is None
            or (catalog_version is not None and index.catalog_version != catalog_version)
            or (model_version is not None and index.model_version != model_version)
        ):
            await self.holder.refresh()
            index = self.holder.index
        assert index is not None
        return index

    async def feed(
        self,
        user_id: str,
        limit: int,
        now: float | None = None,
        budget: ReaderBudget | None = None,
    ) -> Feed:
        """The reader's feed; ``budget``: their install's request budget, spent here (the
        request's one round trip: the budget, their event count and cached feed in one
        script, the catalog and model versions beside it in the same pipeline)."""
        now = time.time() if now is None else now
        counts, raw_cached, catalog_version, model_version, state = await self._read_cached(
            user_id, now, budget
        )
        if counts is None:  # no profile: the reader was erased (their token may be cached)
            raise Unauthorized("unknown or revoked token")
        events, impressions, follows = counts
        model_version, catalog_version = self.holder.serving_versions(
            model_version, catalog_version
        )
        stamp = self.stamp(
            user_id, model_version, catalog_version, now, events - impressions, follows
        )
        if raw_cached:
            cached = decode_cached(raw_cached)
            if cached.stamp == stamp and max(len(cached.ids), cached.depth) >= limit:
                if cached.events == events:
                    FEED_CACHE.labels(result="hit").inc()
                    return await self._answer(cached, limit)
                # Only impressions since: the same candidates, their penalties anew.
                resorted = await self.resort(user_id, cached, now, counts, state)
                if resorted is not None:
                    FEED_CACHE.labels(result="resort").inc()
                    return await self._answer(resorted, limit)
        FEED_CACHE.labels(result="miss").inc()
        computed = await self.compute(user_id, limit, now, stamp, state)
        return await self._answer(computed, limit)

    def stamp(
        self,
        user_id: str,
        model_version: str | None,
        catalog_version: str | None,
        now: float,
        ranked_events: int,
        follows: int = 0,
    ) -> str:
        """What a cached feed must have been computed from to be served: the model, the
        catalog, the reader's trending epoch, their events other than impressions and
        the changes of their follows (left out while there were none: the stamps of
        readers who never followed anything are what they were)."""
        epoch = reader_epoch(user_id, now, self.trend_s)
        followed = f"|f{follows}" if follows else ""
        return f"{model_version}|{catalog_version}|{epoch}|{ranked_events}{followed}"

    async def resort(
        self,
        user_id: str,
        cached: CachedFeed,
        now: float,
        counts: tuple[int, int, int],
        state: ReaderState | None = None,
    ) -> CachedFeed | None:
        """``cached`` with its candidates' impression penalties applied anew (``finish``
        on the kept ``Table``): what a full ranking would give, without the fold-in, the
        text profile and the search for candidates. None when it cannot be done exactly
        (the table is gone or of another index, or more than impressions happened since
        ``counts`` (events, impressions, follow changes) was read): the caller ranks
        anew. ``state``: the reader as read with ``counts`` (nothing more is read)."""
        if cached.events < 0 or cached.depth <= 0:  # kept by an earlier version
            return None
        model_version, catalog_version = cached.stamp.split("|")[:2]
        index = self.holder.index
        if index is None or (index.catalog_version, str(index.model_version)) != (
            catalog_version,
            str(None if model_version == "None" else model_version),
        ):
            return None
        if state is not None:  # read atomically with counts
            raw_records, raw_table, raw_follows = state.records, state.table, state.follows
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(keys.user_profile(user_id), ["events", "impressions", "follows"])
                pipe.hgetall(keys.user_papers(user_id))
                pipe.execute_command(
                    "GET", keys.user_candidates(user_id), **{NEVER_DECODE: True}
                )  # fmt: skip
                pipe.hgetall(keys.user_follows(user_id))
                now_counts, raw_records, raw_table, raw_follows = await pipe.execute()
            if tuple(int(count or 0) for count in now_counts) != counts:
                return None
        if not raw_table:
            return None
        table = decode_table(raw_table, table_key(index, cached.stamp))
        if table is None:
            return None
        follows = decode_follows(raw_follows)
        window = follows_window(user_id, now, self.trend_s)
        args = (index, raw_records, table, cached, now, follows, window)
        if resort_work(len(raw_records), len(table.positions)) <= INLINE_RESORT_WORK:
            FEED_WORK.labels(work="resort", on="loop").inc()
            ranked = resort_stored(*args)
        else:
            FEED_WORK.labels(work="resort", on="pool").inc()
            ranked = await self.offload(resort_stored, *args)
        resorted = CachedFeed(
            stamp=cached.stamp,
            model_version=cached.model_version,
            ids=[index.ids[p] for p in ranked.positions],
            scores=[round(float(score), 4) for score in ranked.scores],
            reasons=ranked.reasons,
            depth=cached.depth,
            events=counts[0],
        )
        await self._store(user_id, resorted, b"", b"")
        return resorted

    async def _read_cached(
        self, user_id: str, now: float, budget: ReaderBudget | None
    ) -> tuple[tuple[int, int, int] | None, Any, Any, Any, ReaderState | None]:
        """((events, impressions among them, changes of follows) or None for no reader,
        cached feed, catalog version, model version, the reader's ``ReaderState`` when the
        cached feed was missing or ranked before their last events) of the reader, their
        budget spent first (``OverBudget`` past it). Redis refusing the budget's write at
        ``maxmemory``: this process's own budget is spent, and the reads go on."""
        install, limit, window_ms, verify = (
            (budget.install, budget.limit, budget.window_ms, budget.verify)
            if budget
            else ("", 0, 60_000, "")
        )
        names = [
            keys.user_budget(user_id),
            keys.user_profile(user_id),
            keys.user_feed(user_id),
            keys.user_papers(user_id),
            keys.user_vector(user_id),
            keys.user_candidates(user_id),
            keys.user_follows(user_id),
            keys.user_installs(user_id),
        ]
        state = None
        try:
            read_at = time.time()
            # EVAL with the text (not a registered script, which would first ask Redis
            # whether it has it: a round trip more); undecoded, as the candidate table is
            # binary. On one server the versions are read by the script too (one command
            # costs the client less than a pipeline); in a cluster they live in other
            # slots, read beside it in the same pipeline.
            if self._one_server:
                names += [keys.PAPERS_VERSION, keys.MODEL_CURRENT]
            script: tuple[str | int, ...] = (
                "EVAL", self._read_script, len(names), *names, install, window_ms, limit,
                verify,
            )  # fmt: skip
            if self._one_server:
                read = await self.redis.execute_command(*script, **{NEVER_DECODE: True})
                catalog_version, model = (_text(v) for v in (read[6:8] or (None, None)))
                reader_at = 8
            else:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.execute_command(*script, **{NEVER_DECODE: True})
                    pipe.get(keys.PAPERS_VERSION)
                    pipe.get(keys.MODEL_CURRENT)
                    read, catalog_version, model = await pipe.execute()
                reader_at = 6
            count, ms_left, events, raw_cached, impressions, follows = read[:6]
            if len(read) > reader_at:
                records, vector, table, followed = read[reader_at:]
                state = ReaderState(
                    read_at=read_at,
                    counts=(int(events), int(impressions or 0)),
                    records=_hash(records),
                    vector=_text(vector),
                    table=table,
                    follows=_hash(followed),
                )
        except ResponseError as exc:
            if not refused_for_memory(exc):
                raise
            note_refused("budget", exc)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hmget(
                    keys.user_profile(user_id),
                    ["events", "impressions", "erasing", "follows", "token_hash"],
                )
                pipe.get(keys.user_feed(user_id))
                pipe.get(keys.PAPERS_VERSION)
                pipe.get(keys.MODEL_CURRENT)
                pipe.sismember(keys.user_installs(user_id), verify or "-")
                (
                    (events, impressions, erasing, follows, first_install),
                    raw_cached,
                    catalog_version,
                    model,
                    linked,
                ) = await pipe.execute()
            # The script's own check of a token that named its reader (``installed``).
            installed = not verify or first_install == verify or bool(linked)
            events = None if erasing or not installed else events
            count, ms_left = self._local.spend(names[0] + install, window_ms // 1000, now)
        if budget is not None and int(count) > budget.limit:
            raise OverBudget(budget, int(ms_left))
        counts = (int(events), int(impressions or 0), int(follows or 0)) if events else None
        return counts, raw_cached or None, catalog_version, model, state

    async def compute(
        self, user_id: str, limit: int, now: float, stamp: str, state: ReaderState | None = None
    ) -> CachedFeed:
        """Rank the reader's feed (off the event loop) and keep it for them; ``state``:
        the reader as read already (else read here)."""
        model_version, catalog_version = stamp.split("|")[:2]
        if state is None:
            state = await self._read_reader(user_id)
        events, impressions = state.counts
        # A reader's vector is stamped with their events but impressions (which change
        # none): a feed after impressions needs no fold-in.
        ranked_events = events - impressions
        if model_version == self.holder.failed_version or model_version == "None":
            model_version = ""  # none, or a broken one: serve with the model we have
        index = await self.index(
            None if catalog_version == "None" else catalog_version, model_version or None
        )
        if self.holder.catching_up:  # ranked on the previous index: stamped with it
            stamp = "|".join(
                [str(index.model_version), index.catalog_version, *stamp.split("|")[2:]]
            )
        trend = await self.holder.refresh_trend(now)
        depth = max(limit, CACHE_DEPTH)
        ranked = await self.offload(
            rank_stored,
            index,
            trend,
            state.records,
            state.vector,
            ranked_events,
            depth,
            now,
            COMPILED,
            decode_follows(state.follows),
            follows_window(user_id, now, self.trend_s),
        )
        computed = CachedFeed(
            stamp=stamp,
            model_version=index.model_version,
            ids=[index.ids[p] for p in ranked.positions],
            scores=[round(float(score), 4) for score in ranked.scores],
            reasons=ranked.reasons,
            depth=depth,
            events=events,
        )
        folded = b""
        if ranked.vector is not None and index.model is not None:
            # Stamped with what it was folded from (not with now: an event that arrived
            # while it was ranked is not in it, and the next feed must fold again).
            folded = encode_vector(index.model.version, state.read_at, ranked.vector, ranked_events)
        made_with = table_key(index, stamp)
        table = b"-" if ranked.table is None else encode_table(ranked.table, made_with)
        await self._store(user_id, computed, folded, table)
        return computed

    async def _store(self, user_id: str, feed: CachedFeed, vector: bytes, table: bytes) -> None:
        """Keep the reader's feed (with their vector and the feed's candidates: b"" leaves
        what is kept, b"-" deletes the candidates), unless they were erased meanwhile."""
        try:
            await self._keep(
                keys=[
                    keys.user_profile(user_id),
                    keys.user_feed(user_id),
                    keys.user_vector(user_id),
                    keys.user_candidates(user_id),
                ],
                args=[encode_cached(feed), int(self.trend_s * 1000), vector, table],
            )
        except ResponseError as exc:
            # Redis at maxmemory: the cache is a convenience, the reader gets their feed.
            if not refused_for_memory(exc):
                raise
            note_refused("cache", exc)

    async def _read_reader(self, user_id: str) -> ReaderState:
        """The reader (but their candidate table) in one round trip; the counts are read
        before the records, so that they are never ahead of them."""
        read_at = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.user_profile(user_id), ["events", "impressions"])
            pipe.hgetall(keys.user_papers(user_id))
            pipe.get(keys.user_vector(user_id))
            pipe.hgetall(keys.user_follows(user_id))
            (events, impressions), raw_records, raw_vector, raw_follows = await pipe.execute()
        counts = (int(events or 0), int(impressions or 0))
        return ReaderState(read_at, counts, raw_records, raw_vector, None, raw_follows)

    async def _answer(self, cached: CachedFeed, limit: int) -> Feed:
        """The feed a reader sees: the first ``limit`` of the ranked ids, with the
        papers (only these are read, through the catalog's short cache)."""
        ids = cached.ids[:limit]
        papers = await self.catalog.get_many(ids)
        items = [
            FeedItem(paper=papers[pid], score=score, reasons=why)
            for pid, score, why in zip(ids, cached.scores, cached.reasons, strict=False)
            if pid in papers
        ]
        return Feed(items=items, model_version=cached.model_version)

    async def search(self, query: str, limit: int, user_id: str | None) -> SearchResults:
        """Papers for ``query``, ranked for ``user_id`` when given (``recsys.search``),
        on this process's catalog index (an import shows within ``model_poll_s``: the
        index is not checked against Redis at each search, which costs a round trip)."""
        raw_records: dict[str, str] | None = None
        raw_vector: str | None = None
        events = 0
        if user_id is not None:
            reader = await self._read_reader(user_id)
            raw_records, raw_vector = reader.records, reader.vector
            events = reader.counts[0] - reader.counts[1]  # impressions fold nothing in
        index = await self.index()
        trend = await self.holder.refresh_trend(time.time())
        columns = query_columns(query)
        args = (index, trend, query, limit, raw_records, raw_vector, events, columns)
        if raw_records is None and work(index.search, columns) <= INLINE_WORK:
            found = search_stored(*args)  # well under a millisecond: no thread handoff
        else:
            found = await self.offload(search_stored, *args)
        ids = [index.ids[p] for p in found.positions]
        papers = await self.catalog.get_many(ids)
        items = [
            SearchItem(paper=papers[pid], score=round(float(score), 4))
            for pid, score in zip(ids, found.scores, strict=True)
            if pid in papers
        ]
        return SearchResults(query=query, items=items, personal=bool(raw_records))

    async def similar(self, paper_id: str, limit: int) -> Similar:
        index = await self.index()
        position = index.pos.get(paper_id)
        if position is None:
            if await self.catalog.get(paper_id) is None:
                raise no_such_paper(paper_id)
            await self.holder.refresh()  # a paper newer than this process's index
            index = await self.index()
            position = index.pos.get(paper_id)
            if position is None:
                return Similar(items=[], model_version=index.model_version)
        order, score = await self.offload(similar_positions, index, position, limit)
        ids = [index.ids[p] for p in order]
        found = await self.catalog.get_many(ids)
        items = [
            SimilarItem(paper=found[pid], score=round(float(s), 4))
            for pid, s in zip(ids, score, strict=True)
            if pid in found
        ]
        return Similar(items=items, model_version=index.model_version)


INLINE_RESORT_WORK = 1_000
"""A re-sort of at most this many records and candidates together (the bench's reader:
50 records, about 700 candidates; under a millisecond of CPU) runs on the event loop:
handing it to a thread costs more than the work, in CPU (the ranking thread and the loop
taking turns at the GIL) and in latency (docs/benchmarks.md). A longer history or more
candidates: the feed pool, as every ranking."""


def resort_work(records: int, candidates: int) -> int:
    """What a re-sort costs, in the units of ``INLINE_RESORT_WORK``: decoding the
    reader's records, scoring and sorting the candidates."""
    return records + candidates


def resort_stored(
    index: CatalogIndex,
    raw_records: dict[str, str],
    table: Table,
    cached: CachedFeed,
    now: float,
    follows: StoredFollows | None = None,
    follows_at: float | None = None,
) -> Ranked:
    """``finish`` on a kept table, for the reader as read from Redis now (their follows'
    papers of the window before ``follows_at``, as ``rank_stored``)."""
    reader = reader_of_stored(index, raw_records)
    followed = followed_papers(index, follows or no_follows(), follows_at or now, FRESH_DAYS)
    return finish(index, reader, table, cached.depth, now, followed=followed)


def search_stored(
    index: CatalogIndex,
    trend: TrendSnapshot,
    query: str,
    limit: int,
    raw_records: dict[str, str] | None,
    raw_vector: str | None,
    events: int,
    columns: list[int] | None = None,
) -> Found:
    """``recsys.search.find`` for a reader as read from Redis (None: anonymous): their
    text profile and vector say how well each match fits them (CPU: off the loop)."""
    personal = None
    if raw_records:
        reader = reader_of_stored(index, raw_records)
        text_profile = profile(index, reader)
        vector = cached_vector(index, raw_vector, events)
        if vector is None and index.model is not None and reader.positives:
            vector = fold_in(index.model, index, reader)

        def fit(positions: IntArray) -> FloatArray:
            score = profile_scores(index.text, positions, text_profile)
            if vector is not None and index.factors is not None:
                cf = (index.factors[positions] @ vector).astype(np.float32)
                spread = float(cf.std()) or 1.0
                score = score / (float(score.std()) or 1.0) + cf / spread
            return score.astype(np.float32)

        personal = fit if reader.positives else None
    return find(
        index.search,
        query,
        limit,
        index.pos,
        index.dates,
        personal=personal,
        trending=trend.week,
        columns=columns,
    )


def cached_vector(index: CatalogIndex, raw: str | None, events: int) -> FloatArray | None:
    """The stored vector when it was folded from the reader's records as they are now
    (for the served model, with their event count ``events`` then), else None."""
    if index.model is None or not raw:
        return None
    cached = decode_vector(raw)
    if cached.version != index.model.version or cached.events != events:
        return None
    return cached.array()


def similar_positions(
    index: CatalogIndex, position: int, limit: int
) -> tuple[IntArray, FloatArray]:
    """Nearest papers: half cosine of factors, half cosine of text (text only before a
    model)."""
    by_text = np.asarray((index.text @ index.text[position].T).todense()).ravel()
    score = by_text
    if index.factors is not None:
        unit = index.unit_factors()
        score = 0.5 * by_text + 0.5 * (unit @ unit[position])
    score[position] = -np.inf
    n = min(limit, len(score) - 1)
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(-score, n - 1)[:n]
    top = top[np.argsort(-score[top], kind="stable")]
    return top.astype(np.int64), score[top].astype(np.float32)
