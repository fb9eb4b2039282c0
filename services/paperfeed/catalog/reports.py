"""Papers readers met that the catalog lacks: candidates, never catalog entries.

A reported paper is only a candidate (its id and how many installs reported it, never
text from a client) until a source confirms it (``catalog.lookup``). A reader may ask
for one (``request``): that makes it public by their choice, so it is looked up with a
single reporter. Candidates are bounded (``candidate_cap``, the oldest reported
evicted by ``candidate_report.lua``); erasing a reader takes them out of every list
(``forget_reporter``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import msgspec
from redis.typing import EncodableT, FieldT

from paperfeed.catalog.papers import Paper, arxiv_id
from paperfeed.errors import RequestsExhausted, Unauthorized
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_paper = msgspec.json.Decoder(Paper).decode
CHUNK = 1_000


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


class Reports:
    """Reported and requested papers waiting for a source (``pf:cand:*``)."""

    def __init__(
        self, redis: RedisClient, settings: Settings, forget: Callable[[str], None]
    ) -> None:
        """``forget``: drop a paper from the catalog's in-process cache (it left the
        catalog: ``requeue_reported``)."""
        self.redis = redis
        self.settings = settings
        self._forget = forget
        self._report = redis.register_script(lua("candidate_report"))
        self._reader_request = redis.register_script(lua("reader_request"))

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
                self._forget(pid)
        if found:
            await self.redis.incr(keys.PAPERS_VERSION)
            log.info("reported papers wait for a source again", extra={"papers": len(found)})
        return len(found)

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
