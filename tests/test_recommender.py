"""The recommender end to end: real Redis, real training, the real api over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis

from paperfeed.catalog.importers import PaperRecord, paper_from_record
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.recsys.ranker import BlendParams
from paperfeed.store import keys
from paperfeed.training import learn
from paperfeed.training.train import GATE_MIN_READERS, train_and_publish
from tests.conftest import (
    LiveServer,
    admin_headers,
    live_servers,
    redis_env,
    register,
)
from tests.personas import event, paper_id, papers, topic_of
from tests.recsys_fixtures import (
    feed,
    many_events,
    populate,
    populate_many,
    train_settings,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def send(http: httpx.Client, auth: dict[str, str], events: list[dict[str, Any]]) -> None:
    response = http.post("/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 200, response.text


def topics(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter(topic_of(item["paper"]["id"]) for item in items)


def history_events(topic: int, n: int) -> list[dict[str, Any]]:
    pid = paper_id(topic, n)
    return [event(pid, "view", dwell_ms=60_000), event(pid, "save")]


def ids(answer: dict[str, Any]) -> list[str]:
    return [item["paper"]["id"] for item in answer["items"]]


# --- the feed ---------------------------------------------------------------------------


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
    assert ids(graph_feed) != ids(robot_feed)
    # Every item says why it is there; personal ones name a paper the reader saved.
    assert all(item["reasons"] for item in graph_feed["items"])
    assert any("because you saved" in r for i in graph_feed["items"] for r in i["reasons"])


def test_a_single_upvote_changes_the_next_feed(api: LiveServer) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    send(http, auth, history_events(0, 1))
    before = feed(http, auth, limit=200)
    send(http, auth, [event(paper_id(2, 5), "upvote")])
    after = feed(http, auth, limit=200)
    assert ids(before)[:20] != ids(after)[:20]

    def first_protein(answer: dict[str, Any]) -> int:
        return next(i for i, pid in enumerate(ids(answer)) if topic_of(pid) == "proteins")

    assert first_protein(after) < first_protein(before)
    assert paper_id(2, 5) not in ids(after)  # they have it


def test_a_dismissed_paper_never_returns(api: LiveServer, redis_url: str) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    send(http, auth, history_events(0, 2))
    top = feed(http, auth)["items"][0]["paper"]["id"]
    send(http, auth, [event(top, "dismiss")])
    assert top not in ids(feed(http, auth, limit=200))

    async def retrain() -> str | None:
        core = Core.connect(train_settings(redis_url))
        try:
            decision = await train_and_publish(
                core.redis, train_settings(redis_url, gate_tolerance=1.0)
            )
        finally:
            await core.close()
        return decision.version if decision.published else None

    # Not even after the dismissal went into a new model (served from the next feed on).
    newer = asyncio.run(retrain())
    assert newer is not None
    answer = feed(http, auth, limit=200)
    assert answer["model_version"] == newer
    assert top not in ids(answer)
    send(http, auth, [event(top, "undismiss")])
    assert top in ids(feed(http, auth, limit=200))


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
        return ids(feed(http, auth, limit=200)).index("2411.77777")

    # The very next feed knows the paper (the model has no interaction with it: its
    # factors come from the papers nearest in text).
    graph_items = feed(http, graphs, limit=10)["items"]
    assert "2411.77777" in [i["paper"]["id"] for i in graph_items]
    item = next(i for i in graph_items if i["paper"]["id"] == "2411.77777")
    # New, and in the topic of the reader's own papers (topics learned from the text).
    new_in = [r for r in item["reasons"] if r.startswith("new in ")]
    assert new_in, item["reasons"]
    assert "graph" in new_in[0]
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


def test_first_upvotes_steer_the_feed_before_any_model(http: httpx.Client) -> None:
    """No model yet: the feed follows the reader's own papers by their text."""
    http.post("/v1/admin/papers", json=papers(), headers=admin_headers())
    # Trending leans to robots: without personal signal, that is what a reader sees.
    _, others = register(http)
    send(http, others, [ev for n in range(6) for ev in history_events(1, n)])
    _, auth = register(http)
    before = feed(http, auth)
    assert topics(before["items"])["proteins"] <= 4, topics(before["items"])
    send(http, auth, [event(paper_id(2, n), "upvote") for n in (1, 2, 3)])
    after = feed(http, auth)
    assert after["model_version"] is None
    assert topics(after["items"])["proteins"] >= 8, topics(after["items"])
    assert any("because you upvoted" in r for i in after["items"] for r in i["reasons"])


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


