"""What ranking needs of the catalog, in process memory as arrays.

A ``CatalogIndex`` is an immutable snapshot of the catalog under one model (or, before
any model, under text features fitted on the catalog): paper positions, dates,
titles, text vectors, collaborative factors (the model's own, or text neighbours' for
papers it has no interaction for). ``IndexHolder`` rebuilds it in a worker thread when
the catalog or the model changes (new papers reuse the rows of the old index) and swaps
it in whole, so a request always ranks on one consistent snapshot. Trending comes in
as a ``TrendSnapshot``, refreshed every ``trending_snapshot_s``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.catalog.papers import Paper, published_ts
from paperfeed.recsys.affinity import Affinity, affinity_data
from paperfeed.recsys.authors import NO_AUTHORS, AuthorIndex
from paperfeed.recsys.content import (
    FloatArray,
    TextFeatures,
    l2_normalize,
    neighbour_factors,
    paper_text,
    tokenize,
)
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.ranker import BoolArray, IntArray
from paperfeed.recsys.search import BUCKETS, SearchIndex, build_search, search_counts
from paperfeed.recsys.topics import (
    NO_TOPICS,
    REFIT_GROWTH,
    Topics,
    assign,
    learn_topics,
    topic_ids,
)

log = logging.getLogger(__name__)

POOL = 10_000


class CatalogPaper(msgspec.Struct):
    """The fields of a stored paper the index reads (the rest is not decoded)."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = msgspec.field(default_factory=list)
    published: str | None = None
    added_at: float = 0.0


decode_catalog_paper = msgspec.json.Decoder(CatalogPaper).decode


