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
title has the same slug (``Identities.merge``: trending follows at once; readers' records,
the model's rows and the old id resolve through the alias).

A unit's run is all or nothing: Hugging Face's, and each arXiv category's. Its papers
are imported only when every request of that run succeeded (a failed page would
otherwise leave a gap that "stop at a page of known papers" never comes back for), and
a complete category is imported whatever the other categories answer. A failure
(timeout, connection error, HTTP error, 429, a malformed, truncated or hostile body, an
arXiv error entry) is logged with the source, the category and the reason and leaves
the catalog and trending untouched by that unit; the unit is tried again after its own
backoff (doubling from ``RETRY_BASE_S``, at most the sync interval; a 429's
``Retry-After`` when longer, and then no arXiv request at all until it passed), and the
other units go on. The bookkeeping is in ``pf:sync:state`` (``hf:*``, ``arxiv:*`` for
the source as a whole, ``arxiv:<category>:*``; ``catalog.sources``) and exported by
``/metrics``.

``lookup=True`` (the worker) then looks up the arXiv ids readers reported
(``catalog.lookup``), under the same pacing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import msgspec

from paperfeed.catalog.importers import ImportFormatError, parse_arxiv_atom, parse_daily_papers
from paperfeed.catalog.lookup import (
    ReportedLookup,
    lookup_due,
    lookup_wanted,
    refuse_arxiv,
    refused_until,
)
from paperfeed.catalog.papers import Paper
from paperfeed.catalog.repository import Catalog
from paperfeed.catalog.sources import (
    RETRY_BASE_S,
    SOURCES,
    USER_AGENT,
    Fetcher,
    Pacer,
    Source,
    SourceFailed,
    SourceResult,
    parse_sources,
    read_state,
    record_failure,
    record_success,
    retry_after_s,
    unit_due,
    write_state,
)
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient, connect, resolve_redis_url
from paperfeed.trending import Trending

__all__ = [
    "RETRY_BASE_S",
    "SOURCES",
    "CatalogSync",
    "Fetcher",
    "Source",
    "SourceFailed",
    "SourceResult",
    "SyncBusy",
    "parse_sources",
    "read_state",
    "retry_after_s",
    "run_sync",
    "sync_due",
]

log = logging.getLogger(__name__)


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


def arxiv_categories(settings: Settings) -> list[str]:
    """The configured categories, in order, each once."""
    names = [c.strip() for c in settings.arxiv_categories.split(",") if c.strip()]
    return list(dict.fromkeys(names))


async def fetch_arxiv_category(
    fetcher: Fetcher, pacer: Pacer, settings: Settings, catalog: Catalog, category: str
) -> list[Paper]:
    """One category's newest submissions, paged until a page holds only known papers."""
    url = f"{settings.arxiv_api_url.rstrip('/')}/api/query"
    size = settings.arxiv_page_size
    papers: list[Paper] = []
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
        self.lookup = ReportedLookup(redis, settings, catalog)

    async def run(
        self,
        sources: Sequence[Source],
        now: float | None = None,
        force: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        lookup: bool = False,
    ) -> list[SourceResult]:
        """Sync each source that is due (``force``: whether due or not); ``lookup``:
        then look reported ids up, when due and some wait (``force``: whenever)."""
        now = time.time() if now is None else now
        state = await self.state()
        results = []
        last_request = float(state.get("arxiv:last_request_at") or 0)
        pacer = Pacer(self.settings.arxiv_delay_s, last_request)
        async with httpx.AsyncClient(
            timeout=self.settings.sync_timeout_s,
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        ) as client:
            for source in sources:
                if not force and not source_due(state, source, now, self.settings):
                    results.append(
                        SourceResult(
                            source=source,
                            ok=False,
                            skipped=True,
                            retry_at=retry_time(state, source),
                        )
                    )
                elif source == "hf":
                    results.append(await self.sync_hf(Fetcher(client), now))
                else:
                    results.append(await self.sync_arxiv(Fetcher(client), pacer, state, now, force))
            if lookup:
                state = await self.state()
                if force or (
                    lookup_due(state, self.settings, now) and await lookup_wanted(self.redis, state)
                ):
                    results.append(await self.lookup.run(Fetcher(client), pacer, now))
                else:
                    results.append(
                        SourceResult(
                            source="reported",
                            ok=False,
                            skipped=True,
                            retry_at=retry_time(state, "reported"),
                        )
                    )
        if pacer.at > last_request:
            await write_state(self.redis, "arxiv", {"last_request_at": pacer.at}, {})
        return results

    async def sync_hf(self, fetcher: Fetcher, now: float) -> SourceResult:
        started = time.perf_counter()
        try:
            papers = await fetch_hf(fetcher, self.settings, now)
        except SourceFailed as exc:
            retry_at = await record_failure(
                self.redis, "hf", exc, now, self.settings.sync_interval_s
            )
            log.warning(
                "catalog sync failed; retrying later",
                extra={
                    "source": "hf",
                    "reason": exc.reason,
                    "retry_in_s": round(retry_at - now, 1),
                },
            )
            return SourceResult(
                source="hf",
                ok=False,
                requests=fetcher.requests,
                error=exc.reason,
                retry_at=retry_at,
                seconds=round(time.perf_counter() - started, 3),
            )
        merged = await self.catalog.identity.merge_slugs(papers, now)
        result = await self.catalog.upsert(papers, now, merge=True)
        await record_success(self.redis, "hf", now, result.new)
        outcome = SourceResult(
            source="hf",
            ok=True,
            fetched=len(papers),
            new=result.new,
            updated=result.updated,
            merged=merged,
            requests=fetcher.requests,
            seconds=round(time.perf_counter() - started, 3),
        )
        log.info("catalog synced", extra=msgspec.to_builtins(outcome))
        return outcome

    async def sync_arxiv(
        self, fetcher: Fetcher, pacer: Pacer, state: dict[str, str], now: float, force: bool
    ) -> SourceResult:
        """Each category due (``force``: each one) is its own unit: its complete run is
        imported whatever the others answer; a failed one keeps its own backoff. A
        ``Retry-After`` ends the run (it concerns every arXiv request)."""
        started = time.perf_counter()
        interval = self.settings.sync_interval_s
        configured = arxiv_categories(self.settings)
        await self._forget_categories(state, configured)
        due = [c for c in configured if force or unit_due(state, f"arxiv:{c}", now, interval)]
        outcome = SourceResult(source="arxiv", ok=True)
        for category in due:
            unit = f"arxiv:{category}"
            try:
                papers = await fetch_arxiv_category(
                    fetcher, pacer, self.settings, self.catalog, category
                )
            except SourceFailed as exc:
                outcome.failed[category] = exc.reason[:500]
                retry_at = await record_failure(self.redis, unit, exc, now, interval)
                log.warning(
                    "catalog sync failed; retrying later",
                    extra={
                        "source": "arxiv",
                        "category": category,
                        "reason": exc.reason,
                        "retry_in_s": round(retry_at - now, 1),
                    },
                )
                if exc.retry_after_s is not None:
                    await refuse_arxiv(self.redis, now, exc)
                    break
                continue
            merged = await self.catalog.identity.merge_slugs(papers, now)
            result = await self.catalog.upsert(papers, now, merge=True)
            await record_success(self.redis, unit, now, result.new)
            outcome.fetched += len(papers)
            outcome.new += result.new
            outcome.updated += result.updated
            outcome.merged += merged
        outcome.requests = fetcher.requests
        outcome.seconds = round(time.perf_counter() - started, 3)
        summary = arxiv_summary(await self.state(), configured)
        counters = {"added_total": outcome.new, "failures_total": len(outcome.failed)}
        fields = {**summary, "last_attempt": now, "last_new": outcome.new}
        await write_state(self.redis, "arxiv", fields, counters)
        if outcome.failed:
            outcome.ok = False
            outcome.error = "; ".join(f"{c}: {why}" for c, why in outcome.failed.items())
            outcome.retry_at = float(summary["retry_at"])
        else:
            log.info("catalog synced", extra=msgspec.to_builtins(outcome))
        return outcome

    async def _forget_categories(self, state: dict[str, str], configured: list[str]) -> None:
        """The bookkeeping of categories no longer configured goes."""
        gone = [
            field
            for field in state
            if field.startswith("arxiv:")
            and field.count(":") >= 2
            and field[len("arxiv:") :].rsplit(":", 1)[0] not in configured
        ]
        if gone:
            await self.redis.hdel(keys.SYNC_STATE, *gone)

    async def state(self) -> dict[str, str]:
        return await read_state(self.redis)


def arxiv_summary(state: dict[str, str], categories: list[str]) -> dict[str, float | str]:
    """The arXiv source as a whole, from its categories' bookkeeping: ``failing`` (the
    categories whose last run failed), ``failures`` (the most failures in a row of one
    of them), ``last_error`` (each failing category's reason), ``retry_at`` (when the
    first of them is tried again; a refusal's end when later), ``last_success`` (when
    the category synced longest ago last synced: every category is synced since)."""

    def field(category: str, name: str) -> float:
        return float(state.get(f"arxiv:{category}:{name}") or 0)

    failing = [c for c in categories if field(c, "failures") > 0]
    retry_at = min((field(c, "retry_at") for c in failing), default=0.0)
    if failing:
        retry_at = max(retry_at, refused_until(state))
    return {
        "failing": ",".join(failing),
        "failures": int(max((field(c, "failures") for c in categories), default=0)),
        "last_error": "; ".join(f"{c}: {state.get(f'arxiv:{c}:last_error', '')}" for c in failing),
        "retry_at": retry_at,
        "last_success": min((field(c, "last_success") for c in categories), default=0.0),
    }


def retry_time(state: dict[str, str], unit: str) -> float | None:
    return float(state.get(f"{unit}:retry_at") or 0) or None


def source_due(state: dict[str, str], source: Source, now: float, settings: Settings) -> bool:
    """``hf``: its last success is ``sync_interval_s`` old (or it never ran) and its
    retry time came. ``arxiv``: so is one of its categories, and arXiv does not ask to
    wait (``Retry-After``). Never with an interval of 0 (sync off): the lookup of
    reported ids, which runs the sync, must not bring the sources along."""
    interval = settings.sync_interval_s
    if interval <= 0:
        return False
    if source == "hf":
        return unit_due(state, "hf", now, interval)
    return now >= refused_until(state) and any(
        unit_due(state, f"arxiv:{c}", now, interval) for c in arxiv_categories(settings)
    )


async def sync_due(redis: RedisClient, settings: Settings, now: float) -> bool:
    """Some source of ``sync_sources`` is due (interval 0: never), or the lookup of
    reported ids is (``candidate_lookup_interval_s``) and some wait: the worker asks."""
    state = await read_state(redis)
    if any(
        source_due(state, source, now, settings) for source in parse_sources(settings.sync_sources)
    ):
        return True
    return lookup_due(state, settings, now) and await lookup_wanted(redis, state)


class SyncBusy(RuntimeError):
    """Another process holds the sync's lease."""


async def run_sync(
    settings: Settings,
    sources: Sequence[Source],
    force: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    lookup: bool = False,
) -> list[SourceResult]:
    """One sync under the lease ``pf:sync:lock`` (one sync at a time in a deployment:
    two would fetch the same pages twice, or pace arXiv apart); ``lookup``: the lookup of
    reported ids too. It needs a Redis client and the catalog, nothing else of ``Core``
    (whose catalog, in a process that serves no feed, is this one: no catalog index)."""
    from paperfeed.store.lease import Lease

    redis = connect(settings, resolve_redis_url(settings))
    try:
        with Lease(settings, keys.SYNC_LOCK, settings.lock_ttl_s) as lease:
            if not lease.acquire():
                raise SyncBusy("another catalog sync is running")
            catalog = Catalog(redis, settings, Trending(redis, settings))
            sync = CatalogSync(redis, settings, catalog)
            return await sync.run(sources, force=force, transport=transport, lookup=lookup)
    finally:
        await redis.aclose()


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from paperfeed.runtime import redis_for

    sources: list[Source] = (
        list(SOURCES)
        if args.source == "all"
        else []
        if args.source == "reported"
        else [args.source]
    )
    lookup = args.source in ("all", "reported")
    if args.days is not None:
        settings = msgspec.structs.replace(settings, sync_days=args.days)
    with redis_for(settings) as ready:
        try:
            results = asyncio.run(run_sync(ready, sources, force=True, lookup=lookup))
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
    sync.add_argument(
        "--source",
        choices=[*SOURCES, "reported", "all"],
        default="all",
        help="reported: look up the arXiv ids readers reported (all: every source, then that)",
    )
    sync.add_argument(
        "--days", type=int, choices=range(1, 31), metavar="N",
        help="days of Hugging Face daily papers (default PAPERFEED_SYNC_DAYS)",
    )  # fmt: skip
    commands["sync"] = cmd_sync