# --- training, the gate, the decisions ---------------------------------------------------


async def test_too_little_data_trains_nothing_and_says_why(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    empty = await train_and_publish(core.redis, train_settings(redis_url))
    assert not empty.published
    assert "not enough interactions" in empty.reason
    assert r.get(keys.MODEL_CURRENT) is None
    kept = await core.models.decisions()
    assert kept[0]["reason"] == empty.reason


async def test_a_handful_of_readers_get_a_model_and_every_retraining_publishes(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """A small deployment (`make run`, a few readers): too few to judge, so each
    training publishes, and the decision says so."""
    records = [paper_from_record(PaperRecord(**p), "admin") for p in papers()]
    await core.catalog.upsert(records, time.time())
    readers = []
    for topic in (0, 2):
        user = await core.users.register()
        await core.ingestor.ingest(
            user.user_id, [Event(**e) for n in range(4) for e in history_events(topic, n)]
        )
        readers.append(user.user_id)
    settings = train_settings(redis_url)
    first = await train_and_publish(core.redis, settings)
    assert first.published, first.reason
    assert "too few readers to judge" in first.reason
    await core.ingestor.ingest(
        readers[0], [Event(**e) for n in range(5, 8) for e in history_events(0, n)]
    )
    second = await train_and_publish(core.redis, settings)
    assert second.published, second.reason
    assert second.version != first.version
    assert r.get(keys.MODEL_CURRENT) == second.version
    assert [d["version"] for d in await core.models.decisions()][:2] == [
        second.version,
        first.version,
    ]


async def test_readers_of_two_papers_each_get_a_model_and_a_recorded_decision(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """Five readers who liked two papers each: no reader has enough liked papers to hold
    some out, so nothing can be judged. That is a decision like the others (published,
    as with too few readers to judge, and kept), not an error."""
    records = [paper_from_record(PaperRecord(**p), "admin") for p in papers()]
    await core.catalog.upsert(records, time.time())
    for n in range(5):
        user = await core.users.register()
        await core.ingestor.ingest(
            user.user_id,
            [Event(**e) for k in range(2) for e in history_events(n % 3, 2 * n + k)],
        )
    decision = await train_and_publish(core.redis, train_settings(redis_url))
    assert decision.published, decision.reason
    assert "too few readers to judge" in decision.reason
    assert (decision.judged_on, decision.judged_readers) == ("none", 0)
    assert r.get(keys.MODEL_CURRENT) == decision.version
    kept = await core.models.decisions()
    assert (kept[0]["version"], kept[0]["reason"]) == (decision.version, decision.reason)


async def test_thousands_of_readers_retrain_on_new_interactions_and_publish(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """The gate judges a retraining on what readers did after the current model's
    cut-off: neither model saw it; the new model learns from all of it."""
    users = await populate_many(core, readers=2_000)
    settings = train_settings(redis_url)
    first = await train_and_publish(core.redis, settings)
    assert first.published, first.reason
    assert first.judged_on == "random"
    assert first.searched
    assert first.choices is not None
    assert first.metrics["candidate"]["ndcg"] > first.metrics["popularity"]["ndcg"]
    # 10% of the readers each save 5 more papers of their topic.
    rng = random.Random(5)
    for n, user_id in enumerate(users[::10]):
        await core.ingestor.ingest(user_id, many_events((n * 10) % 12, rng, 5))
    second = await train_and_publish(core.redis, settings)
    assert second.judged_on == "new", second
    assert second.judged_readers == len(users[::10])
    assert second.since is not None
    assert second.current_version == first.version
    assert not second.searched  # the search of the first run is reused
    assert second.published, (second.reason, second.metrics)
    assert second.metrics["candidate"]["ndcg"] > second.metrics["popularity"]["ndcg"]
    assert r.get(keys.MODEL_CURRENT) == second.version
    current = await core.models.meta(second.version or "")
    assert current is not None
    assert current.n_interactions > first.interactions
    assert current.data_until > (second.since or 0)


async def test_a_worse_candidate_is_refused(core: Core, redis_url: str, r: redis.Redis) -> None:
    """A first model that knows nothing (noise for factors and for text vectors) loses to
    popularity; a candidate trained on shuffled interactions (every paper's interactions
    given to another paper) loses to the current model on the new interactions."""

    def noise(*args: Any, **kwargs: Any) -> learn.Learned:
        learned = learn.learn(*args, **kwargs)
        judged = learned.judge_model
        assert judged is not None
        judged.meta.blend = BlendParams()  # the collaborative signal alone
        rng = np.random.default_rng(0)
        shape = judged.item_factors.shape
        judged.item_factors = rng.normal(size=shape).astype(np.float32)
        judged._als.item_factors = judged.item_factors
        return learned._replace(text=learned.text[rng.permutation(learned.text.shape[0])])

    def shuffled(weights: Any, *args: Any, **kwargs: Any) -> learn.Learned:
        order = np.random.default_rng(0).permutation(weights.shape[1])
        return learn.learn(weights[:, order], *args, **kwargs)

    # Readers favour some papers of their topic: popularity means something.
    users = await populate_many(core, readers=600, skewed=True)
    settings = train_settings(redis_url)
    broken = await train_and_publish(core.redis, settings, learner=noise)
    assert not broken.published
    assert "does not beat popularity" in broken.reason
    assert r.get(keys.MODEL_CURRENT) is None
    first = await train_and_publish(core.redis, settings)
    assert first.published
    rng = random.Random(8)
    for n, user_id in enumerate(users[: GATE_MIN_READERS * 4]):
        await core.ingestor.ingest(user_id, many_events(n % 12, rng, 4, skewed=True))
    worse = await train_and_publish(core.redis, settings, learner=shuffled)
    assert not worse.published, worse
    assert worse.judged_on == "new"
    assert "worse than the current model" in worse.reason or "popularity" in worse.reason
    assert worse.metrics["candidate"]["ndcg"] < worse.metrics["current"]["ndcg"]
    assert r.get(keys.MODEL_CURRENT) == first.version
    decisions = await core.models.decisions()
    assert decisions[0]["published"] is False
    assert decisions[0]["reason"] == worse.reason


def test_both_api_processes_switch_to_a_new_version(
    trained: str, redis_url: str, r: redis.Redis
) -> None:
    with live_servers(train_settings(redis_url)) as (one, two):
        clients = [httpx.Client(base_url=s.url) for s in (one, two)]
        auths = [register(c)[1] for c in clients]

        def versions() -> set[str]:
            return {feed(c, a)["model_version"] for c, a in zip(clients, auths, strict=True)}

        assert versions() == {trained}

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
        # Each feed checks the published version: the next one is the new model's.
        assert versions() == {newer}
        # A version whose blob cannot be loaded: both keep serving the one they have.
        r.set("pf:{model}:broken:meta", msgspec.json.encode({"version": "broken"}))
        r.set("pf:{model}:broken:blob", b"not a model")
        r.set("pf:{model}:current", "broken")
        assert versions() == {newer}


# --- the worker and the admin api -------------------------------------------------------


class WorkerProcess:
    """``paperfeed worker`` in its own process, its log kept."""

    def __init__(self, redis_url: str, **settings: str) -> None:
        env = {
            **os.environ,
            **redis_env(redis_url),
            "PAPERFEED_ALS_FACTORS": "32",
            "PAPERFEED_ALS_ITERATIONS": "8",
            "PAPERFEED_SEARCH_TRIALS": "3",
            "PAPERFEED_FIRST_TRAIN_DELAY_S": "0.5",
            "PAPERFEED_LOG_JSON": "true",
            **settings,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paperfeed.cli", "worker", "--poll", "0.2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = ""

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        _, self.log = self.process.communicate(timeout=60)
        return self.process.returncode

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.splitlines() if line.startswith("{")]


@pytest.fixture
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    running = WorkerProcess(redis_url)
    yield running
    if running.process.poll() is None:
        running.stop()


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


async def test_the_worker_trains_a_first_model_with_no_command(
    core: Core, r: redis.Redis, worker: WorkerProcess
) -> None:
    await populate(core)
    version = await asyncio.to_thread(
        wait_for, lambda: r.get(keys.MODEL_CURRENT), 120, "the worker's first model"
    )

    def finished() -> bool:
        last = r.lindex(keys.MODEL_DECISIONS, 0)
        ran = r.hget(keys.WORKER_STATE, "train:last_run")
        return bool(last and ran and float(ran) >= json.loads(last)["at"])

    await asyncio.to_thread(wait_for, finished, 60, "the training job to finish")
    assert worker.stop() == 0
    assert "Traceback" not in worker.log
    done = [line for line in worker.lines() if line["msg"] == "job done" and line["job"] == "train"]
    assert any("published" in line["summary"] and version in line["summary"] for line in done)
    assert any(line["msg"] == "training progress" for line in worker.lines())


def test_admin_train_requests_queue_one_training_and_never_a_traceback(
    api: LiveServer,
    trained: str,
    redis_url: str,
    r: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http = httpx.Client(base_url=api.url)
    assert http.post("/v1/admin/train").status_code == 401
    status = http.get("/v1/admin/model", headers=admin_headers()).json()
    assert status["version"] == trained
    assert status["metrics"]["candidate"]["ndcg"] > status["metrics"]["popularity"]["ndcg"]
    assert status["params"]["choices"]["text"] in ("words", "bigrams")
    assert status["params"]["blend"]["collaborative"] is True
    assert status["decisions"][0]["version"] == trained
    # The training's seconds by stage: its own, then learn's under the names of
    # learn's stages (the gate judged a hold-out: the judged model was learned too).
    assert status["decisions"][0]["judged_on"] == "random"
    stages = list(status["decisions"][0]["stages"])
    assert [name for name in stages if name.startswith("learn.")] == [
        f"learn.{name}" for name in learn.STAGES
    ]
    assert [name for name in stages if not name.startswith("learn.")] == [
        "read", "prepare", "learn", "gate", "publish"
    ]  # fmt: skip
    first = http.post("/v1/admin/train", headers=admin_headers())
    second = http.post("/v1/admin/train", headers=admin_headers())
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["status"] == "queued"
    assert second.json()["status"] == "already queued"
    assert first.json()["worker_seen_s"] is None  # no worker yet: nothing would train
    decisions = len(status["decisions"])
    running = WorkerProcess(redis_url, PAPERFEED_TRAIN_INTERVAL_S="86400")
    try:
        wait_for(
            lambda: (
                len(http.get("/v1/admin/model", headers=admin_headers()).json()["decisions"])
                > decisions
            ),
            120,
            "the requested training",
        )
        # The request is answered once the training finished (its decision is kept).
        wait_for(lambda: not r.exists(keys.TRAIN_REQUESTED), 30, "the request answered")
        seen = http.post("/v1/admin/train", headers=admin_headers()).json()
        assert seen["worker_seen_s"] is not None
        assert seen["worker_seen_s"] < 60
    finally:
        assert running.stop() == 0
    after = http.get("/v1/admin/model", headers=admin_headers()).json()
    assert len(after["decisions"]) == decisions + 1  # two requests, one training
    assert "Traceback" not in running.log
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]
    # /metrics: the served model's age and the last gate decision.
    wait_for(
        lambda: "paperfeed_model_gate_published" in http.get("/metrics").text, 30, "gate metric"
    )
    metrics = http.get("/metrics").text
    assert "paperfeed_model_age_seconds" in metrics
    assert 'paperfeed_model_gate_ndcg{model="candidate"}' in metrics


def test_a_restarted_worker_does_not_retrain_at_once(
    trained: str, redis_url: str, r: redis.Redis
) -> None:
    """The worker's state is in Redis: a new worker goes on from it."""
    before = r.llen(keys.MODEL_DECISIONS)
    env = {**os.environ, **redis_env(redis_url), "PAPERFEED_LOG_JSON": "true"}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "paperfeed.cli", "worker", "--once"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert r.llen(keys.MODEL_DECISIONS) == before
    assert r.get(keys.MODEL_CURRENT) == trained
