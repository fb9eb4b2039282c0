"""An erasure always finishes: a Redis failure part-way, a retry with the same token, the
worker finishing what was left, the trainer's cache forgetting the reader. Real Redis and
HTTP; the failure is injected into paperfeed's own code (a step raising ``RedisError``
once), never into Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.training.data import deployment_id, load_cache, read_interactions
from paperfeed.worker import finish_erasures
from tests.conftest import LiveServer, admin_headers, live_server, make_settings, register
from tests.personas import event

PAPERS = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(1, 6)]


def core_of(live: LiveServer) -> Core:
    core = live.server.config.app.state.core
    assert isinstance(core, Core)
    return core


def fail_once(target: Any, name: str) -> list[int]:
    """``target.name`` raises ``RedisError`` the first time it is called, then works."""
    real = getattr(target, name)
    calls: list[int] = []

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise redis.exceptions.ConnectionError("injected: Redis went away")
        return await real(*args, **kwargs)

    setattr(target, name, failing)
    return calls


@pytest.fixture
def live(redis_url: str, r: redis.Redis) -> Iterator[LiveServer]:
    with live_server(make_settings(redis_url)) as server:
        yield server


def leftovers(r: redis.Redis, user_id: str) -> list[str]:
    return [str(k) for k in r.scan_iter("*") if user_id in str(k)] + [
        name for name in (keys.ERASURES,) if r.zscore(name, user_id) is not None
    ]


def test_an_erasure_cut_short_is_finished_by_a_retry_with_the_same_token(
    live: LiveServer, r: redis.Redis
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers())
    _, stays = register(http)
    http.post("/v1/events", json={"events": [event("2411.00001", "upvote")]}, headers=stays)
    day = keys.trend_scores("day")
    alone = r.zscore(day, "2411.00001")  # the other reader's upvote
    user_id, auth = register(http)
    batch = [event("2411.00001", "save"), event("2411.00002", "upvote")]
    assert http.post("/v1/events", json={"events": batch}, headers=auth).status_code == 200
    assert r.zscore(day, "2411.00001") != alone

    # The step after the trending weight is taken back fails: a 503, nothing confirmed.
    calls = fail_once(core_of(live).catalog.reports, "forget_reporter")
    first = http.delete("/v1/me", headers=auth)
    assert first.status_code == 503, first.text
    assert calls == [1]
    # The reader is being erased: their token still opens the erasure (and reads), but
    # nothing of theirs is written any more.
    refused = http.post("/v1/events", json={"events": [event("2411.00003")]}, headers=auth)
    assert refused.status_code == 401
    assert r.exists(keys.user_papers(user_id)) == 1
    assert r.zscore(keys.ERASURES, user_id) is not None

    again = http.delete("/v1/me", headers=auth)
    assert again.status_code == 204, again.text
    assert leftovers(r, user_id) == []
    assert http.get("/v1/me/export", headers=auth).status_code == 401
    # The weight was taken back once, though the step ran twice.
    assert r.zscore(day, "2411.00002") is None
    assert r.zscore(day, "2411.00001") == pytest.approx(alone, rel=1e-6)
    assert http.get("/v1/me/export", headers=stays).status_code == 200


def test_the_worker_finishes_an_erasure_nobody_retried(
    live: LiveServer, r: redis.Redis, redis_url: str
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers())
    user_id, auth = register(http)
    assert http.post("/v1/events", json={"events": [event("2411.00004", "save")]}, headers=auth)
    fail_once(core_of(live).users.trending, "add")
    assert http.delete("/v1/me", headers=auth).status_code == 503
    assert r.exists(keys.user_papers(user_id)) == 1
    # The worker's job finishes erasures asked for a minute ago or more.
    r.zadd(keys.ERASURES, {user_id: time.time() - 120})
    summary = asyncio.run(finish_erasures(make_settings(redis_url)))
    assert summary.startswith("finished 1 erasures, 0 links")
    assert leftovers(r, user_id) == []
    assert r.zscore(keys.trend_scores("day"), "2411.00004") is None
    assert http.delete("/v1/me", headers=auth).status_code == 401


def test_the_trainers_cache_forgets_an_erased_reader(
    live: LiveServer, r: redis.Redis, redis_url: str, tmp_path: Any
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers())
    readers = [register(http) for _ in range(3)]
    for _, auth in readers:
        batch = [event("2411.00001", "save"), event("2411.00002", "view")]
        assert http.post("/v1/events", json={"events": batch}, headers=auth).status_code == 200
    settings = make_settings(redis_url, data_dir=str(tmp_path))
    cache_dir = settings.data_path / "trainer"

    async def read() -> str:
        core = Core.connect(settings)
        try:
            await read_interactions(core.redis, cache_dir=cache_dir)
            return await deployment_id(core.redis)
        finally:
            await core.close()

    deployment = asyncio.run(read())
    cached = load_cache(cache_dir, deployment)
    assert cached is not None
    erased_id, erased = readers[0]
    assert erased_id in cached.rows
    assert http.delete("/v1/me", headers=erased).status_code == 204
    asyncio.run(finish_erasures(settings))
    cached = load_cache(cache_dir, deployment)
    assert cached is not None
    assert erased_id not in cached.rows
    assert {u for u, _ in readers[1:]} <= set(cached.rows)
    # Remembered until a training reads the data afresh (one that read the reader
    # before the erasure could still write them back), then done with.
    assert r.zscore(keys.ERASED, erased_id) is not None
    asyncio.run(read())
    asyncio.run(finish_erasures(settings))
    assert r.zcard(keys.ERASED) == 0
    cached = load_cache(cache_dir, deployment)
    assert cached is not None
    assert erased_id not in cached.rows
