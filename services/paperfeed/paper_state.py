"""A reader's own state of each paper (upvoted, saved, dismissed, read), for the answers
that list papers: trending, search and the library carry it, so that a client shows the
reader's upvotes and saves pressed wherever a paper appears, and undo is one click.

Read from the reader's per-paper records (``pf:{u:<id>}:papers``, which every event keeps
current) with one ``HMGET`` of the listed papers and of the ids merged into them (a
record kept under an id since merged counts for the paper it became, as in the library).

The personal feed carries no state: it never lists a paper the reader opened, upvoted,
saved, shared or dismissed (``Reader.hidden``, left out of ``serving.feed.candidates``),
and a cached feed is ranked again after each of the reader's events, so every feed
paper's state would be "none".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from paperfeed.catalog.repository import Catalog
from paperfeed.events import UserPaper, decode_user_paper, join_records
from paperfeed.store import keys
from paperfeed.store.client import RedisClient


class PaperState(msgspec.Struct, frozen=True):
    """What the caller did with the paper (all false: nothing yet, or only shown)."""

    upvoted: bool = False
    saved: bool = False
    dismissed: bool = False
    read: bool = False
    """Opened: a page view or a click."""


NO_STATE = PaperState()


def state_of(record: UserPaper | None) -> PaperState:
    if record is None:
        return NO_STATE
    return PaperState(
        upvoted=record.upvoted,
        saved=record.saved,
        dismissed=record.dismissed,
        read=record.opened,
    )


def states_of(
    raw: Mapping[Any, Any], paper_ids: Sequence[str], merged: Mapping[str, Sequence[str]]
) -> dict[str, PaperState]:
    """Each paper's state from the reader's stored records ``raw`` (id -> packed record;
    ids missing or None: no record), joining the records kept under ids merged into it."""
    found: dict[str, PaperState] = {}
    for pid in paper_ids:
        record: UserPaper | None = None
        for held_id in (pid, *merged.get(pid, ())):
            value = raw.get(held_id)
            if value is None:
                continue
            held = decode_user_paper(value)
            record = held if record is None else join_records(record, held)
        found[pid] = state_of(record)
    return found


async def paper_states(
    redis: RedisClient, catalog: Catalog, user_id: str, paper_ids: Sequence[str]
) -> dict[str, PaperState]:
    """The reader's state of each of ``paper_ids`` (one ``HMGET``)."""
    if not paper_ids:
        return {}
    merged_into = await catalog.identity.merged_into()
    merged = {pid: merged_into.get(pid, []) for pid in paper_ids}
    wanted = list(dict.fromkeys([*paper_ids, *(old for olds in merged.values() for old in olds)]))
    values = await redis.hmget(keys.user_papers(user_id), wanted)
    raw = {pid: value for pid, value in zip(wanted, values, strict=True) if value is not None}
    return states_of(raw, paper_ids, merged)
