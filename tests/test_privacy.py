"""Export and erasure."""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.conftest import admin_headers, register
from tests.test_events import event, trending_scores

pytestmark = pytest.mark.cluster


def test_export_holds_everything_and_delete_erases_everywhere(
    http: httpx.Client, r: redis.Redis
) -> None:
    papers = [{"id": "2411.00010", "title": "Kept"}, {"id": "2411.00011", "title": "Also"}]
    http.post("/v1/admin/papers", json=papers, headers=admin_headers())
    stays_id, stays = register(http)
    http.post("/v1/events", json={"events": [event("2411.00010", "upvote")]}, headers=stays)
    leaves_id, leaves = register(http)
    batch = [
        event("2411.00010", "save"),
        event("2411.00011", "view", dwell_ms=90_000),
        event("2411.55555", "view", title="Unknown yet"),
    ]
    assert http.post("/v1/events", json={"events": batch}, headers=leaves).status_code == 200

    export = http.get("/v1/me/export", headers=leaves).json()
    assert export["user_id"] == leaves_id
    assert export["events_total"] == 3
    kept = {(e["paper_id"], e["type"], e.get("dwell_ms", 0)) for e in export["events"]}
    assert kept == {(e["paper_id"], e["type"], e.get("dwell_ms", 0)) for e in batch}
    # The page's title of the paper the catalog lacks is the reader's (and only theirs).
    assert export["page_titles"] == {"2411.55555": "Unknown yet"}
    assert export["papers"]["2411.00010"]["saved"]
    assert export["papers"]["2411.00011"]["dwell_ms"] == 90_000
    assert "token" not in str(export).lower()

    before = trending_scores(http)
    assert before["2411.00010"] == pytest.approx(4 + 3, rel=1e-3)
    assert r.sismember("pf:cand:{c}:by:2411.55555", leaves_id)

    assert http.delete("/v1/me", headers=leaves).status_code == 204
    assert http.get("/v1/me/export", headers=leaves).status_code == 401
    after = trending_scores(http)
    assert after["2411.00010"] == pytest.approx(4, rel=1e-3)  # only the other reader's upvote
    assert "2411.00011" not in after
    assert not r.sismember("pf:cand:{c}:by:2411.55555", leaves_id)
    assert r.zscore("pf:users", leaves_id) is None
    leftover = [k for k in r.scan_iter("*") if leaves_id in str(k)]
    assert leftover == []
    assert http.get("/v1/me/export", headers=stays).json()["user_id"] == stays_id


def test_installs_inactive_for_the_retention_period_are_forgotten(
    http: httpx.Client, redis_url: str, r: redis.Redis
) -> None:
    import os
    import time

    from tests.conftest import paperfeed_cli, redis_env

    gone_id, gone = register(http)
    _, kept = register(http)
    http.post("/v1/events", json={"events": [event("2411.00011", "save")]}, headers=gone)
    http.post("/v1/events", json={"events": [event("2411.00012", "save")]}, headers=kept)
    # The first install was last seen 400 days ago.
    r.zadd("pf:users", {gone_id: time.time() - 400 * 86_400})
    env = {**os.environ, **redis_env(redis_url), "PAPERFEED_FORGET_INACTIVE_DAYS": "365"}
    dry = paperfeed_cli("forget-inactive", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would erase 1 installs" in dry.stdout
    assert http.get("/v1/me/export", headers=gone).status_code == 200  # nothing erased yet
    done = paperfeed_cli("forget-inactive", env=env)
    assert done.returncode == 0, done.stderr
    assert "erased 1 installs" in done.stdout
    assert http.get("/v1/me/export", headers=gone).status_code == 401
    assert [k for k in r.scan_iter("*") if gone_id in str(k)] == []
    assert http.get("/v1/me/export", headers=kept).json()["events_total"] == 1
