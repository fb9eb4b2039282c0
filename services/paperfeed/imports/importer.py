"""A reader's library file becomes their history: entries matched to catalog papers and
saved through the event ingest (``docs/import.md``).

1. The file is read (``imports.parse``, in a worker thread): at most ``MAX_ENTRIES``
   entries (more: ``TooManyEntries``, a 413), each with the line it starts on.
2. Each entry is matched: by its arXiv id (a paper merged into another is found by
   either id), else by its title normalised as the catalog's search does (its slug), a
   DOI counting through arXiv's own DOIs (``10.48550/arXiv.<id>``). An arXiv id the
   catalog lacks is kept for the reader like a page they opened: saved in their library
   and reported to the catalog's lookup (``catalog.lookup``; within their reports a
   day), so that a source, never the file, describes the paper.
3. Each paper is saved by a ``save`` event whose id is derived from the entry's own
   identity (its arXiv id, DOI or title): a file imported again is a batch of the same
   event ids, which the ingest counts once. Papers the reader has saved already are left
   as they are, and at most as many papers are saved as their records can keep without
   forgetting a paper they saved, upvoted, dismissed or shared (``user_papers_cap``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from typing import Final

import msgspec

from paperfeed.catalog.lookup import possible_arxiv_id
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import InvalidInput, PaperfeedError
from paperfeed.events import (
    DISMISSED,
    SAVED,
    SHARED,
    UPVOTED,
    Event,
    Ingestor,
    decode_user_paper,
    resolved_records,
)
from paperfeed.imports.parse import Entry, Format, Problem, parse
from paperfeed.recsys.search import title_key
from paperfeed.serving.feed import FeedService
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

MAX_BYTES: Final = 2 * 1024 * 1024
"""The largest file taken (2 MiB; larger: 413, refused before it is read)."""
MAX_ENTRIES: Final = 5_000
"""The most entries a file may hold (more: 413)."""
IMPORTS_PER_HOUR: Final = 20
"""Imports a reader may make an hour (reading a large file costs a second of CPU)."""
LISTED: Final = 100
"""Problems and waiting ids listed in an answer (the counts are complete)."""
SOURCE: Final = "import"
"""The ``source`` of imported events."""
KEPT_FLAGS = UPVOTED | SAVED | DISMISSED | SHARED
"""Records the ingest keeps past its cap before any other (``events.py``)."""


class TooManyEntries(PaperfeedError):
    """The file holds more than ``MAX_ENTRIES`` entries (a 413)."""


class TooManyImports(PaperfeedError):
    """More than ``IMPORTS_PER_HOUR`` imports this hour (a 429)."""


class LibraryImport(msgspec.Struct, kw_only=True):
    """What became of a file: each entry is counted once among ``matched``, ``waiting``
    and ``unmatched``; each paper they name once among ``saved``, ``unchanged`` and
    ``over_limit``."""

    format: Format
    """The format read (as given, or detected)."""
    entries: int
    """Entries read."""
    matched: int
    """Entries matched to a catalog paper (by arXiv id, DOI or title)."""
    waiting: int
    """Entries with an arXiv id the catalog lacks yet: saved in the reader's library and
    waiting for a source to describe the paper (``docs/import.md``)."""
    unmatched: int
    """Entries nothing matched (listed in ``problems``)."""
    unreadable: int
    """Entries or lines that could not be read (listed in ``problems``)."""
    saved: int
    """Papers saved now."""
    unchanged: int
    """Papers the reader had saved, or imported, already (a re-import changes nothing)."""
    over_limit: int = 0
    """Papers not saved: the reader's library holds as many papers as it can keep."""
    reported: int = 0
    """Of the waiting papers, those reported to the catalog's lookup now (at most the
    reader's reports a day, ``PAPERFEED_REPORTS_PER_DAY``)."""
    waiting_ids: list[str] = msgspec.field(default_factory=list)
    """The arXiv ids waiting (the first 100)."""
    problems: list[Problem] = msgspec.field(default_factory=list)
    """The entries and lines not read or not matched, by line (the first 100)."""


def decode_text(body: bytes) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped), else Latin-1 (never fails)."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def event_id(entry: Entry, title: str | None) -> str:
    """The save's event id, from the entry's identity: the same entry imported again is
    the same event (the ingest counts it once)."""
    if entry.arxiv:
        identity = f"arxiv:{entry.arxiv}"
    elif entry.doi:
        identity = f"doi:{entry.doi}"
    else:
        identity = f"title:{title}"
    return "import-" + hashlib.sha1(identity.encode()).hexdigest()[:32]


class Match(msgspec.Struct):
    entry: Entry
    paper_id: str
    waiting: bool


