"""The feed cache: a reader's ranked feed kept in Redis and served as it is until
something that changes it happens (real Redis, real HTTP, two api processes)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.recsys.content import FloatArray
from paperfeed.recsys.repository import decode_vector
from paperfeed.serving.feed import fold_in, rank_stored, reader_of
from paperfeed.store import keys
from paperfeed.training import learn
from paperfeed.training.train import train_and_publish
from tests.conftest import LiveServer, admin_headers, live_server, live_servers, register
from tests.personas import event, paper_id
from tests.recsys_fixtures import feed, train_settings

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def cache_settings(redis_url: str) -> Any:
    # One trending epoch for the whole test: only the reader, the model and the catalog
    # change the feed.
    return train_settings(redis_url, trending_snapshot_s=3_600)


@pytest.fixture
def cached_api(trained: str, redis_url: str) -> Iterator[LiveServer]:
    with live_server(cache_settings(redis_url)) as server:
        yield server


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["paper"]["id"] for item in answer["items"]]


def reader(http: httpx.Client) -> tuple[str, dict[str, str]]:
    user_id, auth = register(http)
    response = http.post(
        "/v1/events",
        json={
            "events": [event(paper_id(0, n), kind) for n in range(3) for kind in ("view", "save")]
        },
        headers=auth,
    )
    assert response.status_code == 200
    return user_id, auth


def test_a_feed_is_served_from_its_cache_until_the_reader_acts(
    cached_api: LiveServer, r: redis.Redis
) -> None:
    http = httpx.Client(base_url=cached_api.url)
    user_id, auth = reader(http)
    first = feed(http, auth, limit=20)
    kept = r.get(keys.user_feed(user_id))
    assert kept is not None
    # Served from the cache: what is kept is what the next answer is (tampered here to
    # tell it from a recomputation).
    stamp, model, kept_ids, scores, reasons, *rest = json.loads(kept)
    tampered = [stamp, model, kept_ids[::-1], scores, reasons, *rest]
    r.set(keys.user_feed(user_id), json.dumps(tampered))
    assert ids(feed(http, auth, limit=20)) == kept_ids[::-1][:20]
    # The reader's own event: the very next feed is computed again, and changes.
    top = first["items"][0]["paper"]["id"]
    assert (
        http.post("/v1/events", json={"events": [event(top, "dismiss")]}, headers=auth).status_code
        == 200
    )
    after = feed(http, auth, limit=20)
    assert top not in ids(after)
    assert ids(after) != kept_ids[::-1][:20]
    assert top not in json.loads(r.get(keys.user_feed(user_id)) or "[]")[2]


def test_a_new_model_and_a_catalog_import_change_the_next_feed(
    cached_api: LiveServer, redis_url: str, r: redis.Redis
) -> None:
    http = httpx.Client(base_url=cached_api.url)
    _, auth = reader(http)
    before = feed(http, auth)

    async def retrain() -> str | None:
        core = Core.connect(train_settings(redis_url, gate_tolerance=1.0))
        try:
            decision = await train_and_publish(core.redis, core.settings)
        finally:
            await core.close()
        return decision.version if decision.published else None

    newer = asyncio.run(retrain())
    assert newer is not None
    assert feed(http, auth)["model_version"] == newer != before["model_version"]
    fresh = {
        "id": "2411.55555",
        "title": "Spectral graph convolution for node classification under heterophily",
        "abstract": "Graph neural network message passing, link prediction, oversmoothing.",
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    assert http.post("/v1/admin/papers", json=[fresh], headers=admin_headers()).json()["new"] == 1
    assert "2411.55555" in ids(feed(http, auth, limit=50))


def test_two_api_processes_serve_one_reader_the_same_feed(
    trained: str, redis_url: str, r: redis.Redis
) -> None:
    with live_servers(cache_settings(redis_url)) as (one, two):
        first, second = httpx.Client(base_url=one.url), httpx.Client(base_url=two.url)
        _, auth = reader(first)
        assert ids(feed(first, auth, limit=30)) == ids(feed(second, auth, limit=30))
        top = feed(second, auth)["items"][0]["paper"]["id"]
        second.post("/v1/events", json={"events": [event(top, "dismiss")]}, headers=auth)
        assert ids(feed(first, auth, limit=30)) == ids(feed(second, auth, limit=30))
        assert top not in ids(feed(first, auth, limit=30))


def test_export_shows_the_cache_and_erasure_removes_it(
    cached_api: LiveServer, r: redis.Redis
) -> None:
    http = httpx.Client(base_url=cached_api.url)
    user_id, auth = reader(http)
    shown = ids(feed(http, auth, limit=20))
    exported = http.get("/v1/me/export", headers=auth).json()
    assert exported["feed"]["papers"][:20] == shown
    assert http.delete("/v1/me", headers=auth).status_code == 204
    assert not r.exists(keys.user_feed(user_id))
    assert not [key for key in r.scan_iter(match=f"*{user_id}*")]


async def test_a_feed_computed_across_an_erasure_leaves_nothing_behind(
    trained: str, core: Core, redis_url: str, r: redis.Redis
) -> None:
    user = await core.users.register()
    stamp = "x|y|0|1"
    await core.users.erase(user.user_id)
    await core.feeds.compute(user.user_id, 20, time.time(), stamp)
    assert not r.exists(keys.user_feed(user.user_id))
    assert not r.exists(keys.user_vector(user.user_id))


async def folded_from_everything(core: Core, user_id: str) -> FloatArray:
    """The reader's vector folded in now from all their records (the served model)."""
    index = await core.feeds.index()
    assert index.model is not None
    return fold_in(index.model, index, reader_of(index, await core.users.papers(user_id)))