class CatalogIndex:
    def __init__(
        self,
        *,
        ids: list[str],
        titles: list[str],
        dates: npt.NDArray[np.float64],
        text_keys: IntArray,
        features: TextFeatures,
        text: sparse.csr_matrix,
        model: RecModel | None,
        factors: FloatArray | None,
        cold: BoolArray,
        model_rows: IntArray,
        catalog_version: str,
        aliases: dict[str, str] | None = None,
        topics: Topics = NO_TOPICS,
        search: SearchIndex | None = None,
        authors: AuthorIndex = NO_AUTHORS,
        affinity: Affinity | None = None,
        newest_by_term: sparse.csr_matrix | None = None,
    ) -> None:
        self.ids = ids
        self.pos = {pid: i for i, pid in enumerate(ids)}
        self.aliases = aliases or {}
        """Merged papers' old ids -> the ids they were merged into."""
        for old, new in self.aliases.items():
            # A merged paper's old id (readers' records keep it) finds the paper.
            if new in self.pos and old not in self.pos:
                self.pos[old] = self.pos[new]
        self.titles = titles
        self.dates = dates
        """(n,) publication time, or when the paper entered the catalog (unix s)."""
        self.newest = np.argsort(-dates, kind="stable").astype(np.int64)
        """Positions, newest first."""
        self.pool = self.newest[:POOL]
        """The ``POOL`` newest: where the feed looks for the reader's own best papers."""
        self.text_keys = text_keys
        """(n,) a stable hash of each paper's text (a changed text is encoded again; the
        same in every process, so an index loaded from the worker's artifact is reused)."""
        self.features = features
        self.text = text
        """(n, terms) float32 CSR, L2-normalised rows."""
        self.newest_by_term = (
            sparse.csr_matrix(text[self.newest[:POOL]].T)
            if newest_by_term is None
            else newest_by_term
        )
        """The ``POOL`` newest papers' text vectors, transposed: their postings."""
        self.model = model
        self.factors = factors
        """(n, k) float32, or None before any model."""
        self.pool_factors = (
            np.ascontiguousarray(factors[self.pool]) if factors is not None else None
        )
        """(len(pool), k) the pool's factors, gathered once (not at every request)."""
        self.cold = cold
        """(n,) papers without interactions in the model (factors from text neighbours)."""
        self.model_rows = model_rows
        """(n,) the model's item index of each paper (-1: unknown to it)."""
        self.catalog_version = catalog_version
        self.topics = topics
        """Each paper's topic and the topics' names (``recsys.topics``)."""
        self.search = search or build_search(
            sparse.csr_matrix((len(ids), BUCKETS), dtype=np.float32), titles, [[]] * len(ids)
        )
        """The search index (``recsys.search``)."""
        self.authors = authors
        """The ``POOL`` newest papers by normalised author (``recsys.authors``): where a
        followed author's new papers are found (``dates`` says how new)."""
        self.affinity = affinity or affinity_data([()] * len(ids), topics.of_paper, 0)
        """Every paper's authors and topic: the follow affinity (``recsys.affinity``)."""
        self._unit: FloatArray | None = None

    @functools.cached_property
    def fingerprint(self) -> int:
        """64 bits of a hash of the papers' ids in their order: positions in two indexes
        with the same fingerprint name the same papers (what a kept candidate table
        checks; a catalog version alone could name two reads of a catalog in change)."""
        digest = hashlib.blake2b("\n".join(self.ids).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    @functools.cached_property
    def topic_of_id(self) -> dict[str, int]:
        """Each topic's id (``topics.topic_ids``) and its number."""
        return {tid: i for i, tid in enumerate(topic_ids(self.topics.names))}

    def unit_factors(self) -> FloatArray:
        """(n, k) factors scaled to unit length (cosine similarity), computed once."""
        if self._unit is None:
            assert self.factors is not None
            self._unit = l2_normalize(self.factors)
        return self._unit

    @property
    def model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, paper_ids: Sequence[str]) -> IntArray:
        """Positions of ``paper_ids`` (-1 for ids not in the catalog)."""
        pos = self.pos
        return np.fromiter(
            (pos.get(p, -1) for p in paper_ids), dtype=np.int64, count=len(paper_ids)
        )

    def nbytes(self) -> int:
        """Memory the arrays take (titles and ids counted roughly)."""
        total = self.dates.nbytes + self.cold.nbytes + self.model_rows.nbytes + self.newest.nbytes
        total += self.text_keys.nbytes
        total += self.text.data.nbytes + self.text.indices.nbytes + self.text.indptr.nbytes
        by_term = self.newest_by_term
        total += by_term.data.nbytes + by_term.indices.nbytes + by_term.indptr.nbytes
        if self.factors is not None and self.pool_factors is not None:
            total += self.factors.nbytes + self.pool_factors.nbytes
        total += self.search.nbytes()
        centres = self.topics.centres
        total += centres.data.nbytes + centres.indices.nbytes + self.topics.of_paper.nbytes
        total += self.authors.nbytes() + self.affinity.nbytes()
        total += sum(len(t) + len(i) + 100 for t, i in zip(self.titles, self.ids, strict=True))
        return int(total)


