"""Event ingest through the real api: idempotent, atomic, concurrent, strict."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import pytest
import redis

from paperfeed.events import decode_user_paper
from paperfeed.store import keys
from tests.conftest import LiveServer, admin_headers, register
from tests.personas import event

pytestmark = pytest.mark.cluster

PAPERS = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(1, 21)]


@pytest.fixture
def catalog(http: httpx.Client) -> None:
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).status_code == 200


def trending_scores(http: httpx.Client, window: str = "day") -> dict[str, float]:
    items = http.get("/v1/trending", params={"window": window, "limit": 200}).json()["items"]
    return {item["paper"]["id"]: item["score"] for item in items}


def user_paper(r: redis.Redis, user_id: str, paper_id: str) -> dict[str, Any]:
    raw = r.hget(f"pf:{{u:{user_id}}}:papers", paper_id)
    assert raw is not None
    return msgspec.structs.asdict(decode_user_paper(str(raw)))


def logged(r: redis.Redis, user_id: str) -> list[str]:
    """The lines of the reader's compact event log."""
    return str(r.get(f"pf:{{u:{user_id}}}:events") or "").splitlines()


def test_replayed_batch_counts_nothing_twice(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    batch = [event("2411.00001", "view"), event("2411.00001", "upvote"), event("2411.00002")]
    first = http.post("/v1/events", json={"events": batch}, headers=auth)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 3
    assert first.json()["duplicates"] == 0

    # Trending's stored weights (decay is applied when read, so compare what is stored).
    def stored_trending() -> dict[str, float]:
        return {
            w: dict(r.zrange(keys.trend_scores(w), 0, -1, withscores=True))
            for w in ("day", "week", "month")
        }

    before = stored_trending()
    assert before["day"]["2411.00001"] > 0
    again = http.post("/v1/events", json={"events": batch}, headers=auth)
    assert again.json()["accepted"] == 0
    assert again.json()["duplicates"] == 3
    assert stored_trending() == before
    record = user_paper(r, user_id, "2411.00001")
    assert record["v"] == 1
    assert record["w"] == 5.0  # a view (1) and an upvote (4)
    assert len(logged(r, user_id)) == 3
    export = http.get("/v1/me/export", headers=auth).json()
    assert export["events_total"] == 3


def test_duplicate_ids_inside_one_batch_count_once(http: httpx.Client, catalog: None) -> None:
    _, auth = register(http)
    one = event("2411.00003", "save")
    response = http.post("/v1/events", json={"events": [one, one]}, headers=auth)
    assert response.json() == {"accepted": 1, "duplicates": 1, "unknown_papers": 0}


def test_trending_follows_weights_and_undo_takes_back_exactly(
    http: httpx.Client, catalog: None
) -> None:
    _, auth = register(http)
    http.post("/v1/events", json={"events": [event("2411.00004", "upvote")]}, headers=auth)
    assert trending_scores(http)["2411.00004"] == pytest.approx(4.0, rel=1e-3)
    http.post("/v1/events", json={"events": [event("2411.00004", "view")]}, headers=auth)
    assert trending_scores(http)["2411.00004"] == pytest.approx(5.0, rel=1e-3)
    # A second view by the same reader adds nothing to trending.
    http.post("/v1/events", json={"events": [event("2411.00004", "view")]}, headers=auth)
    assert trending_scores(http)["2411.00004"] == pytest.approx(5.0, rel=1e-3)
    http.post("/v1/events", json={"events": [event("2411.00004", "unvote")]}, headers=auth)
    assert trending_scores(http)["2411.00004"] == pytest.approx(1.0, rel=1e-3)
    # Undoing what was never done changes nothing.
    http.post("/v1/events", json={"events": [event("2411.00004", "unsave")]}, headers=auth)
    assert trending_scores(http)["2411.00004"] == pytest.approx(1.0, rel=1e-3)


def test_events_after_redis_lost_its_scripts_credit_trending_exactly_once(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """The trending windows are written in the ingest's one pipeline: a Redis that lost
    its scripts (a restart, a failover, SCRIPT FLUSH) still credits each window once,
    neither skipped nor twice."""
    _, auth = register(http)
    r.script_flush()
    http.post("/v1/events", json={"events": [event("2411.00005", "upvote")]}, headers=auth)
    stored = {w: r.zscore(keys.trend_scores(w), "2411.00005") for w in ("day", "week", "month")}
    assert all(score is not None and score > 0 for score in stored.values()), stored
    assert trending_scores(http)["2411.00005"] == pytest.approx(4.0, rel=1e-3)
    assert trending_scores(http, "month")["2411.00005"] == pytest.approx(4.0, rel=1e-3)
    r.script_flush()
    http.post("/v1/events", json={"events": [event("2411.00005", "view")]}, headers=auth)
    assert trending_scores(http)["2411.00005"] == pytest.approx(5.0, rel=1e-3)
    assert trending_scores(http, "week")["2411.00005"] == pytest.approx(5.0, rel=1e-3)


async def test_concurrent_ingest_from_many_clients_loses_and_doubles_nothing(
    server: LiveServer, catalog: None, r: redis.Redis
) -> None:
    clients, batches, per_batch = 20, 5, 10
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        installs = await asyncio.gather(*(http.post("/v1/installs") for _ in range(clients)))
        tokens = [i.json()["token"] for i in installs]
        users = [i.json()["user_id"] for i in installs]

        async def send(token: str, batch: list[dict[str, Any]]) -> dict[str, int]:
            response = await http.post(
                "/v1/events",
                json={"events": batch},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        plan = []
        for token in tokens:
            for b in range(batches):
                batch = [
                    event(PAPERS[(b * per_batch + k) % len(PAPERS)]["id"], "click")
                    for k in range(per_batch)
                ]
                plan.append((token, batch))
        # Every batch twice, interleaved: the replays race the originals.
        results = await asyncio.gather(*(send(t, b) for t, b in plan + plan[::-1]))
    assert sum(x["accepted"] for x in results) == clients * batches * per_batch
    assert sum(x["duplicates"] for x in results) == clients * batches * per_batch
    assert int(r.hget("pf:stats", "events") or 0) == clients * batches * per_batch
    for user_id in users:
        assert len(logged(r, user_id)) == batches * per_batch
    # Each of the 20 users clicked every paper at least once: 2 points each, once.
    scores = trending_scores(httpx.Client(base_url=server.url))
    assert all(scores[p["id"]] == pytest.approx(2.0 * clients, rel=1e-3) for p in PAPERS)


BAD_EVENTS = [
    ({"paper_id": "2411.00001", "type": "view", "ts": 1}, "events[0]`event_id"),
    ({"event_id": "e", "paper_id": "bad id", "type": "view", "ts": 1}, "events[0].paper_id"),
    ({"event_id": "e", "paper_id": "2411.00001", "type": "like", "ts": 1}, "events[0].type"),
    ({"event_id": "e", "paper_id": "2411.00001", "type": "view", "ts": "now"}, "events[0].ts"),
    ({"event_id": "e", "paper_id": "2411.00001", "type": "view", "ts": -5}, "events[0].ts"),
    (
        {"event_id": "e", "paper_id": "2411.00001", "type": "view", "ts": 1, "dwell_ms": -1},
        "events[0].dwell_ms",
    ),
    ({"event_id": "e", "paper_id": "2411.00001", "type": "view", "ts": 1, "x": 1}, "events[0]`x"),
    ({"event_id": "e" * 65, "paper_id": "2411.00001", "type": "view", "ts": 1}, "event_id"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_EVENTS)
def test_a_bad_event_is_a_400_naming_event_and_field(
    http: httpx.Client, bad: dict[str, Any], field: str, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    response = http.post("/v1/events", json={"events": [bad]}, headers=auth)
    assert response.status_code == 400, response.text
    # "a`b": the answer names both the event (a) and the field (b).
    for part in field.split("`"):
        assert part in response.text
    # Nothing of a refused batch was applied.
    assert logged(r, user_id) == []


def test_a_clock_ahead_is_read_as_the_receive_time(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """One wrong clock must not lose the batch: the time is clamped, the event kept."""
    import time

    user_id, auth = register(http)
    before = time.time()
    batch = [event("2411.00001", ts=4e10), event("2411.00002", ts=1.0)]
    response = http.post("/v1/events", json={"events": batch}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    assert user_paper(r, user_id, "2411.00001")["t"] <= time.time()
    assert user_paper(r, user_id, "2411.00001")["t"] >= before - 0.001  # milliseconds
    events = http.get("/v1/me/export", headers=auth).json()["events"]
    assert {e["paper_id"]: e["ts"] for e in events} == {  # the log keeps whole seconds
        "2411.00001": int(user_paper(r, user_id, "2411.00001")["t"]),
        "2411.00002": 1.0,
    }


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"events": {}}', b'{"events": [1]}', b'{"evts": []}', b"\xff"],
)
def test_malformed_bodies_are_4xx_never_5xx(http: httpx.Client, body: bytes) -> None:
    _, auth = register(http)
    response = http.post(
        "/v1/events", content=body, headers={**auth, "Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text


def test_an_empty_body_says_a_body_with_events_is_required(http: httpx.Client) -> None:
    _, auth = register(http)
    response = http.post(
        "/v1/events", content=b"", headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["detail"].startswith("body: a JSON body is required")
    assert '"events"' in answer["detail"]
    assert answer["extra"][0]["key"] == "body"
    # A body without events names the field.
    response = http.post("/v1/events", json={}, headers=auth)
    assert response.status_code == 400
    assert "events" in response.json()["extra"][0]["message"]


def test_batch_limit_and_body_limit(http: httpx.Client) -> None:
    _, auth = register(http)
    too_many = [event("2411.00001") for _ in range(501)]
    response = http.post("/v1/events", json={"events": too_many}, headers=auth)
    assert response.status_code == 400
    assert "at most 500" in response.text
    huge = [event("2411.00001", abstract="x" * 19_000) for _ in range(60)]
    response = http.post("/v1/events", json={"events": huge}, headers=auth)
    assert response.status_code == 413


def test_tokens_reach_their_own_user_only(http: httpx.Client, catalog: None) -> None:
    alice, alice_auth = register(http)
    bob, bob_auth = register(http)
    http.post("/v1/events", json={"events": [event("2411.00005", "save")]}, headers=alice_auth)
    bob_export = http.get("/v1/me/export", headers=bob_auth).json()
    assert bob_export["user_id"] == bob
    assert bob_export["papers"] == {}
    assert http.get("/v1/me/export", headers=alice_auth).json()["user_id"] == alice
    for headers in [{}, {"Authorization": "Bearer pf_forged"}, {"Authorization": alice}]:
        assert http.get("/v1/me/export", headers=headers).status_code == 401
        assert http.post("/v1/events", json={"events": []}, headers=headers).status_code == 401
        assert http.delete("/v1/me", headers=headers).status_code == 401
    # The admin token is not a user token.
    assert http.get("/v1/me/export", headers=admin_headers()).status_code == 401


def test_unknown_arxiv_paper_is_kept_and_reported_but_never_admitted_by_readers(
    http: httpx.Client, r: redis.Redis
) -> None:
    """Readers' events make an unknown arXiv id a candidate for the worker's lookup at
    the sources, never a catalog paper, and what their pages said is not kept there
    (the lookup: tests/test_sync.py; docs/catalog.md)."""
    readers = [register(http) for _ in range(3)]
    (first_id, first), others = readers[0], readers[1:]
    seen = event(
        "2411.99999v2",
        "view",
        title="  A  brand new\npaper ",
        abstract="Found on arXiv.",
        url="javascript:alert(1)",
    )
    response = http.post("/v1/events", json={"events": [seen]}, headers=first)
    assert response.json()["unknown_papers"] == 1
    assert http.get("/v1/papers/2411.99999").status_code == 404
    assert user_paper(r, first_id, "2411.99999")["v"] == 1
    # The same reader again does not count as a second reader.
    http.post("/v1/events", json={"events": [event("2411.99999", "click")]}, headers=first)
    assert r.zscore(keys.CANDIDATE_SCORE, "2411.99999") == 1
    for _, auth in others:
        http.post("/v1/events", json={"events": [seen]}, headers=auth)
    assert r.zscore(keys.CANDIDATE_SCORE, "2411.99999") == 3
    assert r.smembers(keys.candidate_reporters("2411.99999")) == {uid for uid, _ in readers}
    assert r.hlen(keys.CANDIDATE_PAPERS) == 0  # no paper text from a client
    assert http.get("/v1/papers/2411.99999").status_code == 404
    assert http.get("/v1/papers", params={"limit": 100}).json()["items"] == []
    assert r.hlen(keys.PAPERS) == 0


def test_unknown_non_arxiv_paper_is_kept_but_never_catalogued(http: httpx.Client) -> None:
    for _ in range(3):
        _, auth = register(http)
        response = http.post(
            "/v1/events", json={"events": [event("some-blog-post", title="Ad")]}, headers=auth
        )
        assert response.json()["accepted"] == 1
    assert http.get("/v1/papers/some-blog-post").status_code == 404


def test_the_library_follows_save_unsave_upvote_dismiss_and_undismiss(
    http: httpx.Client, catalog: None
) -> None:
    _, auth = register(http)

    def library(kind: str, **params: Any) -> dict[str, Any]:
        response = http.get("/v1/me/library", params={"kind": kind, **params}, headers=auth)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def ids(kind: str) -> list[str]:
        return [item["paper"]["id"] for item in library(kind)["items"]]

    def send(*events: dict[str, Any]) -> None:
        response = http.post("/v1/events", json={"events": list(events)}, headers=auth)
        assert response.status_code == 200, response.text

    now = time.time()
    send(
        event("2411.00001", "save", ts=now - 30),
        event("2411.00002", "save", ts=now - 20),
        event("2411.00003", "upvote", ts=now - 10),
        event("2411.00004", "view", ts=now - 5, dwell_ms=5000),
        event("2411.00005", "dismiss", ts=now - 1),
    )
    assert ids("saved") == ["2411.00002", "2411.00001"]  # newest first
    assert ids("upvoted") == ["2411.00003"]
    assert ids("read") == ["2411.00004"]
    assert ids("dismissed") == ["2411.00005"]
    first = library("saved")["items"][0]
    assert first["paper"]["title"]
    assert first["at"] == pytest.approx(now - 20, abs=1)
    send(event("2411.00002", "unsave"), event("2411.00005", "undismiss"))
    assert ids("saved") == ["2411.00001"]  # at once
    assert ids("dismissed") == []
    # Pages: a cursor continues the list.
    # Times a second or more apart: the records keep whole seconds (a tie is ordered by id).
    send(*(event(f"2411.000{n:02d}", "save", ts=now - 25 + n) for n in range(10, 15)))
    page = library("saved", limit=2)
    assert page["total"] == 6
    whole = ids("saved")
    rest = library("saved", limit=10, cursor=page["next"])
    assert [i["paper"]["id"] for i in page["items"] + rest["items"]] == whole
    assert rest["next"] is None
    # The list changing between pages neither skips nor repeats a paper: the cursor
    # names the last paper shown, not a position.
    send(event(whole[0], "unsave"))  # one fewer before the cursor
    rest = library("saved", limit=10, cursor=page["next"])
    assert [i["paper"]["id"] for i in rest["items"]] == whole[2:]
    send(event("2411.00016", "save", ts=now + 100), event("2411.00017", "save", ts=now + 101))
    # (a clock ahead reads as the receive time: newer than every save above)
    rest = library("saved", limit=10, cursor=page["next"])
    assert [i["paper"]["id"] for i in rest["items"]] == whole[2:]
    for cursor in ("abc", "!!", "1" * 401):
        bad_page = http.get(
            "/v1/me/library", params={"kind": "saved", "cursor": cursor}, headers=auth
        )
        assert bad_page.status_code == 400, (cursor, bad_page.text)
        assert "cursor" in bad_page.text
    # Bad input names the parameter; no token, no library.
    bad = http.get("/v1/me/library", params={"kind": "liked"}, headers=auth)
    assert bad.status_code == 400
    assert "kind" in bad.text
    assert http.get("/v1/me/library").status_code == 401


def test_a_long_library_is_read_in_the_thread_pool_and_still_in_order(
    http: httpx.Client, catalog: None
) -> None:
    """Over 200 records the library is decoded off the event loop: same answer."""
    _, auth = register(http)
    now = time.time()
    events = [event(f"2411.9{n:04d}", "save", ts=now - n) for n in range(250)]
    for start in range(0, 250, 100):
        batch = {"events": events[start : start + 100]}
        assert http.post("/v1/events", json=batch, headers=auth).status_code == 200
    page = http.get("/v1/me/library", params={"kind": "saved", "limit": 5}, headers=auth).json()
    assert page["total"] == 250
    assert [item["paper"]["id"] for item in page["items"]] == [f"2411.9{n:04d}" for n in range(5)]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({}, "events"),
        ({"events": [{"event_id": "e", "type": "view", "ts": 1}]}, "events[0].paper_id"),
        ({"events": [{"event_id": "e", "paper_id": "2411.00001", "type": "view"}]}, "events[0].ts"),
    ],
)
def test_a_missing_field_is_named_by_its_own_path(
    http: httpx.Client, body: dict[str, Any], key: str
) -> None:
    _, auth = register(http)
    response = http.post("/v1/events", json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert [item["key"] for item in response.json()["extra"]] == [key]
