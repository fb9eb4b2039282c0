"""Pairing without races: an erasure during a link, a link cut short, an install linking
to a reader who is leaving. Real Redis and HTTP; the interleavings are made by running
paperfeed's own steps at a chosen point (a hook on the code's redemption) or a step
raising ``RedisError`` once, never by touching Redis itself."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.worker import finish_erasures
from tests.conftest import LiveServer, admin_headers, live_server, make_settings, register
from tests.personas import event
from tests.test_erasure import core_of, fail_once
from tests.test_pairing import new_code, saved, send

PAPERS = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(1, 11)]


@pytest.fixture
def live(redis_url: str, r: redis.Redis) -> Iterator[LiveServer]:
    with live_server(make_settings(redis_url)) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers())
        yield server


def after_redeem(live: LiveServer, hook: Any) -> None:
    """Run ``hook`` (async) right after the next pairing code is redeemed."""
    pairing = core_of(live).pairing
    real = pairing._redeem

    async def redeem(*args: Any, **kwargs: Any) -> Any:
        owner = await real(*args, **kwargs)
        pairing._redeem = real
        await hook()
        return owner

    pairing._redeem = redeem  # type: ignore[assignment]


def erase_elsewhere(redis_url: str, user_id: str) -> None:
    """Erase ``user_id`` to the end from another process's parts (its own connections),
    while the caller waits."""

    async def erase() -> None:
        core = Core.connect(make_settings(redis_url))
        try:
            await core.users.erase(user_id)
        finally:
            await core.close()

    worker = threading.Thread(target=lambda: asyncio.run(erase()))
    worker.start()
    worker.join(30)


def test_an_erasure_during_a_link_is_not_undone(
    live: LiveServer, r: redis.Redis, redis_url: str
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    laptop_id, laptop = register(http)
    desktop_id, desktop = register(http)
    send(http, laptop, event("2411.00001", "save"))
    send(http, desktop, event("2411.00002", "save"))
    code = new_code(http, laptop)
    # The laptop's reader erases themselves (and every linked browser) once the desktop's
    # token was moved to them, before what the desktop did joins them.
    users = core_of(live).users
    real = users.forget_cached

    def then_erase(token_hash: str) -> None:
        real(token_hash)
        users.forget_cached = real  # type: ignore[method-assign]
        erase_elsewhere(redis_url, laptop_id)

    users.forget_cached = then_erase  # type: ignore[method-assign]
    answer = http.post("/v1/me/link", json={"code": code}, headers=desktop)
    assert users.forget_cached == real  # the erasure ran at that point
    assert answer.status_code == 404, answer.text
    # The erased reader stays erased: nothing of theirs came back, nor of the browser
    # that had joined them.
    assert [k for k in r.scan_iter("*") if laptop_id in str(k) or desktop_id in str(k)] == []
    assert http.get("/v1/me/export", headers=desktop).status_code == 401
    assert r.zcard(keys.LINKS) == 0
    assert r.zcard(keys.ERASURES) == 0


def test_a_link_cut_short_is_finished_by_the_worker(
    live: LiveServer, r: redis.Redis, redis_url: str
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    laptop_id, laptop = register(http)
    desktop_id, desktop = register(http)
    send(http, laptop, event("2411.00001", "save"), event("2411.00003", "upvote"))
    send(http, desktop, event("2411.00002", "save"), event("2411.00003", "upvote"))
    day = keys.trend_scores("day")
    code = new_code(http, laptop)
    # Taking back the desktop's weight on the paper both upvoted fails once.
    fail_once(core_of(live).pairing.trending, "add")
    assert http.post("/v1/me/link", json={"code": code}, headers=desktop).status_code == 503
    # The desktop's token already stands for the laptop's reader; the move waits.
    assert http.get("/v1/me/export", headers=desktop).json()["user_id"] == laptop_id
    assert r.zcard(keys.LINKS) == 1
    r.zadd(keys.LINKS, {str(m): time.time() - 120 for m in r.zrange(keys.LINKS, 0, -1)})
    summary = asyncio.run(finish_erasures(make_settings(redis_url)))
    assert "1 links" in summary
    assert r.zcard(keys.LINKS) == 0
    assert saved(http, desktop) == saved(http, laptop) == {"2411.00001", "2411.00002"}
    assert [k for k in r.scan_iter("*") if desktop_id in str(k)] == []
    export = http.get("/v1/me/export", headers=laptop).json()
    assert export["events_total"] == 4  # the desktop's events counted once
    # One upvote of 2411.00003 is left in trending (the desktop's was taken back once).
    upvoted, saved_once = r.zscore(day, "2411.00003"), r.zscore(day, "2411.00001")
    assert upvoted == pytest.approx(saved_once * 4 / 3, rel=1e-3)
    assert not [k for k in r.scan_iter("pf:trend:*:once:*")]


def test_no_install_can_link_to_a_reader_who_is_leaving(live: LiveServer, r: redis.Redis) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    laptop_id, laptop = register(http)
    desktop_id, desktop = register(http)
    _, phone = register(http)
    desktop_code = new_code(http, desktop)
    laptop_code = new_code(http, laptop)
    answers: list[int] = []

    async def phone_links_to_the_desktop() -> None:
        # The desktop is moving to the laptop: the phone would be left behind.
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            answer = await client.post("/v1/me/link", json={"code": desktop_code}, headers=phone)
            answers.append(answer.status_code)

    def hook() -> Any:
        return asyncio.get_running_loop().run_in_executor(
            None, lambda: asyncio.run(phone_links_to_the_desktop())
        )

    after_redeem(live, hook)
    linked = http.post("/v1/me/link", json={"code": laptop_code}, headers=desktop)
    assert linked.status_code == 200, linked.text
    assert answers == [404]
    # The phone is still its own reader; the desktop joined the laptop's.
    assert http.get("/v1/me/export", headers=phone).json()["user_id"] not in (
        laptop_id,
        desktop_id,
    )
    assert http.get("/v1/me/export", headers=desktop).json()["user_id"] == laptop_id
    assert r.scard(keys.user_installs(laptop_id)) == 1


def test_a_link_that_died_unrecorded_does_not_close_the_reader_for_good(
    live: LiveServer, r: redis.Redis
) -> None:
    http = httpx.Client(base_url=live.url, timeout=30)
    laptop_id, laptop = register(http)
    _, desktop = register(http)
    # The laptop's own link to a third reader started (it is "leaving") and died before
    # it was recorded: for a while nobody links to it; then the mark lapses.
    r.hset(keys.user_profile(laptop_id), "leaving", f"{time.time():.3f}")
    code = new_code(http, laptop)
    assert http.post("/v1/me/link", json={"code": code}, headers=desktop).status_code == 404
    r.hset(keys.user_profile(laptop_id), "leaving", f"{time.time() - 3_600:.3f}")
    code = new_code(http, laptop)
    linked = http.post("/v1/me/link", json={"code": code}, headers=desktop)
    assert linked.status_code == 200, linked.text
    assert linked.json()["user_id"] == laptop_id