def build_index(
    papers: Sequence[CatalogPaper],
    model: RecModel | None,
    catalog_version: str,
    previous: CatalogIndex | None = None,
    aliases: dict[str, str] | None = None,
) -> CatalogIndex:
    """The index of ``papers`` under ``model`` (None: text features fitted on them).

    Rows of ``previous`` are reused for papers whose text is unchanged when it was built
    with the same text features (the same model, or both without one)."""
    started = time.perf_counter()
    texts = [paper_text(p.title, p.abstract) for p in papers]
    text_keys = text_hashes(texts)
    reuse = (
        previous is not None
        and previous.model_version == (model.version if model else None)
        and (model is not None or len(papers) <= 2 * len(previous))
    )
    if model is not None:
        features = model.text
    elif reuse and previous is not None:
        features = previous.features
    else:
        features = TextFeatures.fit(tokenize(texts))["words"]
    unchanged = unchanged_rows(papers, text_keys, previous)
    # Text rows only under the same text features; search's words whatever the model.
    old_rows = unchanged if reuse else np.full(len(papers), -1, dtype=np.int64)
    text = reused_or_new(
        old_rows,
        previous.text if previous is not None else None,
        lambda fresh: features.transform([texts[i] for i in fresh]),
        features.terms,
    )
    topics = catalog_topics(text, features, previous, old_rows)
    search = catalog_search(papers, unchanged, previous)
    dates = np.array(
        [published_ts(_as_paper(p)) or p.added_at or 0.0 for p in papers], dtype=np.float64
    )
    ids = [p.id for p in papers]
    pool = np.argsort(-dates, kind="stable")[:POOL].tolist()
    authors = AuthorIndex((i, papers[i].authors) for i in pool)
    position_of = {pid: i for i, pid in enumerate(ids)}
    factors: FloatArray | None = None
    cold = np.ones(len(papers), dtype=bool)
    model_rows = np.full(len(papers), -1, dtype=np.int64)
    if model is not None:
        model_rows = np.fromiter(
            (model.index.get(pid, -1) for pid in ids), dtype=np.int64, count=len(ids)
        )
        for merged_from, merged_into in (aliases or {}).items():
            # A paper merged since the model was trained keeps the row of its old id.
            model_row = model.index.get(merged_from)
            paper_at = position_of.get(merged_into)
            if model_row is not None and paper_at is not None and model_rows[paper_at] < 0:
                model_rows[paper_at] = model_row
        known = model_rows >= 0
        known[known] = ~model.cold[model_rows[known]]
        cold = ~known
        factors = np.zeros((len(papers), model.item_factors.shape[1]), dtype=np.float32)
        factors[known] = model.item_factors[model_rows[known]]
        if reuse and previous is not None and previous.factors is not None:
            # Cold papers seen before keep their neighbour factors.
            again = cold & (old_rows >= 0)
            factors[again] = previous.factors[old_rows[again]]
            todo = cold & (old_rows < 0)
        else:
            todo = cold
        if todo.any():
            factors[todo] = neighbour_factors(text[todo], text[known], factors[known])
    index = CatalogIndex(
        ids=ids,
        titles=[p.title for p in papers],
        dates=dates,
        text_keys=text_keys,
        features=features,
        text=text,
        model=model,
        factors=factors,
        cold=cold,
        model_rows=model_rows,
        catalog_version=catalog_version,
        aliases=aliases,
        topics=topics,
        search=search,
        authors=authors,
        affinity=affinity_data([p.authors for p in papers], topics.of_paper, len(topics.names)),
    )
    log.info(
        "catalog index built",
        extra={
            "papers": len(papers),
            "encoded": int((old_rows < 0).sum()),
            "model": index.model_version,
            "seconds": round(time.perf_counter() - started, 2),
            "mbytes": round(index.nbytes() / 2**20, 1),
        },
    )
    return index


def catalog_topics(
    text: sparse.csr_matrix,
    features: TextFeatures,
    previous: CatalogIndex | None,
    old_rows: IntArray,
) -> Topics:
    """The previous index's topics, extended to new papers, while they still describe
    the catalog (the same text features, not much grown since their fit); else learned
    again."""
    if (
        previous is not None
        and previous.topics.names
        and previous.features.same_as(features)
        and len(old_rows) <= previous.topics.fitted_on * (1 + REFIT_GROWTH)
    ):
        of_paper = np.full(len(old_rows), -1, dtype=np.int64)
        kept = np.flatnonzero(old_rows >= 0)
        fresh = np.flatnonzero(old_rows < 0)
        of_paper[kept] = previous.topics.of_paper[old_rows[kept]]
        if len(fresh):
            of_paper[fresh] = assign(previous.topics, text[fresh])
        return previous.topics._replace(of_paper=of_paper)
    return learn_topics(text, features.vocabulary)


def text_hashes(texts: Sequence[str]) -> IntArray:
    """64 bits of BLAKE2b of each text: ``hash(str)`` differs from process to process
    (hash randomisation), and the worker's artifact carries these keys to the api."""
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(t.encode(), digest_size=8).digest(), "little", signed=True
            )
            for t in texts
        ),
        dtype=np.int64,
        count=len(texts),
    )


def unchanged_rows(
    papers: Sequence[CatalogPaper], text_keys: IntArray, previous: CatalogIndex | None
) -> IntArray:
    """Each paper's row in ``previous`` when its text is unchanged there, else -1."""
    old_rows = np.full(len(papers), -1, dtype=np.int64)
    if previous is not None:
        for i, paper in enumerate(papers):
            old = previous.pos.get(paper.id)
            # ``pos`` also holds merged papers' old ids: only the paper's own row counts.
            if old is not None and previous.ids[old] == paper.id:
                old_rows[i] = old
        same = old_rows >= 0
        same[same] = previous.text_keys[old_rows[same]] == text_keys[same]
        old_rows[~same] = -1
    return old_rows


