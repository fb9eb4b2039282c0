"""Catalog sync: the day's papers from Hugging Face and arXiv, with no operator.

``paperfeed sync`` runs it once; the worker runs it every ``sync_interval_s``.

- ``hf``: Hugging Face daily papers, ``GET {hf_api_url}/api/daily_papers?date=D`` for
  each of the last ``sync_days`` days (UTC, today first). Their upvotes are the trending
  prior: the catalog credits each increase once (``Catalog.upsert``).
- ``arxiv``: the arXiv API's newest submissions, ``GET {arxiv_api_url}/api/query`` per
  category of ``arxiv_categories``, ``arxiv_page_size`` entries a page, newest first,
  paged until a page holds only papers already catalogued (or ``arxiv_max_pages``), with at
  least ``arxiv_delay_s`` between two requests (the arXiv API's terms ask for 3 s).

One paper, one entry: an arXiv id is a paper's identity (``2411.01234``,
``2411.01234v2``, an arxiv.org URL and the Hugging Face paper of that id are one
paper). A source refreshes what it knows and keeps what the other brought (the larger
upvote count, a non-empty abstract). A paper catalogued under its title's slug (the
demo page's papers) is merged into its arXiv entry when a source brings a paper whose
title has the same slug (``Catalog.merge``: trending follows at once; readers' records,
the model's rows and the old id resolve through the alias).

A source's run is all or nothing: its papers are imported only when every request of
the run succeeded. A failed page would otherwise leave a gap that "stop at a page of
known papers" never comes back for. A failure (timeout, connection error, HTTP error, 429,
a malformed or truncated body) is logged with the source and the reason and leaves the
catalog and trending untouched; the source is tried again after a backoff (doubling
from ``RETRY_BASE_S``, at most the sync interval; a 429's ``Retry-After`` when longer),
and the other source goes on. Per-source bookkeeping is in ``pf:sync:state`` and
exported by ``/metrics``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import msgspec

from paperfeed import __version__
from paperfeed.catalog.importers import ImportFormatError, parse_arxiv_atom, parse_daily_papers
from paperfeed.catalog.papers import Paper, arxiv_id, slugify
from paperfeed.catalog.repository import Catalog
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)

Source = Literal["hf", "arxiv"]
SOURCES: tuple[Source, ...] = ("hf", "arxiv")
RETRY_BASE_S = 60.0
RETRY_AFTER_CAP_S = 86_400.0
MAX_BODY_BYTES = 20 * 2**20
USER_AGENT = f"paperfeed/{__version__} (catalog sync)"


class SourceFailed(Exception):
    """One request of a source failed; the message says which and why."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class SourceResult(msgspec.Struct, kw_only=True):
    source: Source
    ok: bool
    skipped: bool = False
    """Not tried: the source waits for its retry time."""
    fetched: int = 0
    """Papers the source listed (before identity merging)."""
    new: int = 0
    updated: int = 0
    merged: int = 0
    """Papers known by their title's slug merged into their arXiv entry."""
    requests: int = 0
    error: str | None = None
    retry_at: float | None = None
    seconds: float = 0.0


