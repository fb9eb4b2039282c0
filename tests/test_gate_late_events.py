"""The gate under real traffic (issue 25, part 1): events whose ``ts`` is days back
(an offline queue, an imported history) arriving after a model was published are news
to it; a judgement that cannot tell models apart falls back to the random hold-out
instead of keeping the old model; a genuinely worse candidate is still refused. Real
Redis, the real api over HTTP, ``paperfeed worker`` training in its own process."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis

from paperfeed.core import Core
from paperfeed.recsys.ranker import BlendParams
from paperfeed.store import keys
from paperfeed.training import evaluate, learn
from paperfeed.training.train import (
    GATE_GROWTH,
    GATE_MIN_INFORMATIVE,
    GATE_MIN_READERS,
    Decision,
    gate,
    train_and_publish,
)
from tests.conftest import LiveServer, admin_headers, live_server, register
from tests.recsys_fixtures import MANY_TOPICS, many_events, many_papers, train_settings
from tests.test_recommender import WorkerProcess, wait_for

pytestmark = pytest.mark.slow

DAYS = 86_400.0
FIRST_READERS = 60
LATE_READERS = 240
CLICKERS = 30
"""Readers who click two papers at random (nothing any model can predict)."""


@pytest.fixture
def api(redis_url: str, r: redis.Redis) -> Iterator[LiveServer]:
    with live_server(train_settings(redis_url)) as server:
        yield server


@pytest.fixture
def http(api: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=60) as client:
        yield client


def model_status(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/v1/admin/model", headers=admin_headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


def reader(http: httpx.Client, events: list[dict[str, Any]]) -> str:
    """A new install that sends ``events``; its user id."""
    user_id, auth = register(http)
    response = http.post("/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events)
    return user_id


def topic_reader(
    topic: int, rng: random.Random, since: float, until: float
) -> list[dict[str, Any]]:
    """A reader of one topic (a view and a save of each of 8 papers) importing their
    history: each paper read at a random time between ``since`` and ``until``."""
    events = [msgspec.to_builtins(e) for e in many_events(topic, rng, 8)]
    for view, save in zip(events[0::2], events[1::2], strict=True):
        view["ts"] = rng.uniform(since, until - 60)
        save["ts"] = view["ts"] + 30
    return events


def clicker(rng: random.Random, catalog: list[str]) -> list[dict[str, Any]]:
    """Two papers picked at random, clicked now."""
    return [
        {
            "event_id": f"c-{rng.getrandbits(64):x}",
            "paper_id": pid,
            "type": "click",
            "ts": time.time(),
        }
        for pid in rng.sample(catalog, 2)
    ]


def trained_after(http: httpx.Client, r: redis.Redis, decisions: int, what: str) -> dict[str, Any]:
    """Waits for the worker's next decision (kept newest first) and for the request it
    answered to be gone (asked before that, a request counts as already queued)."""
    status = wait_for(
        lambda: (s := model_status(http)) and len(s["decisions"]) > decisions and s,
        240,
        what,
    )
    wait_for(lambda: not r.exists(keys.TRAIN_REQUESTED), 60, f"{what}: the request answered")
    return dict(status)


async def train_worse(redis_url: str) -> Decision:
    """A training whose candidate is ``noise``, in this process."""
    core = Core.connect(train_settings(redis_url))
    try:
        return await train_and_publish(core.redis, train_settings(redis_url), learner=noise)
    finally:
        await core.close()


def noise(*args: Any, **kwargs: Any) -> learn.Learned:
    """A candidate that knows nothing: noise for factors and for text vectors."""
    learned = learn.learn(*args, **kwargs)
    judged = learned.judge_model
    assert judged is not None
    judged.meta.blend = BlendParams()  # the collaborative signal alone
    rng = np.random.default_rng(0)
    judged.item_factors = rng.normal(size=judged.item_factors.shape).astype(np.float32)
    judged._als.item_factors = judged.item_factors
    return learned._replace(text=learned.text[rng.permutation(learned.text.shape[0])])


def test_backdated_readers_after_a_first_model_get_a_model_of_all_readers(
    http: httpx.Client, redis_url: str, r: redis.Redis
) -> None:
    papers = many_papers()
    response = http.post("/v1/admin/papers", json=papers, headers=admin_headers())
    assert response.status_code == 200, response.text
    catalog = [p["id"] for p in papers]
    rng = random.Random(25)
    now = time.time()
    # Readers who imported their history (events of the last five days, as an offline
    # queue or an import sends them); then the worker's first model, of them.
    for n in range(FIRST_READERS):
        reader(http, topic_reader(n % MANY_TOPICS, rng, now - 5 * DAYS, now))
    worker = WorkerProcess(
        redis_url,
        PAPERFEED_TRAIN_INTERVAL_S="86400",
        PAPERFEED_TRAIN_MIN_NEW_EVENTS="1000000000",
    )
    try:
        first = wait_for(lambda: r.get(keys.MODEL_CURRENT), 240, "the worker's first model")
        status = wait_for(
            lambda: (
                (s := model_status(http))["decisions"][:1]
                and s["decisions"][0]["version"] == first
                and s
            ),
            60,
            "the first model's decision",
        )
        assert status["version"] == first
        assert status["decisions"][0]["published"]
        assert status["users"] == FIRST_READERS
        first_cut = status["data_until"]

        # Many more readers import theirs, of the four days up to yesterday: by the
        # client's clock older than much of what the first model learned from, all
        # received after it. And a few readers click two papers at random, now.
        late = [
            topic_reader(n % MANY_TOPICS, rng, now - 5 * DAYS, now - DAYS)
            for n in range(LATE_READERS)
        ]
        assert max(e["ts"] for events in late for e in events) < first_cut
        for events in late:
            reader(http, events)
        for _ in range(CLICKERS):
            reader(http, clicker(rng, catalog))
        everyone = FIRST_READERS + LATE_READERS + CLICKERS

        # A genuinely worse candidate is refused, although it learned from six times the
        # readers: it falls below the current model and popularity on what is new.
        worse = asyncio.run(train_worse(redis_url))
        assert not worse.published, worse
        assert worse.judged_on == "new"
        assert worse.growth is not None
        assert worse.growth >= GATE_GROWTH
        assert worse.rule in ("below_popularity", "worse_than_current"), worse.reason
        assert r.get(keys.MODEL_CURRENT) == first
        status = model_status(http)
        assert status["decisions"][0]["rule"] == worse.rule
        assert status["decisions"][0]["published"] is False

        # The worker, asked to train: judged on the late readers' interactions (news to
        # the first model, whatever their ts), and the model of everyone is published.
        decisions = len(status["decisions"])
        assert http.post("/v1/admin/train", headers=admin_headers()).status_code == 202
        status = trained_after(http, r, decisions, "the requested training")
        second = status["decisions"][0]
        assert second["published"], second
        assert second["judged_on"] == "new", second
        assert second["fallback"] is None
        assert second["since"] == pytest.approx(first_cut)
        assert second["new_readers"] >= LATE_READERS
        assert second["informative_readers"] >= GATE_MIN_INFORMATIVE
        assert second["rule"] in ("beats_popularity", "ties_popularity_grown"), second
        assert second["current_version"] == first
        assert status["version"] == second["version"] != first
        assert status["users"] == everyone
        assert status["data_until"] > first_cut

        # Then only readers clicking at random: new interactions that no ranking can
        # predict. The judgement falls back to the random hold-out against popularity,
        # says so, and publishes (the model of today's readers, not the one before).
        for _ in range(CLICKERS):
            reader(http, clicker(rng, catalog))
        decisions = len(status["decisions"])
        assert http.post("/v1/admin/train", headers=admin_headers()).status_code == 202
        status = trained_after(http, r, decisions, "the next training")
        third = status["decisions"][0]
        assert third["published"], third
        assert third["judged_on"] == "random", third
        assert third["new_readers"] >= GATE_MIN_READERS
        assert third["informative_readers"] < GATE_MIN_INFORMATIVE
        assert "cannot tell models apart" in third["fallback"], third
        assert third["rule"] == "beats_popularity", third
        assert status["version"] == third["version"]
        assert status["users"] == everyone + CLICKERS
    finally:
        assert worker.stop() == 0
    assert "Traceback" not in worker.log


# --- the rules, on made-up rankings --------------------------------------------------------


def metrics(per_reader: list[float]) -> evaluate.Metrics:
    return evaluate.Metrics(
        recall=0.0,
        ndcg=float(np.mean(per_reader)),
        users=len(per_reader),
        per_user_ndcg=per_reader,
    )


READERS = 100
HITS = [0.5 if n % 4 == 0 else 0.0 for n in range(READERS)]
"""A quarter of the readers hit, the same ones."""


def test_a_tie_with_popularity_publishes_only_a_candidate_of_far_more_readers() -> None:
    tie = {"candidate": metrics(HITS), "popularity": metrics(HITS), "current": metrics(HITS)}
    for judged_on in ("new", "random"):
        kept, reason, rule = gate(tie, judged_on, READERS, 0.02, growth=1.3)
        assert (kept, rule) == (False, "below_popularity")
        assert "does not beat popularity" in reason
        published, reason, rule = gate(tie, judged_on, READERS, 0.02, growth=GATE_GROWTH)
        assert (published, rule) == (True, "ties_popularity_grown"), reason
        assert "ties popularity" in reason
    # Without a current model there is no growth: a tie is a refusal.
    assert gate(tie, "random", READERS, 0.02, growth=None)[:2][0] is False


def test_a_worse_candidate_of_far_more_readers_is_still_refused() -> None:
    worse = [h / 5 for h in HITS]
    below_popularity = {"candidate": metrics(worse), "popularity": metrics(HITS)}
    refused, reason, rule = gate(below_popularity, "random", READERS, 0.02, growth=10.0)
    assert (refused, rule) == (False, "below_popularity")
    assert "is below popularity" in reason
    # Ties popularity, but falls below the current model on new interactions.
    weak = {"candidate": metrics(worse), "popularity": metrics(worse), "current": metrics(HITS)}
    refused, reason, rule = gate(weak, "new", READERS, 0.02, growth=10.0)
    assert (refused, rule) == (False, "worse_than_current"), reason