class LibraryImporter:
    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        catalog: Catalog,
        ingestor: Ingestor,
        feeds: FeedService,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.catalog = catalog
        self.ingestor = ingestor
        self.feeds = feeds
        self._count = redis.register_script(lua("rate_count"))

    async def spend(self, user_id: str) -> None:
        """One import of the reader's ``IMPORTS_PER_HOUR``."""
        count, _ = await self._count(keys=[keys.user_imports(user_id)], args=[3_600_000])
        if int(count) > IMPORTS_PER_HOUR:
            raise TooManyImports(f"at most {IMPORTS_PER_HOUR} imports an hour")

    async def run(
        self, user_id: str, body: bytes, fmt: Format | None, now: float | None = None
    ) -> LibraryImport:
        now = time.time() if now is None else now
        if not body:
            raise InvalidInput("body", "empty: send the file itself as the request body")
        # A file of which nothing could be read is answered like any other (entries 0,
        # its problems by line): what a file holds is never a refused request.
        parsed = await asyncio.to_thread(parse, decode_text(body), fmt)
        if len(parsed.entries) > MAX_ENTRIES:
            raise TooManyEntries(
                f"body: {len(parsed.entries)} entries; at most {MAX_ENTRIES} a file (split it)"
            )
        matches, unmatched = await self.match(parsed.entries, now) if parsed.entries else ([], [])
        result = LibraryImport(
            format=parsed.format,
            entries=len(parsed.entries),
            matched=sum(1 for m in matches if not m.waiting),
            waiting=sum(1 for m in matches if m.waiting),
            unmatched=len(unmatched),
            unreadable=len(parsed.problems),
            saved=0,
            unchanged=0,
        )
        waiting_ids = list(dict.fromkeys(m.paper_id for m in matches if m.waiting))
        result.waiting_ids = waiting_ids[:LISTED]
        result.problems = sorted([*parsed.problems, *unmatched], key=lambda p: p.line)[:LISTED]
        await self.save(user_id, matches, result, now)
        return result

    async def match(self, entries: list[Entry], now: float) -> tuple[list[Match], list[Problem]]:
        """Each entry's paper: its arXiv id when catalogued, else its title's; an arXiv id
        the catalog lacks waits for a source; the rest are problems saying why."""
        arxiv = [e.arxiv for e in entries if e.arxiv]
        resolved = dict(zip(arxiv, await self.catalog.identity.resolve(arxiv), strict=True))
        known = await self.catalog.known_ids(list(resolved.values()))
        version = await self.redis.get(keys.PAPERS_VERSION)
        index = await self.feeds.index(str(version) if version is not None else None)
        by_title = index.search.by_title
        matches: list[Match] = []
        problems: list[Problem] = []
        for entry in entries:
            paper_id = resolved.get(entry.arxiv or "")
            if paper_id not in known:
                paper_id = None
                key = title_key(entry.title) if entry.title else None
                # One word is too little to tell a paper by ("Introduction").
                if key and "-" in key and key in by_title:
                    paper_id = index.ids[by_title[key]]
            if paper_id is not None:
                matches.append(Match(entry, paper_id, waiting=False))
            elif entry.arxiv and possible_arxiv_id(entry.arxiv, now):
                matches.append(Match(entry, entry.arxiv, waiting=True))
            else:
                problems.append(Problem(line=entry.line, entry=entry.label, message=why(entry)))
        return matches, problems

    async def save(
        self, user_id: str, matches: list[Match], result: LibraryImport, now: float
    ) -> None:
        """Save events for the papers the reader has not saved yet, in batches the
        ingest takes, within what their records can keep."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.user_papers(user_id))
            pipe.hmget(keys.user_profile(user_id), ["reports_day", "reports"])
            raw_records, reports_before = await pipe.execute()
        records = resolved_records(
            {str(pid): decode_user_paper(raw) for pid, raw in raw_records.items()},
            await self.catalog.identity.aliases(),
        )
        room = math.floor(self.settings.user_papers_cap * 0.95) - sum(
            1 for r in records.values() if r.f & KEPT_FLAGS
        )
        events: list[Event] = []
        seen: set[str] = set()
        for m in matches:
            if m.paper_id in seen:
                continue
            seen.add(m.paper_id)
            record = records.get(m.paper_id)
            if record is not None and record.saved:
                result.unchanged += 1
                continue
            if record is None or not record.f & KEPT_FLAGS:
                if room <= 0:
                    result.over_limit += 1
                    continue
                room -= 1
            title = title_key(m.entry.title) if m.entry.title else None
            events.append(
                Event(
                    event_id=event_id(m.entry, title),
                    paper_id=m.paper_id,
                    type="save",
                    ts=now,
                    source=SOURCE,
                    # The reader's own hint for their library while the paper waits for
                    # a source (kept for them alone; never catalog text).
                    title=m.entry.title if m.waiting else None,
                )
            )
        step = self.settings.max_batch
        for start in range(0, len(events), step):
            ingested = await self.ingestor.ingest(user_id, events[start : start + step], now)
            result.saved += ingested.accepted
            result.unchanged += ingested.duplicates
        if result.waiting and events:
            after = await self.redis.hmget(keys.user_profile(user_id), ["reports_day", "reports"])
            result.reported = max(0, _reports(after, now) - _reports(reports_before, now))


def _reports(fields: list[bytes | str | None], now: float) -> int:
    """The reports a reader made today, from their profile's ``reports_day``, ``reports``."""
    day, count = fields
    return int(count or 0) if day is not None and int(day) == int(now // 86_400) else 0


def why(entry: Entry) -> str:
    """Why nothing matched the entry."""
    if entry.arxiv:
        return (
            f"{entry.arxiv} cannot be an arXiv id (no such month, or a number of the wrong "
            "length for its month)"
        )
    if entry.old_arxiv:
        return (
            f"arXiv {entry.old_arxiv} is a pre-2007 id: the catalog holds papers with new-style "
            "ids, and none has this entry's title"
        )
    if entry.doi:
        return f"no catalog paper has the DOI {entry.doi} or this entry's title"
    if entry.title:
        return "no arXiv id or DOI, and no catalog paper has this title"
    return "no arXiv id, DOI or title"
