"""What the two commonest requests cost in round trips to Redis, counted on the api's
own redis-py connections (a wrapper that counts, around the real client): a cached feed
is one command (its install's budget, the reader's event count and cached ranking, the
catalog and model versions, in one script; on a cluster, where the versions live in other
slots, they are read beside it in the same pipeline), an event batch about
catalogued papers two (the ingest script spending the budget, then the writes shared
with every batch arriving meanwhile). Past the budget both are a 429 naming it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import redis
from redis.asyncio.connection import AbstractConnection

from paperfeed.store import keys
from tests.conftest import (
    admin_headers,
    inside_one_budget_window,
    live_server,
    make_settings,
    register,
)
from tests.test_events import PAPERS, event


@contextlib.contextmanager
def round_trips() -> Iterator[list[bytes]]:
    """The commands the api sends while the block runs, one entry a round trip (the
    first command of a pipeline names it); the 5-second store-metrics read is left out."""
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes) else b"".join(command)
        if b"\r\nINFO\r\n" not in packed[:40]:
            sent.append(packed)
        await original(self, command, check_health)

    with mock.patch.object(AbstractConnection, "send_packed_command", counting):
        yield sent


def test_a_cached_feed_is_one_round_trip_and_an_event_two(redis_url: str, r: redis.Redis) -> None:
    # No model poll during the test: only the requests talk to Redis.
    settings = make_settings(redis_url, model_poll_s=3_600.0, trending_snapshot_s=3_600.0)
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        user_id, auth = register(http)
        assert http.post("/v1/events", json={"events": [event("2411.00001")]}, headers=auth)
        assert http.get("/v1/feed", headers=auth).status_code == 200  # ranked and kept
        with round_trips() as sent:
            cached = http.get("/v1/feed", headers=auth)
        assert cached.status_code == 200
        assert len(sent) == 1, [s[:80] for s in sent]
        assert sent[0].count(b"EVAL") == 1
        # One command: the script reads the versions too (no GET beside it).
        assert sent[0].startswith(b"*")
        assert sent[0].count(b"\r\nGET\r\n") == 0
        assert keys.MODEL_CURRENT.encode() in sent[0]
        assert keys.PAPERS_VERSION.encode() in sent[0]
        # (Steady state: the catalog's alias map, read again after the catalog changed
        # and every 30 s, was read by this first event.)
        assert http.post("/v1/events", json={"events": [event("2411.00003")]}, headers=auth)
        with round_trips() as sent:
            accepted = http.post(
                "/v1/events", json={"events": [event("2411.00002", "upvote")]}, headers=auth
            )
        assert accepted.json()["accepted"] == 1
        assert len(sent) == 2, [s[:80] for s in sent]
        # The budget was spent by those scripts: in the reader's own hash.
        budget = r.hgetall(keys.user_budget(user_id))
        assert sum(int(v) for k, v in budget.items() if k != "w") >= 4


def test_past_its_budget_a_feed_and_an_event_are_429s_that_say_so(
    redis_url: str, r: redis.Redis
) -> None:
    settings = make_settings(redis_url, rate_limit_per_minute=6)
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        user_id, auth = register(http)
        _, other = register(http)
        inside_one_budget_window(r)
        statuses = [http.get("/v1/feed", headers=auth).status_code for _ in range(4)]
        statuses += [
            http.post(
                "/v1/events", json={"events": [event("2411.00003")]}, headers=auth
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [200] * 4 + [200, 200, 429]
        refused = http.get("/v1/feed", headers=auth)
        assert refused.status_code == 429
        assert refused.json()["detail"] == "rate limit reached: at most 6 requests a minute"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["ratelimit-limit"] == "6"
        # Nothing of the refused batch was applied; another install of its own budget.
        assert r.hget(keys.user_profile(user_id), "events") == "2"
        assert http.get("/v1/feed", headers=other).status_code == 200


def test_refused_bodies_spend_the_budget_too(redis_url: str, r: redis.Redis) -> None:
    """A batch refused before the script that would spend its budget (a malformed body)
    spends it all the same: past it, the install is refused without being read."""
    settings = make_settings(redis_url, rate_limit_per_minute=5)
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        user_id, auth = register(http)
        bad = {**auth, "Content-Type": "application/json"}
        inside_one_budget_window(r)

        def spent() -> int:
            budget = r.hgetall(keys.user_budget(user_id))
            return max((int(v) for k, v in budget.items() if k != "w"), default=0)

        statuses = [http.post("/v1/events", content=b"{nope", headers=bad).status_code
                    for _ in range(6)]  # fmt: skip
        assert statuses == [400] * 6
        # Spent once each answer was sent: wait for the sixth to be counted.
        deadline = time.monotonic() + 10
        while spent() < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spent() == 6
        assert http.post("/v1/events", content=b"{nope", headers=bad).status_code == 429
        assert http.get("/v1/feed", headers=auth).status_code == 429


def test_the_feed_after_an_event_reads_the_reader_in_its_first_round_trip(
    redis_url: str, r: redis.Redis
) -> None:
    """A feed ranked after the reader's event (and one re-sorted after an impression)
    gets what ranking reads (records, vector, candidates, follows) from its first
    script, then keeps the result: two round trips, no second read of the reader."""
    settings = make_settings(redis_url, model_poll_s=3_600.0, trending_snapshot_s=3_600.0)
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        user_id, auth = register(http)
        assert http.post("/v1/events", json={"events": [event("2411.00001")]}, headers=auth)
        first = http.get("/v1/feed", headers=auth).json()  # ranked and kept; warms caches
        assert first["items"]
        for kind, paper in (("upvote", "2411.00002"), ("impression", "2411.00003")):
            done = http.post(
                "/v1/events", json={"events": [event(paper, kind)]}, headers=auth
            ).json()
            assert done["accepted"] == 1
            with round_trips() as sent:
                again = http.get("/v1/feed", headers=auth)
            assert again.status_code == 200
            assert [item["paper"]["id"] for item in again.json()["items"]]
            assert len(sent) == 2, (kind, [s[:80] for s in sent])
            assert b"HGETALL" not in sent[1], kind  # the second is the keeping script
        # What was kept is current: the next feed is a hit of one round trip.
        with round_trips() as sent:
            assert http.get("/v1/feed", headers=auth).status_code == 200
        assert len(sent) == 1
        assert r.exists(keys.user_candidates(user_id))


def test_the_feed_script_sends_the_reader_only_when_their_feed_is_behind(
    r: redis.Redis,
) -> None:
    """``feed_read.lua`` reads the cached feed's event count at the end of its JSON
    (``CachedFeed.events``, kept last): a current feed, of any length, comes alone (six
    values); a feed ranked before the reader's last event, or none, comes with what
    ranking them reads (ten)."""
    from paperfeed.serving.feed import CachedFeed, encode_cached
    from paperfeed.store.scripts import lua

    script = lua("reader_budget") + lua("feed_read")
    user_id = "u-script"
    names = [keys.user_budget(user_id), keys.user_profile(user_id), keys.user_feed(user_id),
             keys.user_papers(user_id), keys.user_vector(user_id),
             keys.user_candidates(user_id), keys.user_follows(user_id),
             keys.user_installs(user_id)]  # fmt: skip
    r.hset(keys.user_profile(user_id), mapping={"events": 12, "impressions": 3})
    r.hset(keys.user_papers(user_id), "2411.00001", "record")

    def read() -> list[Any]:
        return list(r.eval(script, len(names), *names, "install", 60_000, 0, ""))

    assert len(read()) == 10  # no cached feed
    for depth in (1, 50, 400):
        ids = [f"2411.{n:05d}" for n in range(depth)]
        feed = CachedFeed("m|c|1|9", "m", ids, [0.5] * depth, [["why"]] * depth, depth, 12)
        encoded = encode_cached(feed)
        assert encoded.endswith(b",12]"), encoded[-20:]
        r.set(keys.user_feed(user_id), encoded)
        assert len(read()) == 6, depth
        r.hincrby(keys.user_profile(user_id), "events", 1)
        behind = read()
        assert len(behind) == 10, depth
        assert behind[6] == ["2411.00001", "record"]
        r.hincrby(keys.user_profile(user_id), "events", -1)
    # On one server the versions come after the six (eight), before the reader (twelve).
    r.set(keys.PAPERS_VERSION, "c7")
    names += [keys.PAPERS_VERSION, keys.MODEL_CURRENT]
    current = read()
    assert len(current) == 8
    assert current[6:] == ["c7", None]
    r.hincrby(keys.user_profile(user_id), "events", 1)
    behind = read()
    assert len(behind) == 12
    assert behind[6:9] == ["c7", None, ["2411.00001", "record"]]
