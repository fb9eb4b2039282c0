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
from paperfeed.recsys.train import train_and_publish
from paperfeed.settings import Settings
from tests.conftest import LiveServer, live_server, make_settings
from tests.personas import history, papers

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