def reused_or_new(
    old_rows: IntArray,
    previous_rows: sparse.csr_matrix | None,
    new_rows: Callable[[IntArray], sparse.csr_matrix],
    columns: int,
) -> sparse.csr_matrix:
    """(len(old_rows), columns) float32 CSR: ``previous_rows`` where ``old_rows`` points
    into them, ``new_rows(positions)`` for the rest, in the papers' order."""
    kept = np.flatnonzero(old_rows >= 0)
    fresh = np.flatnonzero(old_rows < 0)
    blocks = []
    if len(kept) and previous_rows is not None:
        blocks.append(previous_rows[old_rows[kept]])
    if len(fresh):
        blocks.append(new_rows(fresh))
    if not blocks:
        return sparse.csr_matrix((0, columns), dtype=np.float32)
    stacked = sparse.vstack(blocks, format="csr", dtype=np.float32)
    where = np.empty(len(old_rows), dtype=np.int64)
    where[np.concatenate([kept, fresh])] = np.arange(len(old_rows))
    return sparse.csr_matrix(stacked[where], dtype=np.float32)


def catalog_search(
    papers: Sequence[CatalogPaper], old_rows: IntArray, previous: CatalogIndex | None
) -> SearchIndex:
    """The search index; the word counts of papers whose text did not change
    (``old_rows``) are kept from ``previous`` (whatever the model: search does not
    depend on it)."""

    def counted(fresh: IntArray) -> sparse.csr_matrix:
        new = [papers[i] for i in fresh.tolist()]
        return search_counts(
            [p.title for p in new], [p.abstract for p in new], [p.authors for p in new]
        )

    counts = reused_or_new(
        old_rows, previous.search.counts if previous is not None else None, counted, BUCKETS
    )
    return build_search(counts, [p.title for p in papers], [p.authors for p in papers])


def _as_paper(paper: CatalogPaper) -> Paper:
    return Paper(id=paper.id, title=paper.title, published=paper.published)


HOT_TODAY = 20
HOT_WEEK = 50
"""The day's and the week's hottest, said "trending today" and "trending this week"."""
HOT_TODAY_BIT, HOT_WEEK_BIT = 1, 2


class TrendSnapshot(NamedTuple):
    """Trending, as the feed ranks with it until the next snapshot."""

    taken_at: float
    week: FloatArray
    """(n,) week-window score of every indexed paper (0 beyond the top ``SNAPSHOT_SIZE``)."""
    week_top: IntArray
    today_top: IntArray
    """Positions of the week's and the day's hottest papers, hottest first."""
    catalog_version: str
    hot: npt.NDArray[np.uint8]
    """(n,) each indexed paper's ``HOT_TODAY_BIT`` and ``HOT_WEEK_BIT``: a lookup a
    candidate, where two set tests a ranking cost a quarter of a millisecond."""


EMPTY_TREND = TrendSnapshot(
    0.0,
    np.zeros(0, np.float32),
    np.zeros(0, np.int64),
    np.zeros(0, np.int64),
    "",
    np.zeros(0, np.uint8),
)


def trend_snapshot(
    index: CatalogIndex,
    week: Sequence[tuple[str, float]],
    today: Sequence[tuple[str, float]],
    now: float,
) -> TrendSnapshot:
    scores = np.zeros(len(index), dtype=np.float32)
    week_pos = index.positions([pid for pid, _ in week])
    found = week_pos >= 0
    scores[week_pos[found]] = np.array([s for _, s in week], dtype=np.float32)[found]
    today_pos = index.positions([pid for pid, _ in today])
    week_top, today_top = week_pos[found], today_pos[today_pos >= 0]
    hot = np.zeros(len(index), dtype=np.uint8)
    hot[week_top[:HOT_WEEK]] |= HOT_WEEK_BIT
    hot[today_top[:HOT_TODAY]] |= HOT_TODAY_BIT
    return TrendSnapshot(now, scores, week_top, today_top, index.catalog_version, hot)