def parse_sources(value: str) -> list[Source]:
    """``hf,arxiv`` -> the sources, in that order; unknown names raise ValueError."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in SOURCES]
    if unknown:
        raise ValueError(f"unknown sync sources {unknown}; known: {', '.join(SOURCES)}")
    return [source for source in SOURCES if source in names]


class Fetcher:
    """GET with a time limit, a size limit and every failure as ``SourceFailed``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.requests = 0

    async def get(self, url: str, params: dict[str, str | int]) -> bytes:
        self.requests += 1
        try:
            async with self.client.stream("GET", url, params=params) as response:
                if response.status_code != 200:
                    retry_after = (
                        retry_after_s(response.headers.get("retry-after"))
                        if response.status_code in (429, 503)
                        else None
                    )
                    raise SourceFailed(
                        f"HTTP {response.status_code} from {response.url}", retry_after
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY_BYTES:
                        raise SourceFailed(f"body of {response.url} over {MAX_BODY_BYTES} bytes")
                return bytes(body)
        except httpx.TimeoutException as exc:
            raise SourceFailed(f"timeout ({type(exc).__name__}) from {url}") from exc
        except httpx.HTTPError as exc:
            raise SourceFailed(f"{type(exc).__name__} from {url}: {exc}") from exc


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def fetch_hf(fetcher: Fetcher, settings: Settings, now: float) -> list[Paper]:
    """The daily papers of the last ``sync_days`` days, today first."""
    today = datetime.fromtimestamp(now, UTC).date()
    url = f"{settings.hf_api_url.rstrip('/')}/api/daily_papers"
    papers: list[Paper] = []
    for back in range(settings.sync_days):
        day = (today - timedelta(days=back)).isoformat()
        body = await fetcher.get(url, {"date": day})
        try:
            found = parse_daily_papers(body)
        except (ImportFormatError, msgspec.DecodeError) as exc:
            raise SourceFailed(f"malformed daily papers of {day}: {exc}") from exc
        for paper in found:
            paper.source = "hf"
        papers.extend(found)
    return papers


class Pacer:
    """At least ``delay_s`` between the starts of two requests."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.last = -float("inf")

    async def wait(self) -> None:
        pause = self.last + self.delay_s - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        self.last = time.monotonic()


async def fetch_arxiv(fetcher: Fetcher, settings: Settings, catalog: Catalog) -> list[Paper]:
    """Each category's newest submissions, paged until a page holds a known paper."""
    url = f"{settings.arxiv_api_url.rstrip('/')}/api/query"
    pacer = Pacer(settings.arxiv_delay_s)
    size = settings.arxiv_page_size
    papers: list[Paper] = []
    for category in [c.strip() for c in settings.arxiv_categories.split(",") if c.strip()]:
        for page in range(settings.arxiv_max_pages):
            await pacer.wait()
            body = await fetcher.get(
                url,
                {
                    "search_query": f"cat:{category}",
                    "sortBy": "submittedDate",
                    "sortOrder": "descending",
                    "start": page * size,
                    "max_results": size,
                },
            )
            try:
                found = parse_arxiv_atom(body)
            except ImportFormatError as exc:
                raise SourceFailed(f"malformed arXiv answer for {category}: {exc}") from exc
            papers.extend(found)
            # Caught up at a page whose papers are all catalogued (a page with some known
            # ones goes on: Hugging Face lists a few of the day's arXiv papers first).
            if len(found) < size or await catalog.known_all([p.id for p in found]):
                break
    return papers


class CatalogSync:
    def __init__(self, redis: RedisClient, settings: Settings, catalog: Catalog) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog

    async def run(
        self,
        sources: Sequence[Source],
        now: float | None = None,
        force: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> list[SourceResult]:
        """Sync each source that is due (``force``: whether due or not)."""
        now = time.time() if now is None else now
        state = await self.state()
        results = []
        async with httpx.AsyncClient(
            timeout=self.settings.sync_timeout_s,
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        ) as client:
            for source in sources:
                if not force and not self._due(state, source, now):
                    retry_at = float(state.get(f"{source}:retry_at") or 0) or None
                    results.append(
                        SourceResult(source=source, ok=False, skipped=True, retry_at=retry_at)
                    )
                    continue
                results.append(await self.sync_source(source, Fetcher(client), now))
        return results

    async def sync_source(self, source: Source, fetcher: Fetcher, now: float) -> SourceResult:
        started = time.perf_counter()
        try:
            if source == "hf":
                papers = await fetch_hf(fetcher, self.settings, now)
            else:
                papers = await fetch_arxiv(fetcher, self.settings, self.catalog)
        except SourceFailed as exc:
            return await self._failed(source, exc, fetcher.requests, now, started)
        merged = await self.merge_slugs(papers, now)
        result = await self.catalog.upsert(papers, now, merge=True)
        outcome = SourceResult(
            source=source,
            ok=True,
            fetched=len(papers),
            new=result.new,
            updated=result.updated,
            merged=merged,
            requests=fetcher.requests,
            seconds=round(time.perf_counter() - started, 3),
        )
        success: dict[str, float | str] = {
            "last_success": now,
            "last_attempt": now,
            "failures": 0,
            "retry_at": 0,
            "last_error": "",
            "last_new": result.new,
        }
        await self._write_state(source, success, "added_total", result.new)
        log.info("catalog synced", extra=msgspec.to_builtins(outcome))
        return outcome

    async def _failed(
        self, source: Source, exc: SourceFailed, requests: int, now: float, started: float
    ) -> SourceResult:
        failures = await self.redis.hincrby(keys.SYNC_STATE, f"{source}:failures", 1)
        backoff = min(
            max(self.settings.sync_interval_s, RETRY_BASE_S),
            RETRY_BASE_S * 2 ** min(failures - 1, 30),
        )
        if exc.retry_after_s is not None:
            backoff = max(backoff, min(exc.retry_after_s, RETRY_AFTER_CAP_S))
        retry_at = now + backoff
        failure = {"last_attempt": now, "retry_at": retry_at, "last_error": exc.reason[:500]}
        await self._write_state(source, failure, "failures_total", 1)
        log.warning(
            "catalog sync failed; retrying later",
            extra={"source": source, "reason": exc.reason, "retry_in_s": round(backoff, 1)},
        )
        return SourceResult(
            source=source,
            ok=False,
            requests=requests,
            error=exc.reason,
            retry_at=retry_at,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def merge_slugs(self, papers: Sequence[Paper], now: float) -> int:
        """Papers catalogued under the slug of a title that now arrives with its arXiv
        id are merged into that id."""
        by_slug = {slugify(p.title): p.id for p in papers if p.title and arxiv_id(p.id) == p.id}
        if not by_slug:
            return 0
        slugs = list(by_slug)
        existing = await self.catalog.get_stored(slugs)
        merged = 0
        for slug, paper in existing.items():
            if paper.id == by_slug[slug]:
                continue
            await self.catalog.merge(slug, by_slug[slug], now)
            merged += 1
        return merged

    async def state(self) -> dict[str, str]:
        return await read_state(self.redis)

    async def _write_state(
        self, source: Source, fields: dict[str, float | str], total: str, add: int
    ) -> None:
        """Set ``source``'s ``fields`` and add ``add`` to its ``total`` counter."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.SYNC_STATE, mapping={f"{source}:{k}": v for k, v in fields.items()})
            pipe.hincrby(keys.SYNC_STATE, f"{source}:{total}", add)
            await pipe.execute()

    def _due(self, state: dict[str, str], source: Source, now: float) -> bool:
        return source_due(state, source, now, self.settings.sync_interval_s)


async def read_state(redis: RedisClient) -> dict[str, str]:
    """``pf:sync:state``: ``<source>:<field>`` -> value (the worker and /metrics read it)."""
    raw = await redis.hgetall(keys.SYNC_STATE)
    return {str(k): str(v) for k, v in raw.items()}


def source_due(state: dict[str, str], source: Source, now: float, interval_s: float) -> bool:
    """Its last success is ``interval_s`` old (or it never ran) and its retry time came."""
    last = float(state.get(f"{source}:last_success") or 0)
    retry_at = float(state.get(f"{source}:retry_at") or 0)
    return now >= retry_at and now - last >= interval_s


async def sync_due(redis: RedisClient, settings: Settings, now: float) -> bool:
    """Some source of ``sync_sources`` is due (the worker asks; interval 0: never)."""
    if settings.sync_interval_s <= 0:
        return False
    state = await read_state(redis)
    return any(
        source_due(state, source, now, settings.sync_interval_s)
        for source in parse_sources(settings.sync_sources)
    )


class SyncBusy(RuntimeError):
    """Another process holds the sync's lease."""


async def run_sync(
    settings: Settings,
    sources: Sequence[Source],
    force: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[SourceResult]:
    """One sync under the lease ``pf:sync:lock`` (one sync at a time in a deployment:
    two would fetch the same pages twice)."""
    from paperfeed.core import Core
    from paperfeed.store.lease import Lease

    core = Core.connect(settings)
    try:
        with Lease(settings, keys.SYNC_LOCK, settings.lock_ttl_s) as lease:
            if not lease.acquire():
                raise SyncBusy("another catalog sync is running")
            sync = CatalogSync(core.redis, settings, core.catalog)
            return await sync.run(sources, force=force, transport=transport)
    finally:
        await core.close()


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from paperfeed.runtime import redis_for

    sources: list[Source] = list(SOURCES) if args.source == "all" else [args.source]
    if args.days is not None:
        settings = msgspec.structs.replace(settings, sync_days=args.days)
    with redis_for(settings) as ready:
        try:
            results = asyncio.run(run_sync(ready, sources, force=True))
        except SyncBusy as exc:
            print(f"paperfeed sync: {exc}", file=sys.stderr)
            return 3
    for result in results:
        print(msgspec.json.encode(result).decode())
    return 0 if all(result.ok for result in results) else 1


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    commands: dict[str, Callable[[Settings, argparse.Namespace], int]],
) -> None:
    sync = sub.add_parser(
        "sync", help="bring the catalog up to date from Hugging Face and arXiv (docs/catalog.md)"
    )
    sync.add_argument("--source", choices=[*SOURCES, "all"], default="all")
    sync.add_argument(
        "--days", type=int, choices=range(1, 31), metavar="N",
        help="days of Hugging Face daily papers (default PAPERFEED_SYNC_DAYS)",
    )  # fmt: skip
    commands["sync"] = cmd_sync