def kept_vector(r: redis.Redis, user_id: str) -> FloatArray:
    raw = r.get(keys.user_vector(user_id))
    assert raw is not None
    return decode_vector(raw).array()


async def test_an_event_that_arrives_while_a_feed_is_ranked_counts_in_the_next_feed(
    trained: str, core: Core, r: redis.Redis
) -> None:
    """The reader's vector kept by a feed stands for the records that feed read: a save
    that lands while it is ranked is folded in by the next feed (the vector was stamped
    with the time the ranking ended, which hid the save until the reader's next event)."""
    user = await core.users.register()
    await core.ingestor.ingest(
        user.user_id, [Event(**event(paper_id(0, n), "save")) for n in range(3)]
    )
    meanwhile = paper_id(1, 5)  # another topic: it moves the vector
    offload = core.feeds.offload
    sent: list[str] = []

    async def save_while_ranking(function: Any, *args: Any) -> Any:
        if function is rank_stored and not sent:
            sent.append(meanwhile)  # the reader's records were read; the ranking starts
            await core.ingestor.ingest(user.user_id, [Event(**event(meanwhile, "save"))])
        return await offload(function, *args)

    core.feeds.offload = save_while_ranking  # type: ignore[assignment]
    await core.feeds.feed(user.user_id, 20)
    assert sent
    await core.feeds.feed(user.user_id, 20)  # the event count moved: computed again
    expected = await folded_from_everything(core, user.user_id)
    np.testing.assert_allclose(kept_vector(r, user.user_id), expected, rtol=1e-4, atol=1e-5)


async def test_an_event_that_arrives_during_a_training_counts_in_the_next_feed(
    trained: str, core: Core, redis_url: str, r: redis.Redis
) -> None:
    """A published model's vectors stand for the records the training read: a save that
    lands while the model learns is folded in by the reader's next feed (the vectors
    were stamped with the time the model was made, which hid it)."""
    user = await core.users.register()
    await core.ingestor.ingest(
        user.user_id, [Event(**event(paper_id(0, n), "save")) for n in range(4)]
    )
    meanwhile = paper_id(1, 5)
    loop = asyncio.get_running_loop()

    def save_then_learn(*args: Any, **kwargs: Any) -> learn.Learned:
        # The training has read its data (it learns in a thread); the reader saves.
        saving = core.ingestor.ingest(user.user_id, [Event(**event(meanwhile, "save"))])
        asyncio.run_coroutine_threadsafe(saving, loop).result(30)
        return learn.learn(*args, **kwargs)

    settings = train_settings(redis_url, gate_tolerance=1.0)
    decision = await train_and_publish(core.redis, settings, learner=save_then_learn)
    assert decision.published, decision.reason
    assert meanwhile in await core.users.papers(user.user_id)
    assert (await core.feeds.feed(user.user_id, 20)).model_version == decision.version
    expected = await folded_from_everything(core, user.user_id)
    np.testing.assert_allclose(kept_vector(r, user.user_id), expected, rtol=1e-4, atol=1e-5)


