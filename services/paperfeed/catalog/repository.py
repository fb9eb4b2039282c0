"""The catalog in Redis: papers and their listing order. Two parts of it live apart,
each on its own: ``identity`` (aliases and merges: ``catalog.identity``) and ``reports``
(papers readers met that the catalog lacks: ``catalog.reports``), each an attribute of
the ``Catalog``.

Importing is idempotent: a paper keeps its ``added_at`` across re-imports, and only the
upvotes not yet credited to trending are credited (``pf:papers:seeded``, by a script:
an increase is credited once, never twice, a decrease never).

A paper merged into another (``Identities.merge``) keeps resolving by its old id
(``get``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec

from paperfeed.catalog.identity import Identities
from paperfeed.catalog.papers import Paper, published_ts
from paperfeed.catalog.reports import Reports
from paperfeed.errors import InvalidInput
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua
from paperfeed.trending import Contribution, Trending

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_paper = msgspec.json.Decoder(Paper).decode
CHUNK = 1_000
PAPER_CACHE_S = 600.0
PAPER_CACHE_SIZE = 200_000
# Page order of an import is kept among papers of the same date.
ORDER_STEP_S = 1e-3


class ImportResult(msgspec.Struct):
    papers: int
    new: int
    updated: int


class Catalog:
    def __init__(self, redis: RedisClient, settings: Settings, trending: Trending) -> None:
        self.redis = redis
        self.settings = settings
        self.trending = trending
        self._credit = redis.register_script(lua("credit_upvotes"))
        self._cache: dict[str, tuple[float, Paper]] = {}
        self.identity = Identities(redis, self.get_stored, self._forget)
        self.reports = Reports(redis, settings, self._forget)
        self.indexed: Callable[[str], bool] = lambda paper_id: False
        """Whether this process's catalog index has the paper (set by ``Core``)."""

    async def count(self) -> int:
        return int(await self.redis.hlen(keys.PAPERS))

    async def get(self, paper_id: str) -> Paper | None:
        """The paper, also by an id it was merged from."""
        raw = await self.redis.hget(keys.PAPERS, paper_id)
        if raw:
            return _decode_paper(raw)
        merged_into = await self.redis.hget(keys.PAPERS_ALIAS, paper_id)
        if merged_into:
            raw = await self.redis.hget(keys.PAPERS, merged_into)
        return _decode_paper(raw) if raw else None

    async def get_stored(self, paper_ids: Sequence[str]) -> dict[str, Paper]:
        """Papers by id as stored now (no cache, no alias)."""
        if not paper_ids:
            return {}
        raws = await self.redis.hmget(keys.PAPERS, list(paper_ids))
        return {pid: _decode_paper(raw) for pid, raw in zip(paper_ids, raws, strict=True) if raw}

    async def known_all(self, paper_ids: Sequence[str]) -> bool:
        """Whether every one of the ids is catalogued."""
        if not paper_ids:
            return False
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in paper_ids:
                pipe.hexists(keys.PAPERS, pid)
            return all(await pipe.execute())

    async def known_ids(self, paper_ids: Sequence[str]) -> set[str]:
        """Which of the ids are catalogued: from this process's paper cache and its
        catalog index (``indexed``: papers leave the catalog only by a merge, after which
        ``resolve`` names the paper by its new id, or by the one-time requeue of papers
        admitted from readers' pages, seen by every index within ``model_poll_s``), the
        rest asked in one round trip (none when every paper was known here)."""
        now = time.monotonic()
        known = set()
        wanted = []
        for pid in dict.fromkeys(paper_ids):
            cached = self._cache.get(pid)
            if (cached is not None and cached[0] > now) or self.indexed(pid):
                known.add(pid)
            else:
                wanted.append(pid)
        if wanted:
            async with self.redis.pipeline(transaction=False) as pipe:
                for pid in wanted:
                    pipe.hexists(keys.PAPERS, pid)
                found = await pipe.execute()
            known.update(pid for pid, exists in zip(wanted, found, strict=True) if exists)
        return known

    async def get_many(self, paper_ids: Sequence[str]) -> dict[str, Paper]:
        """Papers by id (missing ids are left out), through a short in-process cache.

        Feeds and searches read papers all the time and papers change rarely, so each
        process keeps decoded papers: the cache empties when the process sees the catalog
        version change (``forget_cached``, within ``model_poll_s`` of an import), and
        ``PAPER_CACHE_S`` bounds what it keeps if it missed one.
        """
        now = time.monotonic()
        found: dict[str, Paper] = {}
        wanted = []
        for pid in paper_ids:
            cached = self._cache.get(pid)
            if cached is not None and cached[0] > now:
                found[pid] = cached[1]
            else:
                wanted.append(pid)
        if wanted:
            raws = await self.redis.hmget(keys.PAPERS, wanted)
            for pid, raw in zip(wanted, raws, strict=True):
                if raw:
                    paper = _decode_paper(raw)
                    found[pid] = paper
                    self._cache[pid] = (now + PAPER_CACHE_S, paper)
            if len(self._cache) > PAPER_CACHE_SIZE:
                self._cache.clear()
        return found

    def forget_cached(self) -> None:
        """The catalog changed (its version moved): papers and merges are read afresh."""
        self._cache.clear()
        self.identity.forget_cached()

    def _forget(self, paper_id: str) -> None:
        self._cache.pop(paper_id, None)

    async def all_ids(self) -> list[str]:
        return [str(pid) for pid in await self.redis.zrange(keys.PAPERS_BY_DATE, 0, -1)]

    async def newest(self, limit: int, cursor: str | None = None) -> tuple[list[Paper], str | None]:
        """Papers newest first; ``cursor`` continues a previous page."""
        offset = decode_cursor(cursor)
        ids = await self.newest_ids(limit + 1, offset)
        more = len(ids) > limit
        ids = ids[:limit]
        found = await self.get_many(ids)
        papers = [found[pid] for pid in ids if pid in found]
        return papers, encode_cursor(offset + limit) if more else None

    async def newest_ids(self, limit: int, offset: int = 0) -> list[str]:
        """Ids of the newest papers (by publication, else import), from ``offset``."""
        ids = await self.redis.zrevrange(keys.PAPERS_BY_DATE, offset, offset + limit - 1)
        return [str(pid) for pid in ids]

    async def upsert(
        self,
        papers: Iterable[Paper],
        now: float,
        credits: Sequence[int] | None = None,
        merge: bool = False,
        credit_at: float | None = None,
    ) -> ImportResult:
        """Add or update papers; credits new imported upvotes to trending.

        ``credits`` (one per paper) replaces the upvotes as the trending credit.
        ``credit_at``: when the credits count in trending (default: each paper's date).
        ``merge``: a paper already catalogued keeps what the new record lacks (its
        abstract, authors, links, date, the larger upvote count, its first source): two
        sources describe one paper.
        """
        unique: dict[str, Paper] = {}
        credit_of: dict[str, int] = {}
        for index, paper in enumerate(papers):
            if paper.id not in unique:
                unique[paper.id] = paper
                credit_of[paper.id] = credits[index] if credits is not None else paper.upvotes
        new = updated = 0
        items = list(unique.values())
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            ids = [p.id for p in chunk]
            existing_raw = await self.redis.hmget(keys.PAPERS, ids)
            olds = [_decode_paper(raw) if raw else None for raw in existing_raw]
            if merge:
                chunk = [combined(old, p) if old else p for old, p in zip(olds, chunk, strict=True)]
                items[start : start + CHUNK] = chunk
                for paper in chunk:
                    credit_of[paper.id] = max(credit_of[paper.id], paper.upvotes)
            flat: list[str | int] = []
            for paper in chunk:
                flat.extend((paper.id, credit_of[paper.id]))
            increases = await self._credit(keys=[keys.PAPERS_SEEDED], args=flat)
            contributions: list[Contribution] = []
            async with self.redis.pipeline(transaction=False) as pipe:
                for rank, (paper, old, increase) in enumerate(
                    zip(chunk, olds, increases, strict=True), start=start
                ):
                    paper.added_at = old.added_at if old and old.added_at else now
                    when = published_ts(paper)
                    order = when if when is not None else paper.added_at - rank * ORDER_STEP_S
                    if old is None:
                        new += 1
                    elif old != paper:
                        updated += 1
                    pipe.hset(keys.PAPERS, paper.id, _encode(paper))
                    pipe.zadd(keys.PAPERS_BY_DATE, {paper.id: order})
                    if float(increase) > 0:
                        contributions.append(
                            Contribution(
                                paper.id,
                                float(increase) * self.settings.upvote_seed_weight,
                                credit_at if credit_at is not None else min(when or now, now),
                            )
                        )
                await pipe.execute()
            await self.trending.add(contributions, now)
        for paper in items:
            self._cache.pop(paper.id, None)
        if new or updated:
            await self.redis.incr(keys.PAPERS_VERSION)
        return ImportResult(papers=len(items), new=new, updated=updated)

    async def seed_page_order(self, papers: Sequence[Paper], now: float) -> None:
        """Trending prior for a page without upvote counts: its order is its ranking.

        The top paper gets ``len(papers)`` upvote-equivalents, the last one 1; credited
        once (the same ``pf:papers:seeded`` bookkeeping as imported upvotes).
        """
        credits = [max(p.upvotes, len(papers) - rank) for rank, p in enumerate(papers)]
        # Trending as the page showed it when it was loaded (the papers' own date is the
        # page's, months old: credited then, it would have decayed to nothing).
        await self.upsert(papers, now, credits, credit_at=now)


