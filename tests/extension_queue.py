"""Installs that send events the way the extension's offline queue does, for fault tests.

Each one sends a batch and retries a refused batch with the same event ids until the
service acknowledges it; afterwards Redis must hold exactly the acknowledged events.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx
import redis

from paperfeed.events import event_id_hash, seen_hashes
from paperfeed.store import keys
from tests.personas import event


class ExtensionQueue:
    """One install's queue."""

    def __init__(self, url: str, auth: dict[str, str], user_id: str) -> None:
        self.http = httpx.Client(base_url=url, headers=auth, timeout=30)
        self.user_id = user_id
        self.acknowledged: list[str] = []
        self.acknowledged_at: list[float] = []
        self.statuses: Counter[int] = Counter()
        """Answers by status; 0 counts requests that got no answer."""
        self.transport_errors: list[str] = []
        """What each request without an answer met, for the failure message."""
        self.retry_after: set[str] = set()
        """The ``Retry-After`` of every refusal ("" when it had none)."""

    def deliver(self, batch: list[dict[str, Any]], give_up_at: float) -> None:
        while time.monotonic() < give_up_at:
            try:
                response = self.http.post("/v1/events", json={"events": batch})
            except httpx.TransportError as error:
                self.statuses[0] += 1
                self.transport_errors.append(f"{type(error).__name__}: {error}")
                time.sleep(0.1)
                continue
            self.statuses[response.status_code] += 1
            if response.status_code == 200:
                self.acknowledged.extend(e["event_id"] for e in batch)
                self.acknowledged_at.append(time.monotonic())
                return
            self.retry_after.add(response.headers.get("retry-after", ""))
            time.sleep(0.1)  # the extension waits longer; the tests are in a hurry
        raise AssertionError("a batch was never acknowledged")


class Senders:
    """Queues sending 3-event batches about ``paper_ids`` in threads until ``stop()``;
    a batch under way when it is called is still delivered."""

    def __init__(self, queues: list[ExtensionQueue], paper_ids: list[str]) -> None:
        self.queues = queues
        self.paper_ids = paper_ids
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, args=(q,), daemon=True) for q in queues
        ]
        for thread in self._threads:
            thread.start()

    def _send(self, queue: ExtensionQueue) -> None:
        n = 0
        while not self._stop.is_set():
            ids = self.paper_ids
            queue.deliver([event(ids[(n + i) % len(ids)]) for i in range(3)], time.monotonic() + 60)
            n += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)


def assert_exactly_once(client: redis.Redis, queues: list[ExtensionQueue]) -> int:
    """Each install's stored events are exactly its acknowledged ones; their count."""
    for queue in queues:
        seen = seen_hashes(
            client.execute_command("GET", keys.user_seen(queue.user_id), NEVER_DECODE=True)
        )
        logged = str(client.get(keys.user_events(queue.user_id)) or "").splitlines()
        assert len(seen) == len(set(seen)), "an event id remembered twice"
        assert sorted(seen) == sorted(map(event_id_hash, queue.acknowledged)), "seen = acked"
        assert len(logged) == len(queue.acknowledged), "an event stored twice or lost"
        assert int(client.hget(keys.user_profile(queue.user_id), "events") or 0) == len(logged)
    return sum(len(q.acknowledged) for q in queues)
