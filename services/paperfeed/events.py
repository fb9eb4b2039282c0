"""Interaction events: their shape, their weights, and atomic idempotent ingest.

A reader's events are applied by one Lua script on the reader's hash slot. What is kept
is compact and bounded whatever a client sends (see ``docs/events.md``):

- one record a paper (``UserPaper``), a short JSON array of numbers, at most
  ``user_papers_cap`` of them (past it, the records with no upvote, save, dismissal or
  share go first, oldest first);
- the event ids seen, as 12-hex-digit hashes (the newest ``dedupe_cap``), so a replayed
  batch counts nothing twice;
- a log of the accepted events as short lines (type, time, dwell, where, paper), the
  newest within ``event_log_bytes``;
- the page title of a paper the catalog lacks (a hint for the reader's own library,
  never catalog text), at most ``page_titles_cap`` of them.

No other client-sent text is kept. The script returns the trending contributions of what
changed; those are then added to the global windows.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import Meta

from paperfeed.catalog.papers import PAPER_ID_PATTERN, arxiv_id, clean_text, normalize_paper_id
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import InvalidInput, Unauthorized, described
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.activity import queue_active
from paperfeed.store.budgets import OverBudget, ReaderBudget
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

# Flags of ``UserPaper.f``. UNCREDITED: the catalog lacked the paper when the reader
# first met it, so the reader's actions on it earn (and take back) no trending weight.
UPVOTED, SAVED, DISMISSED, SHARED, UNCREDITED = 1, 2, 4, 8, 16

# One letter a type in the log (stable: stored).
TYPE_CODES: dict[str, str] = {
    "impression": "i", "view": "v", "read": "r", "click": "c", "upvote": "u", "unvote": "U",
    "save": "s", "unsave": "S", "share": "h", "dismiss": "d", "undismiss": "D",
}  # fmt: skip
TYPE_OF_CODE = {code: kind for kind, code in TYPE_CODES.items()}
# Where an event happened, as the extension says it; anything else is kept as "other".
SOURCE_CODES: dict[str, str] = {"popup": "p", "arxiv": "a", "huggingface": "h", "other": "o"}
SOURCE_OF_CODE = {code: source for source, code in SOURCE_CODES.items()}
RECORD_EPOCH = 1_700_000_000
"""Records count milliseconds, the log seconds, from here (November 2023): shorter numbers."""
PAGE_TITLE_MAX = 200
"""Characters of a page title kept as a hint (cleaned, cut)."""

EventId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=described(r"^[A-Za-z0-9_.:-]+$", "letters, digits and _ . : - (a UUID will do)"),
    ),
]
Source = Annotated[
    str,
    Meta(max_length=32, pattern=described(r"^[a-z0-9_-]*$", "lowercase letters, digits, _ and -")),
]
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
    source: Source | None = None
    """Where it happened: ``popup``, ``arxiv``, ``huggingface``, ..."""
    title: Annotated[str, Meta(max_length=1_000)] | None = None
    """The title the page showed: a hint kept (cut to 200 characters) only for a paper
    the catalog lacks, shown in this reader's own library until a source describes the
    paper. Never catalog text."""
    abstract: Annotated[str, Meta(max_length=20_000)] | None = None
    """Accepted for older extensions; ignored (never kept)."""
    url: Annotated[str, Meta(max_length=2_000)] | None = None
    """Accepted for older extensions; ignored (never kept)."""


class EventBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Event]


class IngestResult(msgspec.Struct):
    accepted: int
    """Events applied now."""
    duplicates: int
    """Events whose ``event_id`` was seen before (already applied; safe to drop)."""
    unknown_papers: int = 0
    """Accepted events about papers not in the catalog (kept; see docs/events.md)."""


def confidence(f: Any, v: Any, c: Any, dw: Any) -> Any:
    """How much the recommender counts a record (numbers or numpy arrays alike); the
    ingest script computes the same (its tables are generated from these constants)."""
    return (
        np.minimum(v, REPEAT_CAP) * CONFIDENCE["view"]
        + np.minimum(c, REPEAT_CAP) * CONFIDENCE["click"]
        + (np.bitwise_and(f, UPVOTED) > 0) * CONFIDENCE["upvote"]
        + (np.bitwise_and(f, SAVED) > 0) * CONFIDENCE["save"]
        + (np.bitwise_and(f, SHARED) > 0) * CONFIDENCE["share"]
        + np.minimum(np.asarray(dw) / DWELL_PER_POINT_MS, DWELL_CAP)
    )


class UserPaper(msgspec.Struct, kw_only=True):
    """What one user did with one paper (the record the ingest script maintains)."""

    w: float = 0.0
    """Confidence (see CONFIDENCE), computed from the rest."""
    f: int = 0
    """Flags: UPVOTED | SAVED | DISMISSED | SHARED | UNCREDITED."""
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
    rt: float | None = None
    """When the service received the event that made the reader like the paper (the
    time the trainer's gate goes by, whatever the client said; to the second). None for
    a paper not liked; a record kept before this was recorded reads its first interest's
    time (``first_at``)."""

    @property
    def first_at(self) -> float:
        """The first interest's time as the client gave it: the earliest of the first
        view, first click, upvote, save and share, else the last event's."""
        times = [x for x in (self.vt, self.ct, self.ut, self.st, self.sh) if x is not None]
        return min(times) if times else self.t

    @property
    def liked(self) -> bool:
        """The recommender counts the paper for the reader (a weight above 0)."""
        return self.w > 0 and not self.dismissed

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
        if self.f & UNCREDITED:
            return []
        held = [
            (self.vt, TRENDING["view"]),
            (self.ct, TRENDING["click"]),
            (self.ut, TRENDING["upvote"]),
            (self.st, TRENDING["save"]),
            (self.sh, TRENDING["share"]),
        ]
        return [Contribution(paper_id, weight, at) for at, weight in held if at is not None]


def join_records(a: UserPaper, b: UserPaper) -> UserPaper:
    """One paper's two records (one kept under an id since merged into it), as the ingest
    script joins them: flags and counts add up, each action keeps its first time."""

    def first(x: float | None, y: float | None) -> float | None:
        return y if x is None else x if y is None else min(x, y)

    joined = UserPaper(
        f=(a.f | b.f) & ~UNCREDITED | (a.f & b.f & UNCREDITED),
        v=a.v + b.v,
        c=a.c + b.c,
        i=a.i + b.i,
        dw=a.dw + b.dw,
        t=max(a.t, b.t),
        vt=first(a.vt, b.vt),
        ct=first(a.ct, b.ct),
        ut=first(a.ut, b.ut),
        st=first(a.st, b.st),
        sh=first(a.sh, b.sh),
    )
    joined.w = float(confidence(joined.f, joined.v, joined.c, joined.dw))
    # Liked since the first of the two was (a record not liked has no receive time).
    received = first(a.rt if a.liked else None, b.rt if b.liked else None)
    joined.rt = (received if received is not None else joined.first_at) if joined.liked else None
    return joined


def resolved_records(
    records: dict[str, UserPaper], aliases: dict[str, str]
) -> dict[str, UserPaper]:
    """A reader's records by the id each paper has now: a record kept under an id since
    merged into another joins that paper's (the ingest script does the same on the
    reader's next event about it)."""
    if not aliases:
        return records
    resolved: dict[str, UserPaper] = {}
    for pid, record in records.items():
        now_id = aliases.get(pid, pid)
        held = resolved.get(now_id)
        resolved[now_id] = record if held is None else join_records(held, record)
    return resolved


class PackedRecord(msgspec.Struct, array_like=True):
    """A record as stored: ``[t, f, v, c, i, dw, vt, ct, ut, st, sh, rl]``, ``t`` in
    milliseconds from ``RECORD_EPOCH``, the five times as milliseconds before ``t`` (-1:
    none), trailing defaults left out.

    ``rl`` (0 when left out, as in every record kept before it existed): whole seconds
    (rounded down) from the first interest's time (the earliest of the five, else ``t``)
    to the time the service received the event that made the reader like the paper. A
    client reporting as it goes is late by less than a second and stores nothing; an
    offline queue or an imported history (``ts`` days back) stores how late it was."""

    t: int
    f: int = 0
    v: int = 0
    c: int = 0
    i: int = 0
    dw: int = 0
    vt: int = -1
    ct: int = -1
    ut: int = -1
    st: int = -1
    sh: int = -1
    rl: int = 0


RECORD_FIELDS = ("t", "f", "v", "c", "i", "dw", "vt", "ct", "ut", "st", "sh", "rl")
"""The columns of ``record_table`` (``rl`` in seconds, the times in unix seconds)."""
_decode_packed = msgspec.json.Decoder(PackedRecord).decode
_decode_packed_many = msgspec.json.Decoder(list[PackedRecord]).decode
_decode_legacy = msgspec.json.Decoder(UserPaper).decode
_decode_legacy_many = msgspec.json.Decoder(list[UserPaper]).decode


def decode_user_paper(raw: str | bytes) -> UserPaper:
    """A stored record (the packed array, or the JSON object of the earlier layout)."""
    if raw[:1] in ("{", b"{"):
        record = _decode_legacy(raw)
    else:
        p = _decode_packed(raw)
        t = p.t + RECORD_EPOCH * 1000

        def at(before: int) -> float | None:
            return (t - before) / 1000 if before >= 0 else None

        record = UserPaper(
            f=p.f, v=p.v, c=p.c, i=p.i, dw=float(p.dw), t=t / 1000,
            vt=at(p.vt), ct=at(p.ct), ut=at(p.ut), st=at(p.st), sh=at(p.sh),
        )  # fmt: skip
        record.rt = record.first_at + p.rl
    record.w = float(confidence(record.f, record.v, record.c, record.dw))
    if not record.liked:
        record.rt = None
    elif record.rt is None:
        record.rt = record.first_at
    return record


def record_table(raws: Sequence[str]) -> npt.NDArray[np.float64]:
    """Records as rows of ``RECORD_FIELDS`` (times absolute, ``inf`` for none), decoded
    in one pass a layout (training reads millions; a feed, a reader's few dozen: one
    decoder call each way, not one a record)."""
    n = len(raws)
    legacy = [at for at, raw in enumerate(raws) if raw[:1] == "{"]
    packed = [at for at, raw in enumerate(raws) if raw[:1] != "{"] if len(legacy) < n else []
    table = np.zeros((n, len(RECORD_FIELDS)), dtype=np.float64)
    if packed:
        cells = _decode_packed_many("[" + ",".join([raws[at] for at in packed]) + "]")
        rows = [msgspec.structs.astuple(c) for c in cells]  # PackedRecord's: RECORD_FIELDS
        block = np.array(rows, dtype=np.float64).reshape(-1, len(RECORD_FIELDS))
        block[:, 0] += RECORD_EPOCH * 1000
        times = block[:, 6:11]
        block[:, 6:11] = np.where(times >= 0, (block[:, :1] - times) / 1000, math.inf)
        block[:, 0] /= 1000
        table[packed] = block
    if legacy:
        inf = math.inf
        records = _decode_legacy_many("[" + ",".join([raws[at] for at in legacy]) + "]")
        rows = [
            (
                r.t, r.f, r.v, r.c, r.i, r.dw,
                inf if r.vt is None else r.vt, inf if r.ct is None else r.ct,
                inf if r.ut is None else r.ut, inf if r.st is None else r.st,
                inf if r.sh is None else r.sh, 0.0,
            )
            for r in records
        ]  # fmt: skip
        table[legacy] = np.array(rows, dtype=np.float64).reshape(-1, len(RECORD_FIELDS))
    return table


def _lua_table(values: dict[str, Any]) -> str:
    return "{" + ", ".join(f"[{k!r}] = {v!r}" for k, v in values.items()) + "}"


OVER_BUDGET = -2
"""What the ingest script answers past the install's request budget."""


def ingest_script() -> str:
    return lua("reader_budget") + (
        lua("ingest")
        .replace("__CONFIDENCE__", _lua_table(CONFIDENCE))
        .replace("__TRENDING__", _lua_table(TRENDING))
        .replace("__REPEAT_CAP__", str(REPEAT_CAP))
        .replace("__DWELL_PER_POINT_MS__", str(DWELL_PER_POINT_MS))
        .replace("__DWELL_CAP__", str(DWELL_CAP))
        .replace("__TYPE_CODES__", _lua_table(TYPE_CODES))
        .replace("__SOURCE_CODES__", _lua_table(SOURCE_CODES))
        .replace("__RECORD_EPOCH__", str(RECORD_EPOCH))
    )


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    if n < 0:
        return "-" + base36(-n)
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _DIGITS[digit] + out
        if n == 0:
            return out


def log_line(kind: str, at: int, dwell_ms: int, source: str | None, paper_id: str) -> str:
    """One event in the reader's log, ``<type letter><time>,<dwell ms>,<where>,<paper>``:
    the time in base 36 seconds from ``RECORD_EPOCH``, the dwell in base 36 (empty: 0),
    where as a letter of ``SOURCE_CODES`` (empty: not said)."""
    where = "" if source is None else SOURCE_CODES.get(source, "o")
    dwell = base36(dwell_ms) if dwell_ms else ""
    return f"{TYPE_CODES[kind]}{base36(at - RECORD_EPOCH)},{dwell},{where},{paper_id}\n"


class LoggedEvent(msgspec.Struct, omit_defaults=True):
    """An event as the reader's log keeps it (the export lists these)."""

    type: str
    paper_id: str
    ts: float
    dwell_ms: int = 0
    source: str | None = None


def parse_log(raw: str | None) -> list[LoggedEvent]:
    """The log's events, newest first."""
    events = []
    for line in reversed((raw or "").splitlines()):
        parts = line[1:].split(",", 3)
        if len(parts) != 4 or line[:1] not in TYPE_OF_CODE:
            continue
        at, dwell, where, paper_id = parts
        events.append(
            LoggedEvent(
                type=TYPE_OF_CODE[line[0]],
                paper_id=paper_id,
                ts=float(int(at, 36) + RECORD_EPOCH),
                dwell_ms=int(dwell or "0", 36),
                source=SOURCE_OF_CODE.get(where) if where else None,
            )
        )
    return events


ID_HASH_BYTES = 8


def event_id_hash(event_id: str) -> bytes:
    """How a reader's ``seen`` key remembers an event id (as the ingest script hashes it:
    the first 8 bytes of its SHA-1; read the key with a client that does not decode)."""
    return hashlib.sha1(event_id.encode()).digest()[:ID_HASH_BYTES]


def seen_hashes(raw: bytes | None) -> list[bytes]:
    """The event id hashes a reader's ``seen`` key holds, oldest first."""
    raw = raw or b""
    return [raw[n : n + ID_HASH_BYTES] for n in range(0, len(raw), ID_HASH_BYTES)]


def footprint_bound(settings: Settings) -> int:
    """The most bytes of Redis one install's keys can take, whatever it sends: each cap
    at its worst (128-character paper ids, 200-character titles of 4-byte characters,
    allocator rounding), with Redis's per-entry overhead. Measured figures are in
    docs/benchmarks.md (``bench.sizing``)."""
    record = 128 + 64 + 80  # paper id, record, hash entry
    title = 128 + PAGE_TITLE_MAX * 4 + 80
    return (
        settings.user_papers_cap * record
        + settings.page_titles_cap * title
        + settings.event_log_bytes * 5 // 4
        + settings.dedupe_cap * ID_HASH_BYTES * 5 // 4
        + 4_096  # profile, token, request budget, small keys
        + CANDIDATE_TABLE_BYTES
        + FOLLOWS_BYTES
    )


FOLLOWS_BYTES = 100 * (2 + 16 + 200 * 4 + 80)
"""The most a reader's follows take (``paperfeed.follows``: ``FOLLOWS_CAP`` fields of a
hashed name or a topic id, each a name of up to 200 characters of 4 bytes)."""
CANDIDATE_TABLE_BYTES = 30_720
"""The most a reader's cached feed's candidate table takes (``serving.feed.Table``: 21
bytes a candidate, at most 1,400 candidates (trending 400, the newest 200, by vector,
text and item-kNN 600, the follows' 200), with the key; a test holds the feed to it)."""


def reader_keys(user_id: str) -> list[str]:
    """The keys of the ingest script, in its order."""
    return [
        keys.user_seen(user_id),
        keys.user_papers(user_id),
        keys.user_events(user_id),
        keys.user_profile(user_id),
        keys.user_page_titles(user_id),
        keys.legacy_user_dedupe(user_id),
        keys.legacy_user_touched(user_id),
        keys.legacy_user_log(user_id),
        keys.user_budget(user_id),
        keys.user_installs(user_id),
    ]


class AfterIngest:
    """The writes that follow a batch's ingest outside the reader's keys (their activity
    in the readers' index, the service's event count, the trending windows), committed
    for every batch that arrives meanwhile together: one pipeline in flight at a time,
    the next one filling while it is; each request waits for the pipeline its writes are
    in (nothing is answered before it is stored). Under load, one round trip and one
    trending script a window serve many requests instead of one each."""

    def __init__(self, redis: RedisClient, trending: Trending) -> None:
        self.redis = redis
        self.trending = trending
        self._batch: list[tuple[str, int, list[Contribution], float]] = []
        self._done: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(
        self, user_id: str, accepted: int, contributions: list[Contribution], now: float
    ) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test's): nothing of the last one
            self._loop, self._lock, self._batch, self._done = loop, asyncio.Lock(), [], None
        if self._done is None:
            self._done = loop.create_future()
            task = asyncio.create_task(self._commit())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._batch.append((user_id, accepted, contributions, now))
        await asyncio.shield(self._done)

    async def _commit(self) -> None:
        async with self._lock:
            batch, done = self._batch, self._done
            self._batch, self._done = [], None
            assert done is not None
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    active = {user_id: at for user_id, accepted, _, at in batch if accepted}
                    if active:
                        queue_active(pipe, active)
                        pipe.hincrby(keys.STATS, "events", sum(entry[1] for entry in batch))
                    contributions = [c for entry in batch for c in entry[2]]
                    if contributions:
                        now = max(entry[3] for entry in batch)
                        self.trending.queue_add(pipe, contributions, now)
                    await pipe.execute()
            except BaseException as exc:  # a cancelled commit fails its waiters too
                done.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
                done.exception()  # retrieved here too: every waiter may have gone
                if not isinstance(exc, Exception):
                    raise
            else:
                done.set_result(None)


class Ingestor:
    def __init__(
        self, redis: RedisClient, settings: Settings, catalog: Catalog, trending: Trending
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog
        self.trending = trending
        self._ingest = redis.register_script(ingest_script())
        self._after = AfterIngest(redis, trending)

    def validate(self, events: Sequence[Event]) -> None:
        # A timestamp later than the receive time (a client clock ahead) is read as the
        # receive time; refusing it would lose the whole batch to one wrong clock.
        if len(events) > self.settings.max_batch:
            raise InvalidInput("events", f"at most {self.settings.max_batch} events a batch")

    async def ingest(
        self,
        user_id: str,
        events: Sequence[Event],
        now: float | None = None,
        budget: ReaderBudget | None = None,
    ) -> IngestResult:
        """Apply ``events`` for the reader; ``budget``: their install's request budget,
        spent by the same script (``OverBudget`` past it: nothing applied)."""
        now = time.time() if now is None else now
        self.validate(events)
        if not events:
            return IngestResult(accepted=0, duplicates=0)
        # A paper merged into another (a demo slug into its arXiv id) is recorded as it.
        paper_ids = await self.catalog.identity.resolve(
            [normalize_paper_id(e.paper_id) for e in events]
        )
        known = await self.catalog.known_ids(paper_ids)
        merged_into = await self.catalog.identity.merged_into()
        args: list[str | float | int] = [
            now,
            self.settings.dedupe_cap,
            self.settings.event_log_bytes,
            self.settings.user_papers_cap,
            self.settings.page_titles_cap,
            self.settings.reports_per_day,
            budget.install if budget else "",
            budget.window_ms if budget else 60_000,
            budget.limit if budget else 0,
            budget.verify if budget else "",
        ]
        for event, paper_id in zip(events, paper_ids, strict=True):
            at_ms = int(min(event.ts, now) * 1000)
            is_known = paper_id in known
            title = ""
            if not is_known and event.title:
                title = clean_text(event.title, PAGE_TITLE_MAX)
            args.extend(
                (
                    event.event_id,
                    paper_id,
                    event.type,
                    at_ms,
                    event.dwell_ms,
                    int(is_known),
                    title,
                    log_line(event.type, at_ms // 1000, event.dwell_ms, event.source, paper_id),
                    " ".join(merged_into.get(paper_id, ())),
                )
            )
        accepted, duplicates, flat, touched, first_met = await run_replicated(
            self.redis,
            self._ingest,
            keys=reader_keys(user_id),
            args=args,
            replicas=self.settings.redis_wait_replicas,
            timeout_ms=self.settings.redis_wait_timeout_ms,
        )
        if int(accepted) == OVER_BUDGET:
            assert budget is not None
            raise OverBudget(budget, int(flat))  # (the script's third value: ms left)
        if int(accepted) < 0:
            raise Unauthorized("unknown or revoked token")  # erased meanwhile
        contributions = [
            Contribution(flat[i], float(flat[i + 1]), float(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]
        if accepted or contributions:
            await self._after.write(user_id, int(accepted), contributions, now)
        await self._report_unknown(user_id, first_met, now)
        return IngestResult(
            accepted=int(accepted),
            duplicates=int(duplicates),
            unknown_papers=sum(1 for pid in touched if pid not in known),
        )

    async def _report_unknown(self, user_id: str, first_met: list[str], now: float) -> None:
        """Papers the catalog lacks, met for the first time (at most ``reports_per_day``
        a reader): arXiv ids go to the catalog's candidates for a source to confirm (the
        reader's page text is never the catalog's)."""
        for pid in first_met:
            if arxiv_id(pid) == pid:
                await self.catalog.reports.report(user_id, pid, now)
