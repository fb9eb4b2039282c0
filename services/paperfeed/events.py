"""Interaction events: their shape, their weights, and atomic idempotent ingest.

A user's events are applied by one Lua script on the user's hash slot: each
``event_id`` is remembered (``dedupe_days``), so a replayed batch counts nothing twice.
The script keeps one record a paper for the user (``UserPaper``) and returns the
trending contributions of what changed; those are then added to the global windows.
See ``docs/events.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paperfeed.catalog.papers import PAPER_ID_PATTERN, normalize_paper_id
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import InvalidInput, Unauthorized
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua, run_replicated
from paperfeed.trending import Contribution, Trending

EventType = Literal[
    "impression", "view", "read", "click", "upvote", "unvote", "save", "unsave", "share",
    "dismiss", "undismiss",
]  # fmt: skip
"""``read``: more reading time (``dwell_ms``) of a visit whose ``view`` was already sent
(the page reports its view at a checkpoint, then the rest when it is hidden)."""

# Confidence an interaction adds to the user x paper cell the recommender learns from.
# Views and clicks count up to REPEAT_CAP times; dwell adds a point a minute, up to 3.
CONFIDENCE = {"view": 1.0, "click": 2.0, "upvote": 4.0, "save": 6.0, "share": 3.0}
REPEAT_CAP = 3
DWELL_PER_POINT_MS = 60_000
DWELL_CAP = 3.0
# Weight one user's interaction adds to a paper's trending score: once per user and
# paper (a second view adds nothing); unvote/unsave take back exactly what was added.
TRENDING = {"view": 1.0, "click": 2.0, "upvote": 4.0, "save": 3.0, "share": 3.0}

# Flags of ``UserPaper.f``.
UPVOTED, SAVED, DISMISSED, SHARED = 1, 2, 4, 8

EventId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PaperIdField = Annotated[str, Meta(min_length=1, max_length=128, pattern=PAPER_ID_PATTERN)]


class Event(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One interaction, as the extension sends it."""

    event_id: EventId
    """Client-generated, unique per install (a UUID); replays with the same id count once."""
    paper_id: PaperIdField
    """arXiv id (with or without version) or a catalog id."""
    type: EventType
    ts: Annotated[float, Meta(ge=0)]
    """When it happened, unix seconds (fractions allowed)."""
    dwell_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 0
    """``view``: time the page was visible; ``read``: visible time since the last report."""
    source: Annotated[str, Meta(max_length=32, pattern=r"^[a-z0-9_-]*$")] | None = None
    """Where it happened: ``popup``, ``arxiv``, ``huggingface``, ..."""
    title: Annotated[str, Meta(max_length=1_000)] | None = None
    """Paper metadata the client read from the page (used for unknown papers)."""
    abstract: Annotated[str, Meta(max_length=20_000)] | None = None
    url: Annotated[str, Meta(max_length=2_000)] | None = None


class EventBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Event]


class IngestResult(msgspec.Struct):
    accepted: int
    """Events applied now."""
    duplicates: int
    """Events whose ``event_id`` was seen before (already applied; safe to drop)."""
    unknown_papers: int = 0
    """Accepted events about papers not in the catalog (kept; see docs/events.md)."""
    admitted_papers: list[str] = msgspec.field(default_factory=list)
    """Unknown papers that this batch admitted into the catalog."""


class UserPaper(msgspec.Struct, kw_only=True):
    """What one user did with one paper (the record the ingest script maintains)."""

    w: float = 0.0
    """Confidence (see CONFIDENCE)."""
    f: int = 0
    """Flags: UPVOTED | SAVED | DISMISSED | SHARED."""
    v: int = 0
    c: int = 0
    i: int = 0
    """Views, clicks, impressions."""
    dw: float = 0.0
    t: float = 0.0
    """Last event time."""
    vt: float | None = None
    ct: float | None = None
    ut: float | None = None
    st: float | None = None
    sh: float | None = None
    """Times of the first view, first click, upvote, save and share (for undo/erasure)."""

    @property
    def dismissed(self) -> bool:
        return bool(self.f & DISMISSED)

    @property
    def saved(self) -> bool:
        return bool(self.f & SAVED)

    @property
    def upvoted(self) -> bool:
        return bool(self.f & UPVOTED)

    @property
    def opened(self) -> bool:
        return self.v > 0 or self.c > 0

    def trending_contributions(self, paper_id: str) -> list[Contribution]:
        """The trending weight this record holds (what erasure takes back)."""
        held = [
            (self.vt, TRENDING["view"]),
            (self.ct, TRENDING["click"]),
            (self.ut, TRENDING["upvote"]),
            (self.st, TRENDING["save"]),
            (self.sh, TRENDING["share"]),
        ]
        return [Contribution(paper_id, weight, at) for at, weight in held if at is not None]


