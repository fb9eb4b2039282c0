"""Papers readers reported, looked up at the sources: only a source admits a paper.

An install that meets an arXiv paper the catalog lacks reports its id
(``Reports.report``: the id and the install, nothing the page said). Until a source
confirms the id, the paper is in no listing, feed, search or digest. The worker's sync
job looks reported ids up every ``candidate_lookup_interval_s``:

1. the candidates with at least ``candidate_min_users`` reporters, or asked for by a
   reader (``POST /v1/catalog/requests``: their choice to make the id public), most
   reporters first, ``candidate_lookup_batch`` of them at most, leaving out those
   waiting for their next try;
2. an id catalogued meanwhile (a sync brought it) just leaves the candidates; an id
   that cannot name an arXiv paper (a month to come, a number of the wrong length for
   its month) is dropped without a request;
3. arXiv: one request, ``/api/query?id_list=<ids>&max_results=<n>``, paced with the
   category sync (``arxiv_delay_s`` between two arXiv requests);
4. Hugging Face: ``/api/papers/<id>`` for each id arXiv did not list (for each id when
   ``arxiv`` is not among ``sync_sources``); a 404 is "not known";
5. a paper found is upserted with the source's metadata (``source`` ``arxiv`` or
   ``hf``), dated by its submission (else by its id's month): an old paper is never new;
6. an id that no source knows counts a miss and is tried again ``MISS_RETRY_S`` later;
   after ``candidate_lookup_tries`` misses it leaves the candidates.

A source's failure (timeout, HTTP error, 429, a malformed answer) is not "not known":
the ids it did not answer stay as they were, and the lookup is tried again after its
backoff (``sources.backoff_s``). A ``Retry-After`` from arXiv holds back the category
sync as well (``arxiv:refused_until``), and the reverse. The bookkeeping is the unit
``reported`` of ``pf:sync:state``.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Final

import msgspec

from paperfeed.catalog.importers import (
    ArxivError,
    ImportFormatError,
    parse_arxiv_atom,
    parse_hf_paper,
)
from paperfeed.catalog.papers import Paper, published_ts
from paperfeed.catalog.repository import Catalog
from paperfeed.catalog.sources import (
    RETRY_AFTER_CAP_S,
    Fetcher,
    Pacer,
    SourceFailed,
    SourceResult,
    parse_sources,
    record_failure,
    record_success,
    unit_due,
    write_state,
)
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger("paperfeed.catalog.sync")

UNIT: Final = "reported"
MISS_RETRY_S = 3_600.0
"""How long an id no source knew waits before it is asked about again."""
NEW_STYLE = re.compile(r"(\d{2})(\d{2})\.(\d{4,5})")


def possible_arxiv_id(paper_id: str, now: float) -> bool:
    """Whether ``paper_id`` can name an arXiv paper at ``now``: new-style ids began in
    April 2007 (``0704``), have four digits after the dot until ``1412`` and five from
    ``1501``, and name a month that has begun (a day's leeway for time zones)."""
    match = NEW_STYLE.fullmatch(paper_id)
    if match is None:
        return False
    month = int(match.group(1)) * 100 + int(match.group(2))
    if not 1 <= month % 100 <= 12 or month < 704:
        return False
    if (len(match.group(3)) == 5) != (month >= 1501):
        return False
    today = datetime.fromtimestamp(now + 86_400, UTC)
    return month <= (today.year % 100) * 100 + today.month


def id_month(paper_id: str) -> str | None:
    """The first day of the month an arXiv id was issued in (``2401.00001`` ->
    ``2024-01-01``): the latest a paper without a date can be dated."""
    match = NEW_STYLE.fullmatch(paper_id)
    return f"20{match.group(1)}-{match.group(2)}-01" if match else None


def refused_until(state: dict[str, str]) -> float:
    """Until when arXiv asked every request to wait (a ``Retry-After``)."""
    return float(state.get("arxiv:refused_until") or 0)


async def refuse_arxiv(redis: RedisClient, now: float, exc: SourceFailed) -> None:
    """arXiv answered 429 or 503 with a ``Retry-After``: no arXiv request until then,
    neither a category's nor a lookup's."""
    if exc.retry_after_s is not None:
        until = now + min(exc.retry_after_s, RETRY_AFTER_CAP_S)
        await write_state(redis, "arxiv", {"refused_until": until}, {})


def lookup_due(state: dict[str, str], settings: Settings, now: float) -> bool:
    """A lookup is due (``candidate_lookup_interval_s`` after the last one, a failed one
    after its backoff; never while arXiv asks to wait). Whether there is anything to
    look up is the caller's question."""
    interval = settings.candidate_lookup_interval_s
    if interval <= 0 or not unit_due(state, UNIT, now, interval):
        return False
    return "arxiv" not in parse_sources(settings.sync_sources) or now >= refused_until(state)


async def lookup_wanted(redis: RedisClient, state: dict[str, str]) -> bool:
    """Some reported id waits (or the papers once admitted from page text were never
    requeued, ``Reports.requeue_reported``)."""
    return not state.get(f"{UNIT}:requeued_at") or bool(await redis.zcard(keys.CANDIDATE_SCORE))


async def arxiv_by_id(
    fetcher: Fetcher, pacer: Pacer, settings: Settings, paper_ids: list[str]
) -> dict[str, Paper]:
    """The papers arXiv knows among ``paper_ids`` (one ``id_list`` request)."""
    url = f"{settings.arxiv_api_url.rstrip('/')}/api/query"
    await pacer.wait()
    body = await fetcher.get(url, {"id_list": ",".join(paper_ids), "max_results": len(paper_ids)})
    try:
        papers = parse_arxiv_atom(body)
    except ArxivError as exc:
        raise IdsRefused(str(exc), [pid for pid in paper_ids if _named(pid, str(exc))]) from exc
    except ImportFormatError as exc:
        raise SourceFailed(f"malformed arXiv answer for id_list: {exc}") from exc
    wanted = set(paper_ids)
    return {paper.id: paper for paper in papers if paper.id in wanted}


def _named(paper_id: str, message: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(paper_id)}(?![\d])", message) is not None


class IdsRefused(SourceFailed):
    """arXiv's error entry for an ``id_list`` (an id it calls malformed): those ids
    are not arXiv papers; the others are asked about again at the next lookup."""

    def __init__(self, reason: str, paper_ids: list[str]) -> None:
        super().__init__(reason)
        self.paper_ids = paper_ids


async def hf_by_id(fetcher: Fetcher, settings: Settings, paper_id: str) -> Paper | None:
    """Hugging Face's paper of that id, or None when it does not know it."""
    body = await fetcher.find(f"{settings.hf_api_url.rstrip('/')}/api/papers/{paper_id}")
    if body is None:
        return None
    try:
        paper = parse_hf_paper(body)
    except ImportFormatError as exc:
        raise SourceFailed(f"malformed Hugging Face paper {paper_id}: {exc}") from exc
    return paper if paper.id == paper_id else None


class Answers(msgspec.Struct):
    found: dict[str, Paper]
    unknown: list[str]
    """Ids every source asked answered it does not know."""
    failure: SourceFailed | None = None


class ReportedLookup:
    def __init__(self, redis: RedisClient, settings: Settings, catalog: Catalog) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog

    async def run(self, fetcher: Fetcher, pacer: Pacer, now: float) -> SourceResult:
        """Look the due candidates up; admit what a source knows, count the misses."""
        started = time.perf_counter()
        settings = self.settings
        if not await self.redis.hget(keys.SYNC_STATE, f"{UNIT}:requeued_at"):
            # Once: papers admitted from page text before lookups wait for a source.
            requeued = await self.catalog.reports.requeue_reported(
                now, settings.candidate_min_users
            )
            await write_state(self.redis, UNIT, {"requeued_at": now}, {"requeued": requeued})
        ids = await self.catalog.reports.candidates_due(
            now, settings.candidate_lookup_batch, settings.candidate_min_users
        )
        known = await self.catalog.get_stored(ids)
        impossible = [pid for pid in ids if pid not in known and not possible_arxiv_id(pid, now)]
        asked = [pid for pid in ids if pid not in known and pid not in impossible]
        answers = await self.ask(fetcher, pacer, asked, now)
        papers = [dated(paper) for paper in answers.found.values()]
        merged = await self.catalog.identity.merge_slugs(papers, now)
        result = await self.catalog.upsert(papers, now, merge=True)
        await self.catalog.reports.forget_candidates([*known, *answers.found])
        await self.catalog.reports.forget_candidates(impossible)
        dropped = impossible + await self.catalog.reports.candidates_missed(
            answers.unknown, settings.candidate_lookup_tries, now + MISS_RETRY_S
        )
        waiting = await self.catalog.reports.candidate_count()
        outcome = SourceResult(
            source=UNIT,
            ok=answers.failure is None,
            fetched=len(asked),
            new=result.new,
            updated=result.updated,
            merged=merged,
            dropped=len(dropped),
            requests=fetcher.requests,
            seconds=round(time.perf_counter() - started, 3),
        )
        counters = {"dropped_total": len(dropped)}
        if answers.failure is None:
            await record_success(self.redis, UNIT, now, result.new, counters)
            await write_state(self.redis, UNIT, {"waiting": waiting}, {})
            log.info(
                "reported papers looked up",
                extra={**msgspec.to_builtins(outcome), "waiting": waiting},
            )
            return outcome
        failure = answers.failure
        retry_at = await record_failure(
            self.redis, UNIT, failure, now, settings.candidate_lookup_interval_s
        )
        fields: dict[str, float | str] = {"last_new": result.new, "waiting": waiting}
        await write_state(self.redis, UNIT, fields, {"added_total": result.new, **counters})
        log.warning(
            "looking up reported papers failed; retrying later",
            extra={
                "source": UNIT,
                "reason": failure.reason,
                "retry_in_s": round(retry_at - now, 1),
                "admitted": result.new,
                "dropped": len(dropped),
            },
        )
        outcome.error = failure.reason
        outcome.retry_at = retry_at
        return outcome

    async def ask(
        self, fetcher: Fetcher, pacer: Pacer, paper_ids: list[str], now: float
    ) -> Answers:
        """What the sources say of ``paper_ids``: arXiv first (one request), Hugging Face
        for the rest. An id counts as unknown only when every source asked answered."""
        answers = Answers(found={}, unknown=[])
        if not paper_ids:
            return answers
        sources = parse_sources(self.settings.sync_sources)
        rest = list(paper_ids)
        if "arxiv" in sources:
            try:
                answers.found.update(await arxiv_by_id(fetcher, pacer, self.settings, rest))
            except IdsRefused as exc:
                answers.unknown.extend(exc.paper_ids)
                answers.failure = exc
                return answers
            except SourceFailed as exc:
                await refuse_arxiv(self.redis, now, exc)
                answers.failure = exc
                return answers
            rest = [pid for pid in rest if pid not in answers.found]
        if "hf" not in sources:
            answers.unknown.extend(rest)
            return answers
        for pid in rest:
            try:
                paper = await hf_by_id(fetcher, self.settings, pid)
            except SourceFailed as exc:
                answers.failure = exc
                return answers
            if paper is None:
                answers.unknown.append(pid)
            else:
                answers.found[pid] = paper
        return answers


def dated(paper: Paper) -> Paper:
    """The paper with a date: its source's, else the first day of its id's month (never
    the day it was looked up: that would make an old paper new)."""
    if published_ts(paper) is not None:
        return paper
    return msgspec.structs.replace(paper, published=id_month(paper.id))
