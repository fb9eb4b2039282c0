"""The worker's guard: a job that fails is logged, retried with backoff, and never stops
the others (real Redis keeps the jobs' state)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

import pytest
import redis

from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.worker import BACKOFF_S, Job, Worker
from tests.conftest import make_settings


def jobs_for(worker: Worker, calls: Counter[str]) -> tuple[Job, Job]:
    async def always(now: float) -> bool:
        return True

    async def broken() -> str:
        calls["broken"] += 1
        raise RuntimeError("broken on purpose")

    async def fine() -> str:
        calls["fine"] += 1
        return "fine"

    return Job("broken", always, broken), Job("fine", always, fine)


async def test_a_failing_job_backs_off_and_never_stops_the_others(
    core: Core, redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(make_settings(redis_url), core.redis, poll_s=0.05)
    calls: Counter[str] = Counter()
    broken, fine = jobs_for(worker, calls)
    worker.jobs = [broken, fine]
    with caplog.at_level(logging.INFO, logger="paperfeed.worker"):
        await worker.run(once=True)
    assert calls == {"broken": 1, "fine": 1}
    assert broken.failures == 1
    assert broken.retry_at >= time.time() + BACKOFF_S - 1
    failure = next(rec for rec in caplog.records if rec.levelname == "ERROR")
    assert failure.exc_info is not None  # an unexpected error keeps its traceback
    assert r.hget(keys.WORKER_STATE, "broken:failures") == "1"
    assert "broken on purpose" in (r.hget(keys.WORKER_STATE, "broken:last_error") or "")
    # Inside its backoff the broken job waits; the other goes on.
    await worker.run(once=True)
    assert calls == {"broken": 1, "fine": 2}
    # Each failure in a row doubles the wait (up to a cap): no crash loop.
    broken.retry_at = 0.0
    await worker.run(once=True)
    assert broken.failures == 2
    assert broken.retry_at >= time.time() + 2 * BACKOFF_S - 1
    # A success clears the failures.
    broken.run = fine.run
    broken.retry_at = 0.0
    await worker.run(once=True)
    assert broken.failures == 0
    assert r.hget(keys.WORKER_STATE, "broken:failures") == "0"


async def test_the_running_worker_keeps_its_loops_and_heartbeat_through_failures(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    worker = Worker(make_settings(redis_url), core.redis, poll_s=0.02)
    calls: Counter[str] = Counter()
    broken, fine = jobs_for(worker, calls)
    worker.jobs = [broken, fine]
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 10
    while calls["fine"] < 5:
        assert time.monotonic() < deadline, calls
        await asyncio.sleep(0.02)
    assert r.get(keys.WORKER_HEARTBEAT)
    worker.stopping.set()
    await asyncio.wait_for(running, 10)
    assert calls["broken"] == 1  # backing off, not looping