decode_user_paper = msgspec.json.Decoder(UserPaper).decode


def _lua_table(values: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k} = {v!r}" for k, v in values.items()) + "}"


def ingest_script() -> str:
    return (
        lua("ingest")
        .replace("__CONFIDENCE__", _lua_table(CONFIDENCE))
        .replace("__TRENDING__", _lua_table(TRENDING))
        .replace("__REPEAT_CAP__", str(REPEAT_CAP))
        .replace("__DWELL_PER_POINT_MS__", str(DWELL_PER_POINT_MS))
        .replace("__DWELL_CAP__", str(DWELL_CAP))
    )


class Ingestor:
    def __init__(
        self, redis: RedisClient, settings: Settings, catalog: Catalog, trending: Trending
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog
        self.trending = trending
        self._ingest = redis.register_script(ingest_script())

    def validate(self, events: Sequence[Event]) -> None:
        # A timestamp later than the receive time (a client clock ahead) is read as the
        # receive time; refusing it would lose the whole batch to one wrong clock.
        if len(events) > self.settings.max_batch:
            raise InvalidInput("events", f"at most {self.settings.max_batch} events a batch")

    async def ingest(
        self, user_id: str, events: Sequence[Event], now: float | None = None
    ) -> IngestResult:
        now = time.time() if now is None else now
        self.validate(events)
        if not events:
            return IngestResult(accepted=0, duplicates=0)
        args: list[str | float | int] = [
            now,
            now - self.settings.dedupe_days * 86_400,
            self.settings.dedupe_cap,
            self.settings.event_log_cap,
            self.settings.user_papers_cap,
        ]
        # A paper merged into another (a demo slug into its arXiv id) is recorded as it.
        paper_ids = await self.catalog.resolve([normalize_paper_id(e.paper_id) for e in events])
        for event, paper_id in zip(events, paper_ids, strict=True):
            raw = msgspec.structs.asdict(event)
            raw = {k: v for k, v in raw.items() if v is not None}
            raw["paper_id"] = paper_id
            raw["received"] = now
            args.extend(
                (
                    event.event_id,
                    paper_id,
                    event.type,
                    min(event.ts, now),
                    event.dwell_ms,
                    json.dumps(raw, separators=(",", ":")),
                )
            )
        accepted, duplicates, flat, touched = await run_replicated(
            self.redis,
            self._ingest,
            keys=[
                keys.user_dedupe(user_id),
                keys.user_papers(user_id),
                keys.user_touched(user_id),
                keys.user_log(user_id),
                keys.user_profile(user_id),
            ],
            args=args,
            replicas=self.settings.redis_wait_replicas,
            timeout_ms=self.settings.redis_wait_timeout_ms,
        )
        if int(accepted) < 0:
            raise Unauthorized("unknown or revoked token")  # erased meanwhile
        contributions = [
            Contribution(flat[i], float(flat[i + 1]), float(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]
        touched_ids = list(dict.fromkeys(touched))
        # One round trip for the rest: which papers the catalog knows, the reader's
        # activity, and the trending windows.
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in touched_ids:
                pipe.hexists(keys.PAPERS, pid)
            if accepted:
                pipe.zadd(keys.USERS, {user_id: now}, xx=True)
                pipe.zrem(keys.SILENT_INSTALLS, user_id)
                pipe.hincrby(keys.STATS, "events", int(accepted))
            self.trending.queue_add(pipe, contributions, now)
            replies = await pipe.execute()
        known = replies[: len(touched_ids)]
        unknown = [pid for pid, exists in zip(touched_ids, known, strict=True) if not exists]
        admitted = await self._report_unknown(user_id, unknown, events, paper_ids, now)
        unknown_set = set(unknown)
        unknown_events = sum(1 for pid in touched if pid in unknown_set)
        return IngestResult(
            accepted=int(accepted),
            duplicates=int(duplicates),
            unknown_papers=unknown_events,
            admitted_papers=admitted,
        )

    async def _report_unknown(
        self,
        user_id: str,
        unknown: list[str],
        events: Sequence[Event],
        paper_ids: Sequence[str],
        now: float,
    ) -> list[str]:
        if not unknown:
            return []
        metadata: dict[str, Event] = {}
        for event, pid in zip(events, paper_ids, strict=True):
            if pid in unknown and (pid not in metadata or event.title):
                metadata[pid] = event
        admitted = []
        for pid in unknown:
            event = metadata[pid]
            paper = await self.catalog.report(user_id, pid, event.title, event.abstract, now)
            if paper is not None:
                admitted.append(paper.id)
        return admitted
