"""The catalog in Redis: papers, their listing order, and papers reported by readers.

A reported paper is only a candidate (its id and how many installs reported it, never
text from a client) until a source confirms it (``catalog.lookup``). A reader may ask
for one (``request``): that makes it public by their choice, so it is looked up with a
single reporter.

Importing is idempotent: a paper keeps its ``added_at`` across re-imports, and only the
upvotes not yet credited to trending are credited (``pf:papers:seeded``, by a script:
an increase is credited once, never twice, a decrease never).

A paper merged into another (``merge``: a demo page's slug into its arXiv id) keeps
resolving by its old id through ``pf:papers:alias``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import msgspec
from redis.typing import EncodableT, FieldT

from paperfeed.catalog.papers import Paper, arxiv_id, published_ts, slugify
from paperfeed.errors import InvalidInput, RequestsExhausted, Unauthorized
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
ALIAS_CACHE_S = 30.0
# Page order of an import is kept among papers of the same date.
ORDER_STEP_S = 1e-3


class CandidateLookup(msgspec.Struct, kw_only=True):
    """A reported id's lookups so far (``pf:cand:{c}:papers``): the answers of "not
    known" it got, and when it is tried again."""

    misses: int
    next: float


_decode_lookup = msgspec.json.Decoder(CandidateLookup).decode


def _lookup_state(raw: str | bytes | None) -> CandidateLookup | None:
    """The lookup state, None when there is none (or an entry from before lookups: the
    reported paper JSON this hash used to hold)."""
    if not raw:
        return None
    try:
        return _decode_lookup(raw)
    except msgspec.DecodeError:
        return None


class RequestOutcome(msgspec.Struct):
    spent: bool
    """A report of the reader's day was spent (False: they had asked already)."""
    reports_left: int | None
    """Reports (and requests) the reader has left today, when spent."""


class ImportResult(msgspec.Struct):
    papers: int
    new: int
    updated: int


