"""The reader's library: the papers they saved, upvoted, read or dismissed, newest first.

Read from the reader's per-paper records (``pf:{u:<id>}:papers``), which every event
keeps current: an ``unsave`` takes a paper out of ``saved`` at once, an ``undismiss``
out of ``dismissed``. When: the save's and the upvote's own times, the first view or
click for ``read``, the last event for ``dismissed`` (records keep no time of their own
for it).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec

from paperfeed.catalog.papers import Paper, arxiv_links
from paperfeed.catalog.repository import Catalog
from paperfeed.errors import PAGE_NEXT, InvalidInput, described
from paperfeed.events import UserPaper, decode_user_paper, resolved_records
from paperfeed.paper_state import NO_STATE, PaperState, states_of
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

LibraryKind = Literal["saved", "upvoted", "read", "dismissed"]
INLINE_RECORDS = 200
"""Records decoded and sorted on the event loop at most (a long history, up to
``user_papers_cap``, takes milliseconds: the thread pool's work)."""


class LibraryItem(msgspec.Struct):
    paper: Paper
    at: float
    """When the paper became part of this list (unix seconds)."""
    state: PaperState = NO_STATE
    """The caller's whole state of the paper (a saved paper may be upvoted too)."""


class LibraryPage(msgspec.Struct):
    kind: LibraryKind
    items: list[LibraryItem]
    total: int
    """Papers of this kind in all."""
    next: str | None = None
    """Cursor of the next page (None: this is the last). It names the last paper of
    this page, so the next page starts right after it even when papers joined or left
    the list meanwhile (an unsave on this page skips nothing, a new save repeats
    nothing)."""


CURSOR_PATTERN = described(
    r"^[0-9]{1,12}(\.[0-9]{1,17})?~[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", PAGE_NEXT
)
"""``<when>~<paper id>``: every string of this shape is a place in the list (a
schema-valid cursor is never refused)."""


def encode_cursor(at: float, paper_id: str) -> str:
    return f"{at!r}~{paper_id}"  # repr: the float comes back exactly


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The api's pattern checked the shape; a cursor from elsewhere is refused here."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidInput("cursor", "not a cursor returned by this api")
    at, _, paper_id = cursor.partition("~")
    return float(at), paper_id


def when(record: UserPaper, kind: LibraryKind) -> float | None:
    """When ``record``'s paper joined ``kind``, or None when it is not of that kind."""
    if kind == "saved":
        return (record.st or record.t) if record.saved else None
    if kind == "upvoted":
        return (record.ut or record.t) if record.upvoted else None
    if kind == "dismissed":
        return record.t if record.dismissed else None
    if record.opened:
        return min(t for t in (record.vt, record.ct, record.t) if t is not None)
    return None


def listed_of(
    raw: dict[Any, Any], kind: LibraryKind, aliases: dict[str, str] | None = None
) -> list[tuple[str, float]]:
    """``entries`` of the records as read from Redis, each paper under the id it has now
    (a record kept under an id since merged joins that paper's: listed once)."""
    records = {str(pid): decode_user_paper(value) for pid, value in raw.items()}
    return entries(resolved_records(records, aliases or {}), kind)


def entries(records: dict[str, UserPaper], kind: LibraryKind) -> list[tuple[str, float]]:
    """(paper id, when) of ``kind``, newest first (ties by id)."""
    found = [(pid, at) for pid, record in records.items() if (at := when(record, kind))]
    found.sort(key=lambda entry: (-entry[1], entry[0]))
    return found


def unlisted_paper(paper_id: str, page_title: str | None) -> Paper:
    """A paper only this reader has met: the title their page showed (or its id), and
    for an arXiv id the links built from the id."""
    abs_url, pdf_url = arxiv_links(paper_id)
    return Paper(id=paper_id, title=page_title or paper_id, url=abs_url, pdf_url=pdf_url)


async def library(
    redis: RedisClient,
    catalog: Catalog,
    user_id: str,
    kind: LibraryKind,
    limit: int,
    cursor: str | None = None,
    offload: Callable[..., Awaitable[Any]] | None = None,
) -> LibraryPage:
    after = decode_cursor(cursor) if cursor else None
    raw = await redis.hgetall(keys.user_papers(user_id))
    aliases = await catalog.identity.aliases()
    if offload is not None and len(raw) > INLINE_RECORDS:
        listed: list[tuple[str, float]] = await offload(listed_of, raw, kind, aliases)
    else:
        listed = listed_of(raw, kind, aliases)
    start = 0
    if after is not None:
        start = bisect_right([(-at, pid) for pid, at in listed], (-after[0], after[1]))
    page = listed[start : start + limit]
    # Papers merged since (a demo slug, now its arXiv id) are shown as they are now.
    resolved = await catalog.identity.resolve([pid for pid, _ in page])
    papers = await catalog.get_many(resolved)
    missing = [pid for pid in resolved if pid not in papers]
    if missing:
        # A paper the catalog does not have (yet): as the reader's page showed it.
        titles = await redis.hmget(keys.user_page_titles(user_id), missing)
        for pid, title in zip(missing, titles, strict=True):
            papers[pid] = unlisted_paper(pid, str(title) if title else None)
    merged_into = await catalog.identity.merged_into()
    states = states_of(raw, resolved, {pid: merged_into.get(pid, []) for pid in resolved})
    items = [
        LibraryItem(paper=papers[pid], at=at, state=states[pid])
        for pid, (_, at) in zip(resolved, page, strict=True)
    ]
    more = start + limit < len(listed)
    return LibraryPage(
        kind=kind,
        items=items,
        total=len(listed),
        next=encode_cursor(page[-1][1], page[-1][0]) if more and page else None,
    )
