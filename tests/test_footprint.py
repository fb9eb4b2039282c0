"""What a reader, honest or hostile, makes Redis keep: small, bounded, and no client text
as catalog text (issue: safe on the open internet). Real Redis, real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
import redis
from bench.sizing import reader_bytes

from paperfeed.events import RECORD_EPOCH, decode_user_paper, footprint_bound
from paperfeed.store import keys
from tests.conftest import admin_headers, live_server, make_settings, register
from tests.personas import event

PER_REQUEST = 25
"""Maximum-size events in one request (about 34 KB each as JSON: under 1 MB)."""
MAX_KIB = 512
"""The hard bound per install that docs/deploy.md promises, at the default settings."""


def hostile(n: int, seed: str) -> dict[str, Any]:
    """An event at every limit of the schema, about a paper the catalog lacks."""
    return {
        "event_id": f"{seed}-{n:058d}"[:64],
        "paper_id": f"p{seed}-{n:07d}-" + "x" * 128,
        "type": "view",
        "ts": time.time(),
        "dwell_ms": 86_400_000,
        "source": "z" * 32,
        "title": "\U0001d54f" * 1_000,
        "abstract": "abstract " * 2_222,
        "url": "https://example.org/" + "u" * 1_980,
    }


def bounded(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ids cut to the schema's 128 characters."""
    for e in events:
        e["paper_id"] = e["paper_id"][:128]
    return events


def test_one_install_sending_maximum_size_events_keeps_a_bounded_footprint(
    http: httpx.Client, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    settings = make_settings("redis://unused")
    assert footprint_bound(settings) <= MAX_KIB * 1024
    sent = 0
    # Past every cap: papers (1,000), event ids (2,000), the log (32 KiB), titles (50).
    for start in range(0, 2_400, PER_REQUEST):
        batch = bounded([hostile(n, "h") for n in range(start, start + PER_REQUEST)])
        response = http.post("/v1/events", json={"events": batch}, headers=auth)
        assert response.status_code == 200, response.text
        sent += response.json()["accepted"]
    assert sent == 2_400
    used = reader_bytes(r, user_id, with_vector=True)
    assert used <= footprint_bound(settings) <= MAX_KIB * 1024, used
    assert r.hlen(keys.user_papers(user_id)) <= settings.user_papers_cap
    assert r.hlen(keys.user_page_titles(user_id)) == settings.page_titles_cap
    assert r.strlen(keys.user_events(user_id)) <= settings.event_log_bytes
    assert r.strlen(keys.user_seen(user_id)) == settings.dedupe_cap * 8
    # Nothing of the abstracts, urls or sources the client sent was kept anywhere.
    for name in r.scan_iter("*"):
        if r.type(name) == "string" and name != keys.user_seen(user_id):
            value = str(r.get(name))
        elif r.type(name) == "hash":
            value = str(r.hgetall(name))
        else:
            continue
        assert "abstract abstract" not in value, name
        assert "uuuuuuuu" not in value, name
        assert "zzzzzzzz" not in value, name
    # The export still reads: the newest events, every record.
    export = http.get("/v1/me/export", headers=auth).json()
    assert export["events"][0]["paper_id"] == bounded([hostile(2_399, "h")])[0]["paper_id"]
    assert export["events"][0]["source"] == "other"
    assert export["events"][0]["dwell_ms"] == 86_400_000
    assert len(export["papers"]) == r.hlen(keys.user_papers(user_id))


def test_an_honest_reader_with_40_events_keeps_under_4_kib(
    http: httpx.Client, r: redis.Redis
) -> None:
    papers = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(40)]
    assert http.post("/v1/admin/papers", json=papers, headers=admin_headers()).status_code == 200
    user_id, auth = register(http)
    kinds = ["view"] * 6 + ["click"] * 2 + ["save", "upvote"]
    batch = [
        event(p["id"], kinds[n % len(kinds)], source="popup", dwell_ms=n * 1_000)
        for n, p in enumerate(papers)
    ]
    for start in range(0, 40, 20):
        response = http.post("/v1/events", json={"events": batch[start : start + 20]}, headers=auth)
        assert response.json()["accepted"] == 20
    assert reader_bytes(r, user_id, with_vector=True) <= 4 * 1024
    export = http.get("/v1/me/export", headers=auth).json()
    assert len(export["events"]) == 40
    assert export["papers"]["2411.00008"]["saved"]
    assert export["papers"]["2411.00005"]["dwell_ms"] == 5_000


@pytest.fixture
def small_caps(redis_url: str, r: redis.Redis) -> Iterator[httpx.Client]:
    settings = make_settings(
        redis_url, user_papers_cap=40, dedupe_cap=100, page_titles_cap=3, reports_per_day=2
    )
    with live_server(settings) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        yield client


