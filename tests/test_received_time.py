"""Each per-paper record keeps when the service received the event that made the reader
like the paper, beside the times the client gave (issue 25): the trainer's gate goes by
it, the feed and trending by the client's. Real Redis, real HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis
from bench.sizing import reader_bytes

from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.events import (
    RECORD_EPOCH,
    Event,
    decode_user_paper,
    footprint_bound,
    resolved_records,
)
from paperfeed.store import keys
from paperfeed.training.data import Interactions, read_interactions
from tests.conftest import admin_headers, make_settings, register
from tests.personas import event
from tests.test_footprint import PER_REQUEST, bounded, hostile

PAPERS = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(1, 11)]
DAYS = 86_400.0


@pytest.fixture
def catalog(http: httpx.Client) -> None:
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).status_code == 200


def send(http: httpx.Client, auth: dict[str, str], *events: dict[str, Any]) -> float:
    """Sends the events; returns a time just before the service received them."""
    before = time.time()
    response = http.post("/v1/events", json={"events": list(events)}, headers=auth)
    assert response.status_code == 200, response.text
    return before


def stored(r: redis.Redis, user_id: str, paper: str) -> list[int]:
    return list(msgspec.json.decode(str(r.hget(keys.user_papers(user_id), paper))))


def record(r: redis.Redis, user_id: str, paper: str) -> Any:
    return decode_user_paper(str(r.hget(keys.user_papers(user_id), paper)))


def test_a_live_event_keeps_the_record_as_it_was(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """An event sent as it happens is received within a second: nothing more is kept
    (the record is byte for byte what it was before the receive time existed)."""
    user_id, auth = register(http)
    received = send(http, auth, event("2411.00001", "view"), event("2411.00001", "save"))
    packed = stored(r, user_id, "2411.00001")
    assert len(packed) <= 10, packed  # ... st: no receive time stored
    kept = record(r, user_id, "2411.00001")
    assert kept.rt == kept.vt
    assert received - 1 <= kept.rt <= time.time()


def test_a_backdated_event_keeps_its_client_time_and_its_receive_time(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    ts = time.time() - 3 * DAYS
    received = send(
        http,
        auth,
        event("2411.00002", "view", ts=ts, dwell_ms=30_000),
        event("2411.00002", "upvote", ts=ts + 60),
    )
    kept = record(r, user_id, "2411.00002")
    # The client's times are kept for the feed, trending and the library ...
    assert kept.vt == pytest.approx(ts, abs=0.001)
    assert kept.ut == pytest.approx(ts + 60, abs=0.001)
    assert kept.t == pytest.approx(ts + 60, abs=0.001)
    # ... and the receive time of the first interest beside them (to the second).
    assert received - 1 <= kept.rt <= time.time()
    late = stored(r, user_id, "2411.00002")[11]
    assert late == pytest.approx(3 * DAYS, abs=5)
    # A later event does not move it: the paper was liked since then.
    send(http, auth, event("2411.00002", "save", ts=ts + 120))
    assert record(r, user_id, "2411.00002").rt == pytest.approx(kept.rt, abs=0.001)
    # An earlier action reported later (a view from another queue, a week back) moves
    # the first interest's client time, never the receive time.
    send(http, auth, event("2411.00002", "click", ts=ts - 4 * DAYS))
    moved = record(r, user_id, "2411.00002")
    assert moved.ct == pytest.approx(ts - 4 * DAYS, abs=0.001)
    assert moved.rt == pytest.approx(kept.rt, abs=1.001)
    # The reader's export names it.
    export = http.get("/v1/me/export", headers=auth).json()
    assert export["papers"]["2411.00002"]["liked_received_at"] == pytest.approx(moved.rt)
    assert export["papers"]["2411.00002"]["first_viewed_at"] == pytest.approx(ts, abs=0.001)


def test_the_receive_time_is_when_the_paper_became_liked(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """Impressions do not make a paper liked; a like taken back and given again, or a
    dismissal undone, is liked from when that arrived (the model trained in between
    did not count it)."""
    user_id, auth = register(http)
    old = time.time() - 10 * DAYS
    send(http, auth, event("2411.00003", "impression", ts=old))
    assert record(r, user_id, "2411.00003").rt is None
    assert len(stored(r, user_id, "2411.00003")) <= 5
    liked_at = send(http, auth, event("2411.00003", "upvote", ts=old + 1))
    assert liked_at - 1 <= record(r, user_id, "2411.00003").rt <= time.time()

    send(http, auth, event("2411.00004", "save", ts=old))
    first = record(r, user_id, "2411.00004").rt
    send(http, auth, event("2411.00004", "unsave", ts=old + 2))
    assert record(r, user_id, "2411.00004").rt is None
    again = send(http, auth, event("2411.00004", "save", ts=old + 3))
    assert again - 1 <= record(r, user_id, "2411.00004").rt <= time.time()
    assert record(r, user_id, "2411.00004").rt >= first

    send(http, auth, event("2411.00005", "view", ts=old), event("2411.00005", "dismiss", ts=old))
    assert record(r, user_id, "2411.00005").rt is None
    undone = send(http, auth, event("2411.00005", "undismiss", ts=old + 5))
    assert undone - 1 <= record(r, user_id, "2411.00005").rt <= time.time()


def test_records_kept_before_the_receive_time_read_as_they_did(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """Both earlier layouts (the 11-number array, the JSON object) decode unchanged, their
    receive time read as the first interest's time (what the gate went by); a new event
    on a paper already liked keeps it so."""
    user_id, auth = register(http)
    at = 1_765_000_000.25
    base = int(at * 1000) - RECORD_EPOCH * 1000
    r.hset(keys.user_papers(user_id), "2411.00006", f"[{base},2,1,0,0,0,500,-1,-1,0]")
    old_object = {"w": 6.0, "f": 2, "v": 0, "c": 0, "i": 1, "dw": 0.0, "t": at, "st": at}
    r.hset(keys.user_papers(user_id), "2411.00007", msgspec.json.encode(old_object).decode())
    packed = record(r, user_id, "2411.00006")
    assert (packed.f, packed.v, packed.st, packed.vt) == (2, 1, at, pytest.approx(at - 0.5))
    assert packed.rt == packed.vt
    assert record(r, user_id, "2411.00007").rt == at
    send(http, auth, event("2411.00006", "upvote"), event("2411.00007", "view"))
    assert record(r, user_id, "2411.00006").rt == pytest.approx(at - 0.5, abs=0.001)
    assert record(r, user_id, "2411.00007").rt == pytest.approx(at, abs=0.001)
    assert len(stored(r, user_id, "2411.00006")) <= 11


def test_backdated_maximum_size_events_stay_within_the_footprint_bound(
    http: httpx.Client, r: redis.Redis
) -> None:
    """The receive time makes a late record longer (up to a dozen digits): a hostile
    install sending maximum-size events dated 1970 (the latest possible) still keeps
    within ``footprint_bound``."""
    user_id, auth = register(http)
    settings = make_settings("redis://unused")
    for start in range(0, 2_400, PER_REQUEST):
        batch = bounded([hostile(n, "late") | {"ts": 0} for n in range(start, start + PER_REQUEST)])
        response = http.post("/v1/events", json={"events": batch}, headers=auth)
        assert response.status_code == 200, response.text
    assert r.hlen(keys.user_papers(user_id)) <= settings.user_papers_cap
    some = next(iter(r.hvals(keys.user_papers(user_id))))
    assert len(msgspec.json.decode(some)) == 12  # the receive time is kept
    used = reader_bytes(r, user_id, with_vector=True)
    assert used <= footprint_bound(settings), used


async def test_the_trainer_reads_both_times_and_its_cache_keeps_them(
    core: Core, r: redis.Redis, tmp_path: Path
) -> None:
    await core.catalog.upsert([Paper(id=p["id"], title=p["title"]) for p in PAPERS], time.time())
    received = time.time()
    ts = received - 5 * DAYS
    live, late = (await core.users.register()).user_id, (await core.users.register()).user_id
    await core.ingestor.ingest(
        live, [Event(**event("2411.00001", "save", ts=received - 0.5))], now=received
    )
    await core.ingestor.ingest(
        late,
        [Event(**event("2411.00001", "view", ts=ts)), Event(**event("2411.00002", "save", ts=ts))],
        now=received,
    )

    def times(data: Interactions) -> dict[tuple[str, str], tuple[float, float]]:
        first, arrived = data.first_at.tocoo(), data.received_at.tocoo()
        return {
            (data.user_ids[row], data.item_ids[col]): (float(f), float(a))
            for row, col, f, a in zip(first.row, first.col, first.data, arrived.data, strict=True)
        }

    read = times(await read_interactions(core.redis, cache_dir=tmp_path))
    assert read[(live, "2411.00001")] == pytest.approx((received - 0.5, received - 0.5), abs=0.01)
    for paper in ("2411.00001", "2411.00002"):
        first, arrived = read[(late, paper)]
        assert first == pytest.approx(ts, abs=0.01)
        assert received - 1 <= arrived <= received
    # Readers not active since come from the trainer's cache, with both times.
    r.zadd(keys.USERS, {live: received - 3_600, late: received - 3_600})
    assert times(await read_interactions(core.redis, cache_dir=tmp_path)) == read


async def test_two_records_of_a_merged_paper_keep_the_first_receive_time(
    core: Core, r: redis.Redis
) -> None:
    """A paper known by two ids (a demo slug merged into its arXiv id): the joined record
    is liked since the first of the two was received, read before the join (the library,
    the trainer) and after it (the reader's next event joins them)."""
    await core.catalog.upsert(
        [Paper(id="a-demo-slug", title="A paper"), Paper(id="2411.00009", title="A paper")],
        time.time(),
    )
    user = (await core.users.register()).user_id
    first = time.time() - 100
    await core.ingestor.ingest(
        user, [Event(**event("a-demo-slug", "upvote", ts=first - 3 * DAYS))], now=first
    )
    await core.ingestor.ingest(
        user, [Event(**event("2411.00009", "view", ts=first + 50))], now=first + 50
    )
    await core.catalog.identity.merge("a-demo-slug", "2411.00009", time.time())
    raw = r.hgetall(keys.user_papers(user))
    records = {pid: decode_user_paper(value) for pid, value in raw.items()}
    joined = resolved_records(records, {"a-demo-slug": "2411.00009"})["2411.00009"]
    assert joined.rt == pytest.approx(first, abs=1)
    assert joined.ut == pytest.approx(first - 3 * DAYS, abs=0.01)
    await core.ingestor.ingest(user, [Event(**event("2411.00009", "impression"))])
    assert r.hkeys(keys.user_papers(user)) == ["2411.00009"]
    stored_now = record(r, user, "2411.00009")
    assert stored_now.rt == pytest.approx(first, abs=1)
    assert (stored_now.upvoted, stored_now.v, stored_now.i) == (True, 1, 1)
