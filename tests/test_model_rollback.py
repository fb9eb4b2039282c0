"""Rolling a model back: ``POST /v1/admin/model/rollback`` (docs/runbook.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis

from paperfeed.catalog.importers import PaperRecord, paper_from_record
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.store import keys
from paperfeed.training.train import train_and_publish
from tests.conftest import admin_headers, live_server
from tests.personas import event, paper_id, papers
from tests.recsys_fixtures import train_settings

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def history_events(topic: int, n: int) -> list[Event]:
    pid = paper_id(topic, n)
    return [Event(**event(pid, "view", dwell_ms=60_000)), Event(**event(pid, "save"))]


async def publish_two_versions(core: Core, redis_url: str) -> tuple[str, str]:
    """Two readers; a model, more events, a second model: (first, second) versions."""
    records = [paper_from_record(PaperRecord(**p), "admin") for p in papers()]
    await core.catalog.upsert(records, time.time())
    readers = []
    for topic in (0, 2):
        user = await core.users.register()
        await core.ingestor.ingest(
            user.user_id, [e for n in range(4) for e in history_events(topic, n)]
        )
        readers.append(user.user_id)
    settings = train_settings(redis_url)
    first = await train_and_publish(core.redis, settings)
    assert first.published, first.reason
    assert first.version
    await core.ingestor.ingest(readers[0], [e for n in range(5, 8) for e in history_events(0, n)])
    second = await train_and_publish(core.redis, settings)
    assert second.published, second.reason
    assert second.version
    assert second.version != first.version
    return first.version, second.version


async def wait_for_version(
    http: httpx.AsyncClient, auth: dict[str, str], version: str
) -> dict[str, Any]:
    """The caller's feed once it is served by ``version`` (api processes poll for it)."""
    deadline = time.monotonic() + 20
    while True:
        answer = await http.get("/v1/feed", params={"limit": 5}, headers=auth)
        assert answer.status_code == 200, answer.text
        if answer.json()["model_version"] == version:
            return dict(answer.json())
        assert time.monotonic() < deadline, f"the feed never served {version}: {answer.json()}"
        await asyncio.sleep(0.05)


async def test_a_rollback_serves_the_earlier_version_and_is_recorded(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    first, second = await publish_two_versions(core, redis_url)
    with live_server(train_settings(redis_url)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answer = await http.post("/v1/installs")
            auth = {"Authorization": f"Bearer {answer.json()['token']}"}
            await wait_for_version(http, auth, second)

            # No admin token, a reader's token: refused, nothing changes.
            refused = await http.post("/v1/admin/model/rollback", json={})
            assert refused.status_code == 401
            refused = await http.post("/v1/admin/model/rollback", json={}, headers=auth)
            assert refused.status_code == 403

            answer = await http.post("/v1/admin/model/rollback", json={}, headers=admin_headers())
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["kind"], body["version"], body["previous_version"]) == (
                "rollback",
                first,
                second,
            )
            assert r.get(keys.MODEL_CURRENT) == first
            served = await wait_for_version(http, auth, first)
            assert served["items"]

            status = (await http.get("/v1/admin/model", headers=admin_headers())).json()
            assert (status["version"], status["served_version"]) == (first, first)
            latest = status["decisions"][0]
            assert (latest["kind"], latest["version"], latest["previous_version"]) == (
                "rollback",
                first,
                second,
            )
            assert second in latest["reason"]
            assert first in latest["reason"]
            # The training runs' decisions are still there, after it.
            assert [d["version"] for d in status["decisions"][1:3]] == [second, first]

            # The gauges of the gate mirror training runs, not the rollback.
            metrics = (await http.get("/metrics")).text
            assert "paperfeed_model_gate_published 1.0" in metrics
            assert "paperfeed_model_gate_refusals_in_a_row 0.0" in metrics

            # Forward again by naming the version.
            answer = await http.post(
                "/v1/admin/model/rollback", json={"version": second}, headers=admin_headers()
            )
            assert answer.status_code == 200, answer.text
            await wait_for_version(http, auth, second)


async def test_a_bad_rollback_is_a_400_naming_the_version(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    with live_server(train_settings(redis_url)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            # Nothing published yet: nothing to roll back to.
            answer = await http.post("/v1/admin/model/rollback", json={}, headers=admin_headers())
            assert answer.status_code == 400, answer.text
            assert "version" in answer.text
            first, second = await publish_two_versions(core, redis_url)
            for body, says in (
                ({"version": "no-such-version"}, "not a kept model version"),
                ({"version": second}, "current model version already"),
                ({"version": ""}, "version"),
                ({"version": 3}, "version"),
                ({"model": first}, "model"),
            ):
                answer = await http.post(
                    "/v1/admin/model/rollback", json=body, headers=admin_headers()
                )
                assert answer.status_code == 400, (body, answer.text)
                assert says in answer.text, (body, answer.text)
            assert r.get(keys.MODEL_CURRENT) == second
            # A kept version whose blob is gone is refused too.
            r.delete(keys.model_blob(first))
            answer = await http.post(
                "/v1/admin/model/rollback", json={"version": first}, headers=admin_headers()
            )
            assert answer.status_code == 400, answer.text
            assert "incomplete" in answer.text
            assert r.get(keys.MODEL_CURRENT) == second
            assert all(d.get("kind") != "rollback" for d in await core.models.decisions())
