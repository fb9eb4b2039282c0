"""What the catalog's sources share: their requests, their pacing, their failures and
backoff, and the bookkeeping in ``pf:sync:state``.

The bookkeeping is kept per *unit*, a thing that fails and is retried on its own:
``hf`` (Hugging Face daily papers), ``arxiv:<category>`` (one arXiv category),
``arxiv`` (the arXiv source as a whole: a summary of its categories, and the refusals
that concern every arXiv request), and ``reported`` (the lookup of the arXiv ids readers
reported, ``catalog.lookup``). Each unit's fields are ``<unit>:<field>``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import msgspec

from paperfeed import __version__
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

Source = Literal["hf", "arxiv"]
SOURCES: tuple[Source, ...] = ("hf", "arxiv")
Unit = Literal["hf", "arxiv", "reported"]
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
    """One unit's run: ``hf``, ``arxiv`` (all its categories) or ``reported``."""

    source: Unit
    ok: bool
    skipped: bool = False
    """Not tried: the source waits for its retry time."""
    fetched: int = 0
    """Papers the source listed (before identity merging); ``reported``: ids looked up."""
    new: int = 0
    updated: int = 0
    merged: int = 0
    """Papers known by their title's slug merged into their arXiv entry."""
    requests: int = 0
    error: str | None = None
    retry_at: float | None = None
    seconds: float = 0.0
    failed: dict[str, str] = msgspec.field(default_factory=dict)
    """``arxiv``: category -> why its run failed (the other categories were imported)."""
    dropped: int = 0
    """``reported``: ids that no source knows, dropped from the candidates."""


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
        found = await self._get(url, params, missing_ok=False)
        assert found is not None
        return found

    async def find(self, url: str) -> bytes | None:
        """The body, or None when the source answers 404 (it does not know the thing)."""
        return await self._get(url, {}, missing_ok=True)

    async def _get(self, url: str, params: dict[str, str | int], missing_ok: bool) -> bytes | None:
        self.requests += 1
        try:
            async with self.client.stream("GET", url, params=params) as response:
                if response.status_code == 404 and missing_ok:
                    return None
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


class Pacer:
    """At least ``delay_s`` between the starts of two requests to one source.

    A run begins from the previous request's start kept in ``pf:sync:state``
    (``arxiv:last_request_at``, unix time; ``at`` gives it back), so two runs in a row,
    or the category sync and the lookup of reported ids, keep the pace too."""

    def __init__(self, delay_s: float, last_at: float = 0.0) -> None:
        self.delay_s = delay_s
        self.last: float | None = None
        """The last request's start (``time.monotonic``)."""
        if last_at:
            self.last = time.monotonic() - max(0.0, time.time() - last_at)

    @property
    def at(self) -> float:
        """The last request's start as unix time (0: none)."""
        return time.time() - (time.monotonic() - self.last) if self.last is not None else 0.0

    async def wait(self) -> None:
        if self.last is not None:
            pause = self.last + self.delay_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        self.last = time.monotonic()


def backoff_s(failures: int, interval_s: float, retry_after: float | None) -> float:
    """The wait after ``failures`` failures in a row: ``RETRY_BASE_S`` doubling, at most
    the unit's interval; a ``Retry-After`` when it asks for longer (up to a day)."""
    backoff = min(max(interval_s, RETRY_BASE_S), RETRY_BASE_S * 2.0 ** min(failures - 1, 30))
    if retry_after is not None:
        backoff = max(backoff, min(retry_after, RETRY_AFTER_CAP_S))
    return backoff


async def read_state(redis: RedisClient) -> dict[str, str]:
    """``pf:sync:state``: ``<unit>:<field>`` -> value (the worker and /metrics read it)."""
    raw = await redis.hgetall(keys.SYNC_STATE)
    return {str(k): str(v) for k, v in raw.items()}


async def write_state(
    redis: RedisClient, unit: str, fields: dict[str, float | str], counters: dict[str, int]
) -> None:
    """Set ``unit``'s ``fields`` and add to its ``counters`` (``added_total``, ...)."""
    async with redis.pipeline(transaction=False) as pipe:
        if fields:
            pipe.hset(keys.SYNC_STATE, mapping={f"{unit}:{k}": v for k, v in fields.items()})
        for name, add in counters.items():
            pipe.hincrby(keys.SYNC_STATE, f"{unit}:{name}", add)
        await pipe.execute()


async def record_success(
    redis: RedisClient, unit: str, now: float, new: int, counters: dict[str, int] | None = None
) -> None:
    fields: dict[str, float | str] = {
        "last_success": now,
        "last_attempt": now,
        "failures": 0,
        "retry_at": 0,
        "last_error": "",
        "last_new": new,
    }
    await write_state(redis, unit, fields, {"added_total": new, **(counters or {})})


async def record_failure(
    redis: RedisClient, unit: str, exc: SourceFailed, now: float, interval_s: float
) -> float:
    """Count the failure, set the unit's retry time (returned) and its last error."""
    failures = int(await redis.hincrby(keys.SYNC_STATE, f"{unit}:failures", 1))
    retry_at = now + backoff_s(failures, interval_s, exc.retry_after_s)
    fields: dict[str, float | str] = {
        "last_attempt": now,
        "retry_at": retry_at,
        "last_error": exc.reason[:500],
    }
    await write_state(redis, unit, fields, {"failures_total": 1})
    return retry_at


def unit_due(state: dict[str, str], unit: str, now: float, interval_s: float) -> bool:
    """Its last success is ``interval_s`` old (or it never ran) and its retry time came."""
    last = float(state.get(f"{unit}:last_success") or 0)
    retry_at = float(state.get(f"{unit}:retry_at") or 0)
    return now >= retry_at and now - last >= interval_s
