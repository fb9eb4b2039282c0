"""A populated service with a trained model, for the tests that need one.

The fixtures ``trained`` and ``api`` are made available to every test module by
``tests/conftest.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from paperfeed.catalog.importers import PaperRecord, paper_from_record
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.settings import Settings
from paperfeed.training.train import train_and_publish
from tests.conftest import LiveServer, live_server, make_settings
from tests.personas import event, history, papers

READERS_PER_TOPIC = 30


def train_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"als_factors": 32, "als_iterations": 10}
    values.update(overrides)
    return make_settings(redis_url, **values)


async def populate(core: Core) -> None:
    records = [paper_from_record(PaperRecord(**p), "admin") for p in papers()]
    await core.catalog.upsert(records, time.time())
    rng = random.Random(1)
    for topic in range(3):
        for _ in range(READERS_PER_TOPIC):
            user = await core.users.register()
            events = [Event(**e) for e in history(topic, rng)]
            await core.ingestor.ingest(user.user_id, events)


MANY_TOPICS = 12
MANY_PAPERS_PER_TOPIC = 50
WORDS_PER_TOPIC = 30


def many_papers() -> list[dict[str, Any]]:
    """A larger synthetic catalog: each topic has its own vocabulary."""
    rng = random.Random(11)
    common = [f"common{w}" for w in range(60)]
    out = []
    for topic in range(MANY_TOPICS):
        words = [f"t{topic}word{w}" for w in range(WORDS_PER_TOPIC)]
        for n in range(MANY_PAPERS_PER_TOPIC):
            out.append(
                {
                    "id": many_id(topic, n),
                    "title": " ".join(rng.sample(words, 4) + rng.sample(common, 2)),
                    "abstract": " ".join(rng.choices(words, k=25) + rng.choices(common, k=25)),
                    "published": "2024-09-01T00:00:00Z",
                }
            )
    return out


def many_id(topic: int, n: int) -> str:
    return f"2409.{topic:02d}{n:03d}"


POPULAR = [1.0 / (n + 1) for n in range(MANY_PAPERS_PER_TOPIC)]


def many_events(
    topic: int, rng: random.Random, size: int, kind: str = "save", skewed: bool = False
) -> list[Event]:
    """A reader of one topic (with an occasional paper of another): views and saves;
    ``skewed``: the first papers of a topic are read far more than the last."""
    chosen: set[str] = set()
    while len(chosen) < size:
        other = rng.random() < 0.1
        t = rng.randrange(MANY_TOPICS) if other else topic
        if skewed:
            n = rng.choices(range(MANY_PAPERS_PER_TOPIC), weights=POPULAR)[0]
        else:
            n = rng.randrange(MANY_PAPERS_PER_TOPIC)
        chosen.add(many_id(t, n))
    events = []
    for pid in sorted(chosen):
        events.append(Event(**event(pid, "view", dwell_ms=rng.randint(5_000, 120_000))))
        events.append(Event(**event(pid, kind)))
    return events


async def populate_many(
    core: Core, readers: int, size: int = 8, seed: int = 3, skewed: bool = False
) -> list[str]:
    """``readers`` synthetic readers (one topic each) over ``many_papers``; their ids."""
    records = [paper_from_record(PaperRecord(**p), "admin") for p in many_papers()]
    await core.catalog.upsert(records, time.time())
    rng = random.Random(seed)
    users = []
    for n in range(readers):
        user = await core.users.register()
        events = many_events(n % MANY_TOPICS, rng, size, skewed=skewed)
        await core.ingestor.ingest(user.user_id, events)
        users.append(user.user_id)
    return users


@pytest.fixture
async def trained(core: Core, redis_url: str) -> str:
    """A populated service with a published model; yields its version."""
    await populate(core)
    report = await train_and_publish(core.redis, train_settings(redis_url))
    assert report.published, report.reason
    assert report.version is not None
    return report.version


@pytest.fixture
def api(trained: str, redis_url: str) -> Iterator[LiveServer]:
    with live_server(train_settings(redis_url)) as server:
        yield server


def feed(http: httpx.Client, auth: dict[str, str], limit: int = 10) -> dict[str, Any]:
    response = http.get("/v1/feed", params={"limit": limit}, headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())