class Catalog:
    def __init__(self, redis: RedisClient, settings: Settings, trending: Trending) -> None:
        self.redis = redis
        self.settings = settings
        self.trending = trending
        self._report = redis.register_script(lua("candidate_report"))
        self._reader_request = redis.register_script(lua("reader_request"))
        self._credit = redis.register_script(lua("credit_upvotes"))
        self._move_trend = redis.register_script(lua("trending_merge"))
        self._cache: dict[str, tuple[float, Paper]] = {}
        self._aliases: tuple[float, dict[str, str]] = (0.0, {})
        self._merged_into: tuple[float, dict[str, list[str]]] = (-1.0, {})
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

    async def aliases(self) -> dict[str, str]:
        """Old id -> the id it was merged into (read again every ``ALIAS_CACHE_S``)."""
        at, cached = self._aliases
        if time.monotonic() - at < ALIAS_CACHE_S:
            return cached
        raw = await self.redis.hgetall(keys.PAPERS_ALIAS)
        fresh = {str(old): str(new) for old, new in raw.items()}
        self._aliases = (time.monotonic(), fresh)
        return fresh

    async def merged_into(self) -> dict[str, list[str]]:
        """Paper id -> the ids merged into it (the reverse of ``aliases``)."""
        aliases = await self.aliases()
        at = self._aliases[0]
        if self._merged_into[0] != at:
            merged: dict[str, list[str]] = {}
            for old, new in aliases.items():
                merged.setdefault(new, []).append(old)
            self._merged_into = (at, merged)
        return self._merged_into[1]

    async def resolve(self, paper_ids: Sequence[str]) -> list[str]:
        """The ids with merged ones replaced by the id they were merged into."""
        aliases = await self.aliases()
        return [aliases.get(pid, pid) for pid in paper_ids] if aliases else list(paper_ids)

    async def merge(self, old_id: str, new_id: str, now: float) -> None:
        """``old_id`` (a title slug) becomes ``new_id`` (its arXiv id): the alias first
        (from then on the old id resolves: readers' records, the model's rows, lookups),
        then its trending score moves, then the old entry leaves the catalog. Each step
        can run again: a merge cut short is finished by the next sync."""
        await self.redis.hset(keys.PAPERS_ALIAS, old_id, new_id)
        await asyncio.gather(
            *(
                self._move_trend(keys=[keys.trend_scores(window)], args=[old_id, new_id])
                for window in keys.WINDOWS
            )
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.PAPERS, old_id)
            pipe.zrem(keys.PAPERS_BY_DATE, old_id)
            pipe.hdel(keys.PAPERS_SEEDED, old_id)
            await pipe.execute()
        await self.redis.incr(keys.PAPERS_VERSION)
        self._cache.pop(old_id, None)
        self._aliases = (0.0, {})
        log.info("paper merged", extra={"old": old_id, "new": new_id})

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
        self._aliases = (0.0, {})

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

    async def report(self, user_id: str, paper_id: str, now: float) -> None:
        """A reader met an arXiv paper that is not catalogued: the install is counted
        among its reporters (``candidate_cap`` papers at most, the oldest reported
        evicted). Nothing the client says about the paper is kept, and nothing is
        admitted here: the worker looks the id up at the sources (``catalog.lookup``)
        and only a source's metadata puts it in the catalog. Other ids are ignored."""
        if arxiv_id(paper_id) != paper_id:
            return
        await self._add_candidate(paper_id, user_id, now, asked=False)

    async def request(self, user_id: str, paper_id: str, now: float) -> RequestOutcome:
        """A reader asks for an arXiv id the catalog lacks (``paper_id``: already the
        version-less id). Asking makes the id public by the reader's choice: it is looked
        up at the next lookup with this one reader (``candidates_due``), not only once
        ``candidate_min_users`` installs reported it. Each new request spends one of the
        reader's reports a day (``reports_per_day``, shared with the papers their pages
        report); asking again for an id still waiting spends nothing. Nothing but the id
        is kept: only a source's metadata admits the paper (``catalog.lookup``)."""
        asked = await self.redis.sismember(keys.candidate_requesters(paper_id), user_id)
        if asked and await self.redis.zscore(keys.CANDIDATE_SCORE, paper_id) is not None:
            return RequestOutcome(spent=False, reports_left=None)
        spent, left = await self._reader_request(
            keys=[keys.user_profile(user_id), keys.user_requests(user_id)],
            args=[paper_id, now, self.settings.reports_per_day, keys.CANDIDATE_REPORTER_TTL_S],
        )
        if int(spent) < 0:
            raise Unauthorized("unknown or revoked token")  # erased (or absorbed) meanwhile
        if int(spent) == 0:
            raise RequestsExhausted(self.settings.reports_per_day, now)
        await self._add_candidate(paper_id, user_id, now, asked=True)
        # An erasure that began after the reader's side was written and read their
        # requests before this one reached the candidate: take the reader out again.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.user_profile(user_id))
            pipe.hexists(keys.user_profile(user_id), "erasing")
            exists, erasing = await pipe.execute()
        if not exists or erasing:
            await self.forget_reporter(user_id, [paper_id])
            raise Unauthorized("unknown or revoked token")
        return RequestOutcome(spent=True, reports_left=int(left))

    async def _add_candidate(self, paper_id: str, user_id: str, now: float, asked: bool) -> None:
        """The reader among the id's reporters (and requesters when ``asked``):
        ``candidate_report.lua``, which evicts the oldest candidates past the cap."""
        await self._report(
            keys=[
                keys.CANDIDATE_PAPERS,
                keys.CANDIDATE_SCORE,
                keys.CANDIDATE_SEEN,
                keys.candidate_reporters(paper_id),
                keys.CANDIDATE_REQUESTED,
                keys.candidate_requesters(paper_id),
            ],
            args=[
                paper_id,
                user_id,
                now,
                self.settings.candidate_cap,
                keys.CANDIDATE_REPORTER_TTL_S,
                keys.candidate_reporters(""),
                keys.candidate_requesters(""),
                int(asked),
            ],
        )

    async def move_requests(self, old: str, reader: str) -> None:
        """The papers install ``old`` asked for become ``reader``'s requests (``old`` is
        being joined to ``reader`` by a pairing code): erasing the reader then takes
        them out of these requests too. Can run again."""
        raw = await self.redis.zrange(keys.user_requests(old), 0, -1, withscores=True)
        asked = {str(pid): float(at) for pid, at in raw}  # type: ignore[str-unpack]
        if not asked:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in asked:
                pipe.sismember(keys.candidate_requesters(pid), old)
            still = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.user_requests(reader), asked)
            pipe.expire(keys.user_requests(reader), keys.CANDIDATE_REPORTER_TTL_S)
            await pipe.execute()
        for (pid, at), waiting in zip(asked.items(), still, strict=True):
            if waiting:
                await self._add_candidate(pid, reader, at, asked=True)
        await self.forget_reporter(old, list(asked))

    async def candidate_count(self) -> int:
        """Reported papers waiting for a source to confirm them."""
        return int(await self.redis.zcard(keys.CANDIDATE_SCORE))

    async def candidates_due(self, now: float, limit: int, min_reporters: int) -> list[str]:
        """Up to ``limit`` reported ids to look up now, those with the most reporters
        first (at least ``min_reporters``, or one a reader asked for: ``request``),
        leaving out the ones a source did not know at their last lookup until their next
        try. Candidates no install reports any more (erased readers) are forgotten."""
        scored = await self.redis.zrevrange(keys.CANDIDATE_SCORE, 0, -1, withscores=True)
        ranked = [(str(pid), float(score)) for pid, score in scored]  # type: ignore[str-unpack]
        if not ranked:
            return []
        lookups = {
            str(pid): _lookup_state(raw)
            for pid, raw in (await self.redis.hgetall(keys.CANDIDATE_PAPERS)).items()
        }
        members = {pid for pid, _ in ranked}
        stale = [pid for pid in lookups if pid not in members]
        if stale:
            await self.redis.hdel(keys.CANDIDATE_PAPERS, *stale)
        await self.forget_candidates([pid for pid, score in ranked if score < 1])
        requested = await self.requested(members)
        chosen: list[str] = []
        for pid, score in ranked:
            if len(chosen) >= limit:
                break
            if score < min_reporters and pid not in requested:
                continue  # one reader's report stays private, unless they asked for it
            state = lookups.get(pid)
            if state is None or state.next <= now:
                chosen.append(pid)
        return chosen

    async def requested(self, members: set[str]) -> set[str]:
        """The candidates among ``members`` some reader asked for (``request``); the
        requests of candidates gone (evicted, or their last requester erased) are
        dropped."""
        scored = await self.redis.zrange(keys.CANDIDATE_REQUESTED, 0, -1, withscores=True)
        asked = {str(pid): float(score) for pid, score in scored}  # type: ignore[str-unpack]
        gone = [pid for pid, score in asked.items() if score < 1 or pid not in members]
        if gone:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.CANDIDATE_REQUESTED, *gone)
                pipe.delete(*[keys.candidate_requesters(pid) for pid in gone])
                await pipe.execute()
        return {pid for pid, score in asked.items() if score >= 1 and pid in members}

    async def candidates_missed(
        self, paper_ids: Sequence[str], tries: int, retry_at: float
    ) -> list[str]:
        """The sources did not know these ids: each counts a miss; an id with ``tries``
        misses is dropped (returned), the others wait for ``retry_at``."""
        if not paper_ids:
            return []
        raws = await self.redis.hmget(keys.CANDIDATE_PAPERS, list(paper_ids))
        dropped: list[str] = []
        waiting: dict[FieldT, EncodableT] = {}
        for pid, raw in zip(paper_ids, raws, strict=True):
            state = _lookup_state(raw)
            misses = (state.misses if state else 0) + 1
            if misses >= tries:
                dropped.append(pid)
            else:
                waiting[pid] = _encode(CandidateLookup(misses=misses, next=retry_at))
        if waiting:
            await self.redis.hset(keys.CANDIDATE_PAPERS, mapping=waiting)
        await self.forget_candidates(dropped)
        return dropped

    async def forget_candidates(self, paper_ids: Sequence[str]) -> None:
        """The ids leave the candidates (admitted, catalogued meanwhile, or unknown)."""
        if not paper_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.CANDIDATE_PAPERS, *paper_ids)
            pipe.zrem(keys.CANDIDATE_SCORE, *paper_ids)
            pipe.zrem(keys.CANDIDATE_SEEN, *paper_ids)
            pipe.zrem(keys.CANDIDATE_REQUESTED, *paper_ids)
            for pid in paper_ids:
                pipe.delete(keys.candidate_reporters(pid), keys.candidate_requesters(pid))
            await pipe.execute()

    async def requeue_reported(self, now: float, reporters: int) -> int:
        """Papers admitted from readers' reports with their page's text (``source``
        ``reported``, before sources confirmed reported papers) leave the catalog and
        become candidates with ``reporters`` reporters: a source's metadata brings them
        back, dated by their submission, or they stay out. Returns how many."""
        found: list[str] = []
        cursor = 0
        while True:
            cursor, chunk = await self.redis.hscan(keys.PAPERS, cursor, count=2_000)
            assert isinstance(chunk, dict)
            for pid, raw in chunk.items():
                if '"source":"reported"' in raw and _decode_paper(raw).source == "reported":
                    found.append(str(pid))
            if not cursor:
                break
        for start in range(0, len(found), CHUNK):
            ids = found[start : start + CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hdel(keys.PAPERS, *ids)
                pipe.zrem(keys.PAPERS_BY_DATE, *ids)
                pipe.hdel(keys.PAPERS_SEEDED, *ids)
                pipe.zadd(keys.CANDIDATE_SCORE, dict.fromkeys(ids, reporters), gt=True)
                pipe.zadd(keys.CANDIDATE_SEEN, dict.fromkeys(ids, now), nx=True)
                await pipe.execute()
            for pid in ids:
                self._cache.pop(pid, None)
        if found:
            await self.redis.incr(keys.PAPERS_VERSION)
            log.info("reported papers wait for a source again", extra={"papers": len(found)})
        return len(found)

    async def merge_slugs(self, papers: Sequence[Paper], now: float) -> int:
        """Papers catalogued under the slug of a title that now arrives with its arXiv
        id are merged into that id (``merge``); returns how many."""
        by_slug = {slugify(p.title): p.id for p in papers if p.title and arxiv_id(p.id) == p.id}
        if not by_slug:
            return 0
        existing = await self.get_stored(list(by_slug))
        merged = 0
        for slug, paper in existing.items():
            if paper.id == by_slug[slug]:
                continue
            await self.merge(slug, by_slug[slug], now)
            merged += 1
        return merged

    async def forget_reporter(self, user_id: str, paper_ids: Sequence[str]) -> None:
        """Erase a user from the reporter and requester lists of waiting candidates (a
        paper nobody asks for any more waits for ``candidate_min_users`` reporters again)."""
        paper_ids = list(dict.fromkeys(paper_ids))
        if not paper_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in paper_ids:
                pipe.srem(keys.candidate_reporters(pid), user_id)
                pipe.srem(keys.candidate_requesters(pid), user_id)
            removed = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for n, pid in enumerate(paper_ids):
                if removed[2 * n]:
                    pipe.zincrby(keys.CANDIDATE_SCORE, -1, pid)
                if removed[2 * n + 1]:
                    pipe.zincrby(keys.CANDIDATE_REQUESTED, -1, pid)
            # No requester left: the paper is not asked for (a report alone stays private).
            pipe.zremrangebyscore(keys.CANDIDATE_REQUESTED, "-inf", 0)
            await pipe.execute()


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