def test_past_the_papers_cap_what_the_reader_kept_stays(
    small_caps: httpx.Client, r: redis.Redis
) -> None:
    http = small_caps
    papers = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(100)]
    assert http.post("/v1/admin/papers", json=papers, headers=admin_headers()).status_code == 200
    user_id, auth = register(http)
    now = time.time()
    saves = [event(f"2411.{n:05d}", "save", ts=now - 1_000 + n) for n in range(5)]
    assert http.post("/v1/events", json={"events": saves}, headers=auth).status_code == 200
    # Then many more papers only seen, newer than the saves.
    seen = [event(f"2411.{n:05d}", "impression", ts=now - 500 + n) for n in range(5, 100)]
    for start in range(0, len(seen), 20):
        http.post("/v1/events", json={"events": seen[start : start + 20]}, headers=auth)
    assert r.hlen(keys.user_papers(user_id)) <= 40
    saved = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth).json()
    assert {i["paper"]["id"] for i in saved["items"]} == {s["paper_id"] for s in saves}
    # Of the papers only seen, the newest stay.
    assert r.hexists(keys.user_papers(user_id), "2411.00099")
    assert not r.hexists(keys.user_papers(user_id), "2411.00005")


def test_a_page_title_is_a_hint_for_the_reader_alone(
    small_caps: httpx.Client, r: redis.Redis
) -> None:
    http = small_caps
    user_id, auth = register(http)
    _, other = register(http)
    seen = event("2612.99998", "save", title="  My  chosen\ttitle ", abstract="Claims.")
    assert http.post("/v1/events", json={"events": [seen]}, headers=auth).status_code == 200
    assert http.post("/v1/events", json={"events": [seen | {"event_id": "x1"}]}, headers=other)
    mine = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth).json()
    assert mine["items"][0]["paper"]["title"] == "My chosen title"
    assert mine["items"][0]["paper"]["url"] == "https://arxiv.org/abs/2612.99998"
    assert "abstract" not in mine["items"][0]["paper"]
    # Nobody else sees the paper or its title: not the catalog, not a new reader's feed.
    assert http.get("/v1/papers/2612.99998").status_code == 404
    listing = http.get("/v1/papers", params={"limit": 200}).json()["items"]
    assert all(p["id"] != "2612.99998" for p in listing)
    _, fresh = register(http)
    feed = http.get("/v1/feed", headers=fresh).json()["items"]
    assert all(i["paper"]["id"] != "2612.99998" for i in feed)
    trending = http.get("/v1/trending", params={"window": "day"}).json()["items"]
    assert all(i["paper"]["id"] != "2612.99998" for i in trending)
    # Its trending weight was never credited (nothing for an erasure to take back).
    assert r.zscore(keys.trend_scores("day"), "2612.99998") is None
    # At most page_titles_cap titles a reader.
    more = [event(f"2612.9000{n}", "view", title=f"T{n}") for n in range(5)]
    http.post("/v1/events", json={"events": more}, headers=auth)
    assert r.hlen(keys.user_page_titles(user_id)) == 3


def test_a_reader_reports_a_bounded_number_of_unknown_papers_a_day(
    small_caps: httpx.Client, r: redis.Redis
) -> None:
    http = small_caps
    _, auth = register(http)
    unknown = [event(f"2612.8000{n}", "view") for n in range(5)]
    response = http.post("/v1/events", json={"events": unknown}, headers=auth)
    assert response.json()["accepted"] == 5
    assert response.json()["unknown_papers"] == 5
    assert r.zcard(keys.CANDIDATE_SCORE) == 2  # reports_per_day
    again = [event(f"2612.8000{n}", "view") for n in range(5, 8)]
    http.post("/v1/events", json={"events": again}, headers=auth)
    assert r.zcard(keys.CANDIDATE_SCORE) == 2