def test_readyz_answers_while_feeds_are_computed_under_load(
    trained: str, redis_url: str, r: redis.Redis
) -> None:
    with live_server(train_settings(redis_url)) as server:  # every feed computed
        http = httpx.Client(base_url=server.url)
        readers = [reader(http)[1] for _ in range(8)]
        stop = threading.Event()
        served = [0]

        def load(auth: dict[str, str]) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                while not stop.is_set():
                    assert (
                        client.get("/v1/feed", params={"limit": 50}, headers=auth).status_code
                        == 200
                    )
                    served[0] += 1

        threads = [threading.Thread(target=load, args=(auth,)) for auth in readers]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while served[0] < 20:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            slowest = 0.0
            for _ in range(20):
                started = time.monotonic()
                assert http.get("/readyz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            # Feeds rank in the thread pool: the event loop answers in between.
            assert slowest < 1.0, slowest
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)


def cache_results(http: httpx.Client) -> dict[str, float]:
    return {
        result: float(line.rsplit(" ", 1)[1])
        for line in http.get("/metrics").text.splitlines()
        for result in ("hit", "resort", "miss")
        if line.startswith(f'paperfeed_feed_cache_total{{result="{result}"}}')
    }


def resorts_on(http: httpx.Client, where: str) -> float:
    prefix = f'paperfeed_feed_work_total{{on="{where}",work="resort"}}'
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, lines
    return float(lines[0].rsplit(" ", 1)[1])


def test_a_re_sort_runs_on_the_loop_only_while_it_is_small() -> None:
    """Unit: a re-sort of the bench's reader (50 records, about 700 candidates) is under
    the bound; a long history or a long candidate table goes to the pool."""
    from paperfeed.serving.feed import INLINE_RESORT_WORK, resort_work

    assert resort_work(50, 750) <= INLINE_RESORT_WORK
    assert resort_work(2_000, 700) > INLINE_RESORT_WORK
    assert resort_work(20, 1_500) > INLINE_RESORT_WORK


def test_impressions_re_sort_the_cached_candidates_as_a_full_ranking_would(
    cached_api: LiveServer, r: redis.Redis
) -> None:
    """The popup shows cards (impressions): the next feed re-sorts the kept candidates
    with the new penalties, without a fold-in or a search for candidates, and is what a
    ranking from scratch gives; any other event ranks anew."""
    http = httpx.Client(base_url=cached_api.url)
    user_id, auth = reader(http)
    first_feed = feed(http, auth, limit=20)
    first = ids(first_feed)
    first_scores = {item["paper"]["id"]: item["score"] for item in first_feed["items"]}
    assert r.exists(keys.user_candidates(user_id))
    shown = first[:5]
    impressions = {"events": [event(pid, "impression") for pid in shown]}
    assert http.post("/v1/events", json=impressions, headers=auth).json()["accepted"] == 5
    before = cache_results(http)
    on_loop = resorts_on(http, "loop")
    resorted = feed(http, auth, limit=20)
    after = cache_results(http)
    assert after["resort"] == before["resort"] + 1
    assert after["miss"] == before["miss"]
    # A short history and a few hundred candidates: re-sorted on the event loop.
    assert resorts_on(http, "loop") == on_loop + 1
    # The shown papers sank (their penalty), and the order is a full ranking's: the same
    # feed ranked anew once the cache is gone.
    resorted_scores = {item["paper"]["id"]: item["score"] for item in resorted["items"]}
    assert all(resorted_scores.get(pid, -1e9) < first_scores[pid] for pid in shown)
    assert ids(resorted) != first
    r.delete(keys.user_feed(user_id), keys.user_candidates(user_id))
    fresh = feed(http, auth, limit=20)
    assert cache_results(http)["miss"] == after["miss"] + 1
    assert ids(fresh) == ids(resorted)
    for a, b in zip(fresh["items"], resorted["items"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=2e-4)
        assert a["reasons"] == b["reasons"]
    # An event other than an impression: ranked anew.
    before = cache_results(http)
    view = {"events": [event(first[6], "view")]}
    assert http.post("/v1/events", json=view, headers=auth).json()["accepted"] == 1
    feed(http, auth, limit=20)
    assert cache_results(http)["miss"] == before["miss"] + 1