TEXT_PRECEDENCE = {"admin": 4, "arxiv": 3, "hf": 2, "import": 1}
"""Whose title, abstract, authors and date a paper keeps when two sources describe it:
an operator's record, then arXiv's (the paper's own metadata), then Hugging Face's."""


def combined(old: Paper, new: Paper) -> Paper:
    """One paper described by two sources. The text comes from the source of higher
    ``TEXT_PRECEDENCE`` (the newer record on a tie: a new version), what it lacks from the
    other, the larger upvote count; ``source`` says whose text it is. Stable: the same
    two records give the same paper whichever came last (no update at every sync)."""
    rank = TEXT_PRECEDENCE.get
    primary, other = (new, old) if rank(new.source, 0) >= rank(old.source, 0) else (old, new)
    return msgspec.structs.replace(
        primary,
        abstract=primary.abstract or other.abstract,
        authors=primary.authors or other.authors,
        published=primary.published or other.published,
        upvotes=max(old.upvotes, new.upvotes),
        url=primary.url or other.url,
        pdf_url=primary.pdf_url or other.pdf_url,
        code_url=primary.code_url or other.code_url,
        project_url=primary.project_url or other.project_url,
        added_at=old.added_at,
    )


def encode_cursor(offset: int) -> str:
    return str(offset)


def decode_cursor(cursor: str | None) -> int:
    """The position a ``next`` cursor stands for (the api's pattern checks its shape)."""
    if not cursor:
        return 0
    if not cursor.isdigit() or len(cursor) > 9:
        raise InvalidInput("cursor", "not a cursor returned by this api")
    return int(cursor)