def test_the_layout_before_compact_records_is_converted_and_loses_nothing(
    http: httpx.Client, r: redis.Redis
) -> None:
    assert http.post(
        "/v1/admin/papers", json=[{"id": "2411.00001", "title": "One"}], headers=admin_headers()
    )
    user_id, auth = register(http)
    at = 1_765_000_000.25
    # What an earlier version stored for a reader who saved one paper.
    record = {"w": 6.0, "f": 2, "v": 0, "c": 0, "i": 1, "dw": 0.0, "t": at, "st": at}
    r.hset(keys.user_papers(user_id), "2411.00001", msgspec.json.encode(record).decode())
    r.zadd(keys.legacy_user_touched(user_id), {"2411.00001": at})
    old_event = {"event_id": "old-1", "paper_id": "2411.00001", "type": "save", "ts": at}
    r.lpush(keys.legacy_user_log(user_id), msgspec.json.encode(old_event | {"source": "popup"}))
    r.zadd(keys.legacy_user_dedupe(user_id), {"old-1": at})
    # Its library reads the old record as it is.
    saved = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth).json()
    assert [i["paper"]["id"] for i in saved["items"]] == ["2411.00001"]
    # The next batch converts: the old event id is still a duplicate.
    response = http.post(
        "/v1/events", json={"events": [old_event, event("2411.00001", "view")]}, headers=auth
    )
    assert response.json() == {"accepted": 1, "duplicates": 1, "unknown_papers": 0}
    for legacy in (keys.legacy_user_touched, keys.legacy_user_log, keys.legacy_user_dedupe):
        assert not r.exists(legacy(user_id))
    stored = str(r.hget(keys.user_papers(user_id), "2411.00001"))
    assert stored.startswith("[")
    converted = decode_user_paper(stored)
    assert converted.saved
    assert converted.v == 1
    assert converted.st == at
    assert converted.w == 6.0 + 1.0
    export = http.get("/v1/me/export", headers=auth).json()
    assert [(e["type"], e["ts"], e.get("source")) for e in export["events"]][-1] == (
        "save",
        float(int(at)),
        "popup",
    )
    assert int(at) > RECORD_EPOCH


def test_fifty_installs_flooding_at_their_limits_leave_others_served(
    redis_url: str, r: redis.Redis
) -> None:
    """50 installs, each within its own request budget, send maximum-size events at once.
    Redis is given only the memory the documented bound allows them (with maxmemory, it
    refuses writes past it): nobody is refused for memory, the flood stays within the
    bound, and a calm reader's feed and events keep working all along."""
    installs, rounds = 50, 6
    settings = make_settings(
        redis_url,
        user_papers_cap=60,
        dedupe_cap=120,
        event_log_bytes=4_096,
        page_titles_cap=5,
        rate_limit_per_minute=600,
    )
    papers = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(30)]
    with live_server(settings) as live, httpx.Client(base_url=live.url, timeout=60) as http:
        assert http.post("/v1/admin/papers", json=papers, headers=admin_headers())
        _, calm = register(http)
        tokens = [register(http) for _ in range(installs)]
        r.config_set("maxmemory", 0)
        before = int(r.info("memory")["used_memory"])
        allowed = installs * footprint_bound(settings) + 8 * 2**20  # + request buffers
        r.config_set("maxmemory", before + allowed)
        statuses: list[int] = []
        calm_answers: list[int] = []
        during: list[int] = []

        progress = asyncio.Condition()

        async def flood(client: httpx.AsyncClient, n: int, auth: dict[str, str]) -> None:
            for k in range(rounds):
                events = range(k * PER_REQUEST, (k + 1) * PER_REQUEST)
                batch = bounded([hostile(j, f"f{n}") for j in events])
                answer = await client.post("/v1/events", json={"events": batch}, headers=auth)
                statuses.append(answer.status_code)
                async with progress:
                    progress.notify_all()

        async def calm_reader(client: httpx.AsyncClient, done: asyncio.Event) -> None:
            # One click and one feed per two flood requests answered: within the calm
            # reader's own budget however long the flood takes on a loaded machine.
            while not done.is_set():
                mark = len(statuses) + 2

                def flood_moved_on(mark: int = mark) -> bool:
                    return len(statuses) >= mark or done.is_set()

                async with progress:
                    await progress.wait_for(flood_moved_on)
                e = event(papers[len(calm_answers) % 30]["id"], "click")
                sent = await client.post("/v1/events", json={"events": [e]}, headers=calm)
                feed = await client.get("/v1/feed", headers=calm)
                calm_answers.extend((sent.status_code, feed.status_code))
                if not done.is_set():
                    during.append(len(statuses))

        async def main() -> None:
            limits = httpx.Limits(max_connections=60)
            async with httpx.AsyncClient(base_url=live.url, timeout=120, limits=limits) as c:
                done = asyncio.Event()
                watcher = asyncio.create_task(calm_reader(c, done))
                await asyncio.gather(*(flood(c, n, auth) for n, (_, auth) in enumerate(tokens)))
                done.set()
                async with progress:
                    progress.notify_all()
                await watcher

        try:
            asyncio.run(main())
            grown = int(r.info("memory")["used_memory"]) - before
        finally:
            r.config_set("maxmemory", 0)
    assert statuses.count(200) == installs * rounds, Counter(statuses)
    assert during, "the calm reader was answered while the flood went on"
    assert set(calm_answers) == {200}, Counter(calm_answers)
    assert grown <= allowed, (grown, allowed)
    for user_id, _ in tokens:
        assert reader_bytes(r, user_id, with_vector=True) <= footprint_bound(settings)
