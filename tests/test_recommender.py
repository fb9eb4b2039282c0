"""The recommender end to end: real Redis, real training, the real api over HTTP."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
import pytest
import redis

from paperfeed.core import Core
from paperfeed.recsys.ranker import BlendParams
from paperfeed.recsys.train import train_and_publish
from tests.conftest import (
    LiveServer,
    admin_headers,
    live_server,
    paperfeed_cli,
    redis_env,
    register,
)
from tests.personas import paper_id, papers, topic_of
from tests.recsys_fixtures import READERS_PER_TOPIC, feed, populate, train_settings

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def send(http: httpx.Client, auth: dict[str, str], events: list[dict[str, Any]]) -> None:
    response = http.post("/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 200, response.text


def topics(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter(topic_of(item["paper"]["id"]) for item in items)


def test_two_readers_get_different_on_topic_feeds(api: LiveServer, trained: str) -> None:
    http = httpx.Client(base_url=api.url)
    _, graphs = register(http)
    _, robots = register(http)
    send(http, graphs, [ev for n in range(3) for ev in history_events(0, n)])
    send(http, robots, [ev for n in range(3) for ev in history_events(1, n)])
    graph_feed, robot_feed = feed(http, graphs), feed(http, robots)
    assert graph_feed["model_version"] == trained
    assert topics(graph_feed["items"])["graphs"] >= 8, topics(graph_feed["items"])
    assert topics(robot_feed["items"])["robots"] >= 8, topics(robot_feed["items"])
    graph_ids = [i["paper"]["id"] for i in graph_feed["items"]]
    assert graph_ids != [i["paper"]["id"] for i in robot_feed["items"]]
    # Every item says why it is there; personal ones name a paper the reader saved.
    assert all(item["reasons"] for item in graph_feed["items"])
    assert any("because you saved" in r for i in graph_feed["items"] for r in i["reasons"])


def history_events(topic: int, n: int) -> list[dict[str, Any]]:
    from tests.personas import event

    pid = paper_id(topic, n)
    return [event(pid, "view", dwell_ms=60_000), event(pid, "save")]


def test_a_single_upvote_changes_the_next_feed(api: LiveServer) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    send(http, auth, history_events(0, 1))
    before = feed(http, auth, limit=20)
    from tests.personas import event

    send(http, auth, [event(paper_id(2, 5), "upvote")])
    after = feed(http, auth, limit=20)
    assert [i["paper"]["id"] for i in before["items"]] != [i["paper"]["id"] for i in after["items"]]
    assert topics(after["items"])["proteins"] > topics(before["items"])["proteins"]
    assert paper_id(2, 5) not in {i["paper"]["id"] for i in after["items"]}  # they have it


def test_a_dismissed_paper_never_returns(api: LiveServer, redis_url: str) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    send(http, auth, history_events(0, 2))
    top = feed(http, auth)["items"][0]["paper"]["id"]
    from tests.personas import event

    send(http, auth, [event(top, "dismiss")])
    assert top not in {i["paper"]["id"] for i in feed(http, auth, limit=200)["items"]}
    # Not even after the dismissal went into a new model.
    import asyncio

    async def retrain() -> None:
        core = Core.connect(train_settings(redis_url))
        try:
            await train_and_publish(core.redis, train_settings(redis_url, gate_tolerance=1.0))
        finally:
            await core.close()

    asyncio.run(retrain())
    time.sleep(0.6)
    assert top not in {i["paper"]["id"] for i in feed(http, auth, limit=200)["items"]}
    send(http, auth, [event(top, "undismiss")])
    assert top in {i["paper"]["id"] for i in feed(http, auth, limit=200)["items"]}


def test_a_fresh_paper_reaches_the_reader_whose_history_matches(api: LiveServer) -> None:
    http = httpx.Client(base_url=api.url)
    _, graphs = register(http)
    _, proteins = register(http)
    send(http, graphs, [ev for n in range(3) for ev in history_events(0, n)])
    send(http, proteins, [ev for n in range(3) for ev in history_events(2, n)])
    fresh = {
        "id": "2411.77777",
        "title": "Message passing graph neural network for link prediction on molecular graphs",
        "abstract": "We study graph convolution, node classification and oversmoothing in "
        "heterophily graphs with spectral message passing.",
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    response = http.post("/v1/admin/papers", json=[fresh], headers=admin_headers())
    assert response.json()["new"] == 1

    def rank(auth: dict[str, str]) -> int:
        ids = [i["paper"]["id"] for i in feed(http, auth, limit=200)["items"]]
        return ids.index("2411.77777")

    graph_items = feed(http, graphs, limit=10)["items"]
    assert "2411.77777" in [i["paper"]["id"] for i in graph_items]
    item = next(i for i in graph_items if i["paper"]["id"] == "2411.77777")
    assert "new today" in item["reasons"]
    assert rank(graphs) < rank(proteins)


def test_brand_new_installs_get_a_trending_feed_before_any_model(http: httpx.Client) -> None:
    http.post("/v1/admin/papers", json=papers(), headers=admin_headers())
    _, someone = register(http)
    send(http, someone, history_events(1, 4))
    _, auth = register(http)
    answer = feed(http, auth)
    assert answer["model_version"] is None
    assert len(answer["items"]) == 10
    assert answer["items"][0]["paper"]["id"] == paper_id(1, 4)
    assert "trending today" in answer["items"][0]["reasons"]
    assert http.get("/v1/feed").status_code == 401


def test_brand_new_installs_get_a_trending_feed_with_a_model(api: LiveServer) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    answer = feed(http, auth)
    assert len(answer["items"]) == 10
    assert all(item["reasons"] for item in answer["items"])
    # Nothing personal to go on: the order is trending's.
    trending = http.get("/v1/trending", params={"window": "week", "limit": 3}).json()
    assert answer["items"][0]["paper"]["id"] == trending["items"][0]["paper"]["id"]


def test_similar_papers_share_the_topic(api: LiveServer) -> None:
    http = httpx.Client(base_url=api.url)
    similar = http.get(f"/v1/papers/{paper_id(1, 3)}/similar", params={"limit": 10}).json()
    assert len(similar["items"]) == 10
    assert paper_id(1, 3) not in [i["paper"]["id"] for i in similar["items"]]
    assert topics(similar["items"])["robots"] >= 9
    assert http.get("/v1/papers/9999.00000/similar").status_code == 404


def test_similar_papers_work_before_any_model(http: httpx.Client) -> None:
    http.post("/v1/admin/papers", json=papers(), headers=admin_headers())
    similar = http.get(f"/v1/papers/{paper_id(2, 3)}/similar", params={"limit": 5}).json()
    assert similar["model_version"] is None
    assert topics(similar["items"])["proteins"] >= 4


async def test_a_model_that_does_not_beat_popularity_is_not_published(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    empty = await train_and_publish(core.redis, train_settings(redis_url))
    assert not empty.published
    assert "not enough" in empty.reason
    await populate(core)
    trending_only = await train_and_publish(
        core.redis, train_settings(redis_url), blend=BlendParams(personal_max=0.0)
    )
    assert not trending_only.published
    assert "popularity" in trending_only.reason
    assert r.get("pf:{model}:current") is None


async def test_a_model_worse_than_the_current_one_is_not_published(
    core: Core, trained: str, redis_url: str, r: redis.Redis
) -> None:
    worse = await train_and_publish(
        core.redis,
        train_settings(redis_url, gate_tolerance=0.05),
        blend=BlendParams(personal_max=0.2),  # mostly trending: better than popularity only
    )
    assert not worse.published, worse.metrics
    assert worse.metrics["candidate"]["ndcg"] > worse.metrics["popularity"]["ndcg"]
    assert "worse than the current" in worse.reason
    assert r.get("pf:{model}:current") == trained


def test_both_api_processes_switch_to_a_new_version(
    trained: str, redis_url: str, r: redis.Redis
) -> None:
    with (
        live_server(train_settings(redis_url)) as one,
        live_server(train_settings(redis_url)) as two,
    ):
        clients = [httpx.Client(base_url=s.url) for s in (one, two)]
        auths = [register(c)[1] for c in clients]
        assert {feed(c, a)["model_version"] for c, a in zip(clients, auths, strict=True)} == {
            trained
        }
        import asyncio

        async def retrain() -> str:
            core = Core.connect(train_settings(redis_url))
            try:
                report = await train_and_publish(
                    core.redis, train_settings(redis_url, gate_tolerance=1.0)
                )
            finally:
                await core.close()
            assert report.published
            assert report.version
            return report.version

        newer = asyncio.run(retrain())
        assert newer != trained
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            versions = {feed(c, a)["model_version"] for c, a in zip(clients, auths, strict=True)}
            if versions == {newer}:
                break
            time.sleep(0.1)
        assert versions == {newer}

        # A version whose blob cannot be loaded: both keep serving the one they have.
        r.set("pf:{model}:broken:meta", msgspec.json.encode({"version": "broken"}))
        r.set("pf:{model}:broken:blob", b"not a model")
        r.set("pf:{model}:current", "broken")
        time.sleep(1.0)
        versions = {feed(c, a)["model_version"] for c, a in zip(clients, auths, strict=True)}
        assert versions == {newer}


def test_admin_trains_in_the_background_and_reports_the_model(
    api: LiveServer, trained: str
) -> None:
    http = httpx.Client(base_url=api.url)
    assert http.post("/v1/admin/train").status_code == 401
    status = http.get("/v1/admin/model", headers=admin_headers()).json()
    assert status["version"] == trained
    assert status["metrics"]["candidate"]["ndcg"] > status["metrics"]["popularity"]["ndcg"]
    started = http.post("/v1/admin/train", headers=admin_headers())
    assert started.status_code == 202
    assert started.json()["status"] in {"started", "running"}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = http.get("/v1/admin/model", headers=admin_headers()).json()
        if status["version"] != trained and status["served_version"] == status["version"]:
            break
        time.sleep(0.5)
    assert status["version"] != trained, "the background training published a new model"
    assert status["users"] == 3 * READERS_PER_TOPIC


async def test_the_worker_trains_when_asked(core: Core, redis_url: str, r: redis.Redis) -> None:
    import asyncio
    import os

    await populate(core)
    r.set("pf:train:requested", "test")
    env = {
        **os.environ,
        **redis_env(redis_url),
        "PAPERFEED_ALS_FACTORS": "32",
        "PAPERFEED_TRAIN_INTERVAL_S": "86400",
        "PAPERFEED_LOG_JSON": "true",
    }
    done = await asyncio.to_thread(paperfeed_cli, "worker", "--once", "--poll", "0.1", env=env)
    assert done.returncode == 0, done.stderr
    assert r.get("pf:{model}:current")
    assert not r.exists("pf:train:requested")
    assert not r.exists("pf:train:lock")
    # Its logs are JSON lines.
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["msg"] == "model published" for line in lines)
