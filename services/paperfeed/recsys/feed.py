"""The personalized trending feed and similar papers.

Candidates: the week's top ``TRENDING_CANDIDATES`` and the day's top
``TODAY_CANDIDATES`` trending papers, the ``RECENT_CANDIDATES`` newest papers, and (for
a reader with a history) the model's ``CF_CANDIDATES`` best papers for them among the
``CF_POOL`` newest it knows (a trending feed looks for what is new). They are
ranked by ``ranker.blend`` (the same code ``paperfeed eval`` measures as
``production``), then:

- dismissed papers never appear;
- papers the reader already opened, upvoted, saved or shared are dropped (they have
  them); papers only shown to them sink by ``IMPRESSION_PENALTY`` a showing;
- trending comes from a snapshot of the windows each process keeps for
  ``PAPERFEED_TRENDING_CACHE_S``;
- papers published in the last week count as at least as trending as the median
  candidate (trending cannot know them yet) and get up to ``FRESH_BOOST`` (halving
  every 2 days).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import numpy as np
from scipy import sparse

from paperfeed.catalog.papers import Paper, published_ts
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import NotFound
from paperfeed.events import UserPaper
from paperfeed.recsys.content import FloatArray, l2_normalize, paper_text
from paperfeed.recsys.matrix import cell_weight, confidence
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.ranker import IntArray, Signals, standardize
from paperfeed.recsys.repository import ModelRepository
from paperfeed.recsys.serving import ModelHolder
from paperfeed.trending import Trending
from paperfeed.users import Users

TRENDING_CANDIDATES = 300
# Week scores of this many papers are known to a feed (the rest count as 0).
SNAPSHOT_SIZE = 5_000
TODAY_CANDIDATES = 100
RECENT_CANDIDATES = 200
CF_CANDIDATES = 200
CF_POOL = 10_000
IMPRESSION_PENALTY = 0.25
FRESH_BOOST = 0.5
FRESH_DAYS = 7.0
ANCHOR_SIMILARITY = 0.3
ANCHORS = 100


# (the week's top with scores, the same as a dict, the day's top)
TrendSnapshot = tuple[list[tuple[str, float]], dict[str, float], list[tuple[str, float]]]


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


def verb(record: UserPaper) -> str:
    if record.saved:
        return "saved"
    if record.upvoted:
        return "upvoted"
    return "read"


def freshness(paper: Paper, now: float) -> float:
    """Days since publication (or since it entered the catalog)."""
    when = published_ts(paper) or paper.added_at or 0.0
    return max(0.0, (now - when) / 86_400)


class FeedService:
    def __init__(
        self,
        catalog: Catalog,
        trending: Trending,
        users: Users,
        holder: ModelHolder,
        repository: ModelRepository,
        snapshot_s: float = 2.0,
    ) -> None:
        self.snapshot_s = snapshot_s
        self._snapshot: tuple[float, TrendSnapshot] | None = None
        self._recent_ids: tuple[float, list[str]] | None = None
        self._pool: tuple[str, IntArray, FloatArray] | None = None
        self.catalog = catalog
        self.trending = trending
        self.users = users
        self.holder = holder
        self.repository = repository

    async def feed(self, user_id: str, limit: int, now: float | None = None) -> Feed:
        now = time.time() if now is None else now
        model = self.holder.model
        records = await self.users.papers(user_id)
        week, week_scores, today = await self._trending_snapshot(now)
        candidate_ids = [pid for pid, _ in week[:TRENDING_CANDIDATES]] + [pid for pid, _ in today]
        recent = await self._recent(now)
        candidate_ids += recent[:RECENT_CANDIDATES]

        row = self._user_row(model, records) if model else None
        vector = None
        if model is not None and row is not None and row.nnz:
            vector = await self._user_vector(user_id, model, row)
            pool, pool_factors = self._cf_pool(model, recent)
            cf = pool_factors @ vector
            best = np.argpartition(-cf, min(CF_CANDIDATES, len(cf) - 1))[:CF_CANDIDATES]
            candidate_ids += [model.item_ids[pool[i]] for i in best]

        def hidden(pid: str) -> bool:
            record = records.get(pid)
            # Any flag (upvoted, saved, shared, dismissed) or an opening hides the paper.
            return record is not None and (record.opened or record.f != 0)

        unique = [pid for pid in dict.fromkeys(candidate_ids) if not hidden(pid)]
        papers_by_id = await self.catalog.get_many(unique)
        papers = [papers_by_id[pid] for pid in unique if pid in papers_by_id]
        if not papers:
            return Feed(items=[], model_version=model.version if model else None)
        trend_raw = np.array([week_scores.get(p.id, 0.0) for p in papers], dtype=np.float32)
        ages = np.array([freshness(p, now) for p in papers], dtype=np.float32)
        # Trending cannot know yet what a paper of this week is worth: a fresh paper
        # counts as at least as hot as the median candidate, and competes on relevance.
        fresh = ages <= FRESH_DAYS
        trend_raw[fresh] = np.maximum(trend_raw[fresh], np.median(trend_raw))

        signals: Signals | None = None
        if model is not None and row is not None:
            factors, content = self.holder.item_vectors(model, papers)
            user_vectors = vector[None, :] if vector is not None else None
            if user_vectors is None:
                user_vectors = np.zeros((1, factors.shape[1]), dtype=np.float32)
            scores, signals = model.rank(row, factors, content, trend_raw, user_vectors)
            score = scores[0]
        else:
            score = standardize(np.log1p(trend_raw)[None, :])[0]
            content = None
        score = score + self._adjustments(papers, records, ages)
        order = np.argsort(-score)[:limit]
        hot_today = {pid for pid, _ in today[:20]}
        hot_week = {pid for pid, _ in week[:50]}
        anchors = await self._anchors(model, records) if signals is not None else []
        items = []
        for i in order:
            paper = papers[i]
            reasons = self._reasons(
                paper, i, signals, content, anchors, hot_today, hot_week, float(ages[i])
            )
            items.append(FeedItem(paper=paper, score=round(float(score[i]), 4), reasons=reasons))
        return Feed(items=items, model_version=model.version if model else None)

    def _user_row(self, model: RecModel, records: dict[str, UserPaper]) -> sparse.csr_matrix:
        """(1, n_items) confidence row of the reader over the model's papers."""
        cols, values = [], []
        for pid, record in records.items():
            index = model.index.get(pid)
            weight = cell_weight(record.w, record.f)
            if index is not None and weight != 0:
                cols.append(index)
                values.append(weight)
        weights = sparse.csr_matrix(
            (np.array(values, dtype=np.float32), (np.zeros(len(cols), dtype=np.int64), cols)),
            shape=(1, len(model.item_ids)),
        )
        return confidence(weights, model.meta.als.alpha)

    async def _user_vector(
        self, user_id: str, model: RecModel, row: sparse.csr_matrix
    ) -> FloatArray:
        """The cached vector when nothing happened since it was computed, else a fold-in."""
        cached = await self.repository.user_vector(user_id)
        last_event = await self.users.last_event_at(user_id) or 0.0
        if cached is not None and cached.version == model.version and cached.at >= last_event:
            return cached.array()
        vector: FloatArray = model.fold_in(row)[0]
        await self.repository.save_user_vector(user_id, model.version, vector)
        return vector

    def _adjustments(
        self, papers: Sequence[Paper], records: dict[str, UserPaper], ages: FloatArray
    ) -> FloatArray:
        shown = np.array([records[p.id].i if p.id in records else 0 for p in papers])
        boost = np.where(ages <= FRESH_DAYS, FRESH_BOOST * 2 ** (-ages / 2), 0.0)
        adjusted: FloatArray = (boost - IMPRESSION_PENALTY * shown).astype(np.float32)
        return adjusted

    async def _recent(self, now: float) -> list[str]:
        """The ``CF_POOL`` newest papers, refreshed with the trending snapshot."""
        if self._recent_ids is None or self._recent_ids[0] <= now:
            ids = await self.catalog.newest_ids(CF_POOL)
            self._recent_ids = (now + self.snapshot_s, ids)
            self._pool = None
        return self._recent_ids[1]

    def _cf_pool(self, model: RecModel, recent: list[str]) -> tuple[IntArray, FloatArray]:
        """Model indexes and factors of the recent papers (contiguous, for one matmul)."""
        if self._pool is None or self._pool[0] != model.version:
            indexes = np.array([model.index[p] for p in recent if p in model.index], dtype=np.int64)
            if len(indexes) == 0:
                indexes = np.arange(len(model.item_ids), dtype=np.int64)
            factors = np.ascontiguousarray(model.item_factors[indexes])
            self._pool = (model.version, indexes, factors)
        return self._pool[1], self._pool[2]

    async def _trending_snapshot(self, now: float) -> TrendSnapshot:
        """(week's top, their scores, day's top), shared by requests for a few seconds."""
        cached = self._snapshot
        if cached is not None and cached[0] > now:
            return cached[1]
        week = await self.trending.top("week", SNAPSHOT_SIZE, now)
        today = await self.trending.top("day", TODAY_CANDIDATES, now)
        snapshot = (week, dict(week), today)
        self._snapshot = (now + self.snapshot_s, snapshot)
        return snapshot

    async def _anchors(
        self, model: RecModel | None, records: dict[str, UserPaper]
    ) -> list[tuple[str, str, FloatArray]]:
        """(verb, title, text vector) of the reader's strongest papers, for reasons."""
        if model is None:
            return []
        positive = sorted((r.w, pid) for pid, r in records.items() if r.w > 0 and not r.dismissed)[
            -ANCHORS:
        ]
        ids = [pid for _, pid in positive if pid in model.index]
        papers = await self.catalog.get_many(ids)
        return [
            (verb(records[pid]), papers[pid].title, model.item_content[model.index[pid]])
            for pid in ids
            if pid in papers
        ]

    def _reasons(
        self,
        paper: Paper,
        index: int,
        signals: Signals | None,
        content: FloatArray | None,
        anchors: list[tuple[str, str, FloatArray]],
        hot_today: set[str],
        hot_week: set[str],
        age: float,
    ) -> list[str]:
        reasons: list[str] = []
        if anchors and content is not None:
            similarity = np.stack([vector for _, _, vector in anchors]) @ content[index]
            best = int(np.argmax(similarity))
            if similarity[best] >= ANCHOR_SIMILARITY:
                action, title, _ = anchors[best]
                reasons.append(f"because you {action} “{title}”")
        if signals is not None and signals.cf[0, index] > 1.0 and signals.personal > 0.3:
            reasons.append("popular with readers like you")
        if paper.id in hot_today:
            reasons.append("trending today")
        elif paper.id in hot_week:
            reasons.append("trending this week")
        if age < 1:
            reasons.append("new today")
        elif age <= FRESH_DAYS:
            reasons.append("new this week")
        if not reasons:
            reasons.append("matches your interests" if signals is not None else "trending")
        return reasons

    async def similar(self, paper_id: str, limit: int) -> Similar:
        paper = await self.catalog.get(paper_id)
        if paper is None:
            raise NotFound(f"no paper {paper_id!r}")
        model = self.holder.model
        if model is not None:
            factors, content = self.holder.item_vectors(model, [paper])
            ids = model.item_ids
            by_factors = model.unit_factors @ l2_normalize(factors)[0]
            by_text = model.item_content @ content[0]
            score = 0.5 * by_factors + 0.5 * by_text
        else:
            all_ids = await self.catalog.all_ids()
            index = self.holder.text_index(all_ids)
            if index is None:
                papers = await self.catalog.get_many(all_ids)
                texts = [
                    paper_text(papers[p].title, papers[p].abstract) if p in papers else ""
                    for p in all_ids
                ]
                index = self.holder.build_text_index(all_ids, texts)
            ids = index.ids
            query = index.encoder.encode([paper_text(paper.title, paper.abstract)])[0]
            score = index.vectors @ query
        order = [i for i in np.argsort(-score)[: limit + 1] if ids[i] != paper_id][:limit]
        found = await self.catalog.get_many([ids[i] for i in order])
        items = [
            SimilarItem(paper=found[ids[i]], score=round(float(score[i]), 4))
            for i in order
            if ids[i] in found
        ]
        return Similar(items=items, model_version=model.version if model else None)
