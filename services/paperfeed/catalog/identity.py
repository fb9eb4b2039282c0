"""Paper identity: a paper merged into another (a demo page's title slug into its arXiv
id, ``merge``) keeps resolving by its old id through ``pf:papers:alias``: readers'
records, the model's rows and lookups name it by either id.

Aliases are read through a short in-process cache (``ALIAS_CACHE_S``): a merge is seen
by every api process within that time, and at once by the one that made it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from paperfeed.catalog.papers import Paper, arxiv_id, slugify
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

log = logging.getLogger(__name__)
ALIAS_CACHE_S = 30.0


class Identities:
    """Aliases and merges of catalogued papers."""

    def __init__(
        self,
        redis: RedisClient,
        stored: Callable[[Sequence[str]], Awaitable[dict[str, Paper]]],
        forget: Callable[[str], None],
    ) -> None:
        """``stored``: papers by id as stored now (``Catalog.get_stored``); ``forget``:
        drop a paper from the catalog's in-process cache (it left the catalog)."""
        self.redis = redis
        self._stored = stored
        self._forget = forget
        self._move_trend = redis.register_script(lua("trending_merge"))
        self._aliases: tuple[float, dict[str, str]] = (0.0, {})
        self._merged_into: tuple[float, dict[str, list[str]]] = (-1.0, {})

    def forget_cached(self) -> None:
        """The catalog changed: merges are read afresh."""
        self._aliases = (0.0, {})

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
        self._forget(old_id)
        self._aliases = (0.0, {})
        log.info("paper merged", extra={"old": old_id, "new": new_id})

    async def merge_slugs(self, papers: Sequence[Paper], now: float) -> int:
        """Papers catalogued under the slug of a title that now arrives with its arXiv
        id are merged into that id (``merge``); returns how many."""
        by_slug = {slugify(p.title): p.id for p in papers if p.title and arxiv_id(p.id) == p.id}
        if not by_slug:
            return 0
        existing = await self._stored(list(by_slug))
        merged = 0
        for slug, paper in existing.items():
            if paper.id == by_slug[slug]:
                continue
            await self.merge(slug, by_slug[slug], now)
            merged += 1
        return merged
