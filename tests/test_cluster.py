"""A Redis Cluster primary dies under load: the service keeps going and loses nothing.

The rest of the integration suite (ingest, training, feed, export, erasure) runs against a
cluster through the ``cluster`` marker; this module is about losing a node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paperfeed.store import keys
from paperfeed.store.embedded import redis_server_binary
from tests.conftest import CLUSTER_URLS, admin_headers, live_server, make_settings, register
from tests.extension_queue import ExtensionQueue, Senders, assert_exactly_once
from tests.redis_cluster import LocalCluster, start_cluster

pytestmark = pytest.mark.slow

PAPERS = [{"id": f"2412.{n:05d}", "title": f"Cluster paper {n}"} for n in range(1, 11)]
INSTALLS = 12


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = start_cluster(redis_server_binary(), tmp_path)
    CLUSTER_URLS.add(local.url)
    yield local
    local.stop()
    CLUSTER_URLS.discard(local.url)


def test_killed_primary_fails_over_and_no_acknowledged_event_is_lost(
    cluster: LocalCluster,
) -> None:
    settings = make_settings(
        cluster.url, redis_wait_replicas=1, redis_wait_timeout_ms=1_000, model_poll_s=1.0
    )
    assert settings.redis_cluster
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        installs = [register(http) for _ in range(INSTALLS)]
        senders = [ExtensionQueue(server.url, auth, user_id) for user_id, auth in installs]
        victim = cluster.primary_of(keys.user_profile(installs[0][0]))
        on_victim = [cluster.primary_of(keys.user_profile(u)) == victim for u, _ in installs]
        sending = Senders(senders, [p["id"] for p in PAPERS])
        # Every install has had a batch acknowledged before the kill.
        started = time.monotonic()
        while not all(s.acknowledged_at for s in senders):
            assert time.monotonic() < started + 30, "installs are not being served"
            time.sleep(0.05)
        killed_at = time.monotonic()
        cluster.kill(victim)
        # Its replica is promoted after the node timeout ...
        deadline = time.monotonic() + 30
        while cluster.primary_of(keys.user_profile(installs[0][0])) == victim:
            assert time.monotonic() < deadline, "no replica took over"
            time.sleep(0.2)
        promoted_at = time.monotonic()
        time.sleep(1.0)
        # ... and the old primary comes back (from its AOF) as the new primary's replica.
        cluster.start_node(victim)
        cluster.wait_healthy()
        while cluster.roles().get(victim) != "slave":
            assert time.monotonic() < deadline + 30, "the old primary did not rejoin"
            time.sleep(0.2)
        rejoined_at = time.monotonic()
        # Once the rejoined replica has synced, WAIT confirms again on that shard too.
        while not all(any(t > rejoined_at for t in s.acknowledged_at) for s in senders):
            waiting = [dict(s.statuses) for s in senders if not s.acknowledged_at[-1:] or
                       s.acknowledged_at[-1] <= rejoined_at]  # fmt: skip
            assert time.monotonic() < rejoined_at + 60, (
                f"the victim's shard accepts again; roles {cluster.roles()}, waiting {waiting}"
            )
            time.sleep(0.2)
        sending.stop()  # batches under way are still delivered

    # Every ingest also touches shared keys (catalog, trending, stats) that live on every
    # shard, so all installs wait out the failover; afterwards all are served again.
    for sender in senders:
        assert any(promoted_at < t < rejoined_at for t in sender.acknowledged_at) or any(
            t > rejoined_at for t in sender.acknowledged_at
        )
        # never a 5xx but 503, never a dropped connection
        assert set(sender.statuses) <= {200, 503}, (sender.statuses, sender.transport_errors)
        assert "" not in sender.retry_after, "every 503 says when to retry"
    outage = max(min(t for t in s.acknowledged_at if t > killed_at) - killed_at for s in senders)
    print(f"longest wait of an install after the kill: {outage:.2f} s")
    assert outage < 15
    assert any(on_victim)
    assert not all(on_victim)
    assert sum(s.statuses[503] for s, hurt in zip(senders, on_victim, strict=True) if hurt)

    # Every acknowledged event is stored exactly once, on whichever node owns it now; a
    # refused batch that had landed before its retry made that retry a duplicate.
    with cluster.client() as r:
        assert_exactly_once(r, senders)
