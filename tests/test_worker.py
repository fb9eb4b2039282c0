"""The worker's guard: a job that fails is logged, retried with backoff, and never stops
the others (real Redis keeps the jobs' state)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.worker import ALIVE_FILE, ALIVE_MAX_AGE_S, BACKOFF_S, Job, Worker, worker_alive
from tests.conftest import make_settings, paperfeed_cli, redis_env
from tests.recsys_fixtures import populate


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


async def test_the_liveness_probe_fails_when_the_loop_stops_or_a_job_hangs(
    core: Core, redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, data_dir=str(tmp_path))
    env = {**os.environ, **redis_env(redis_url), "PAPERFEED_DATA_DIR": str(tmp_path)}
    assert paperfeed_cli("worker-alive", env=env).returncode == 1  # no worker ran here
    worker = Worker(settings, core.redis, poll_s=0.02)
    release = asyncio.Event()

    async def hangs() -> str:
        await release.wait()  # a Redis call that never answers, say
        return "done"

    async def always_due(now: float) -> bool:
        return True

    worker.jobs = [Job("train", always_due, hangs)]
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 10
    while not (tmp_path / ALIVE_FILE).exists() or not worker.jobs[0].started_at:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    alive = await asyncio.to_thread(paperfeed_cli, "worker-alive", env=env)
    assert alive.returncode == 0, alive.stderr
    # The loop turns, but the training started seven hours ago and has not returned.
    worker.jobs[0].started_at = time.time() - 7 * 3600
    while "job train has been running" not in str(worker_alive(settings)):
        assert time.monotonic() < deadline + 10
        await asyncio.sleep(0.02)
    stuck = await asyncio.to_thread(paperfeed_cli, "worker-alive", env=env)
    assert stuck.returncode == 1
    assert "job train has been running" in stuck.stderr
    release.set()
    # A loop that stops turning (hung): after ALIVE_MAX_AGE_S the probe fails.
    stale = worker_alive(settings, time.time() + ALIVE_MAX_AGE_S + 1)
    assert stale is not None
    assert "last turned" in stale
    # A worker that stopped cleanly is not alive at once.
    worker.stopping.set()
    await asyncio.wait_for(running, 10)
    stopped = await asyncio.to_thread(paperfeed_cli, "worker-alive", env=env)
    assert stopped.returncode == 1
    assert "the worker stopped" in stopped.stderr


async def test_a_failed_training_keeps_its_request_and_is_retried_after_its_backoff(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """The trainer fails (a catalog record it cannot read): the admin's request stays
    queued and the events stay uncounted, so the job tries again after its backoff
    (before, the request was consumed and the events counted first: no retry until new
    events came). The training that succeeds answers the request."""
    await populate(core)
    r.hset(keys.PAPERS, "2499.99999", "{not a paper")
    queued, _, _ = await core.models.request_training()
    assert queued
    settings = make_settings(redis_url, als_factors=32, als_iterations=8)
    worker = Worker(settings, core.redis, poll_s=0.05)
    train = next(job for job in worker.jobs if job.name == "train")
    worker.jobs = [train]
    await worker.run(once=True)
    assert train.failures == 1
    assert train.retry_at >= time.time() + BACKOFF_S - 1
    assert r.exists(keys.TRAIN_REQUESTED)
    assert r.hget(keys.WORKER_STATE, "train:events") is None
    assert r.llen(keys.MODEL_DECISIONS) == 0
    await worker.run(once=True)  # inside its backoff: not tried again
    assert train.failures == 1
    r.hdel(keys.PAPERS, "2499.99999")  # the cause is fixed; the backoff passes
    train.retry_at = 0.0
    assert await worker.train_due(time.time())
    await worker.run(once=True)
    assert train.failures == 0
    assert not r.exists(keys.TRAIN_REQUESTED)
    assert r.hget(keys.WORKER_STATE, "train:events") == r.hget(keys.STATS, "events")
    assert r.get(keys.MODEL_CURRENT)
    assert r.llen(keys.MODEL_DECISIONS) == 1
    assert not await worker.train_due(time.time())


async def test_asking_for_a_training_while_one_runs_queues_another(
    core: Core, r: redis.Redis
) -> None:
    """The worker answers the request it trained for when that training ends; one made
    while it runs is another request (what arrived meanwhile is trained on next)."""
    queued, running, _ = await core.models.request_training()
    assert (queued, running) == (True, False)
    first = r.get(keys.TRAIN_REQUESTED)
    queued, running, _ = await core.models.request_training()
    assert (queued, running) == (False, False)  # already queued, nothing runs
    r.set(keys.TRAIN_LOCK, "a trainer", ex=60)  # a training runs (it took the first)
    queued, running, _ = await core.models.request_training()
    assert (queued, running) == (True, True)
    assert r.get(keys.TRAIN_REQUESTED) != first


# CPython up to 3.11.7 counts the AST constructor's depth per interpreter, not per thread
# (gh-106905, fixed in 3.11.8): two threads parsing source at once break each other's
# parse ("AST constructor recursion depth mismatch"). numba parses as it compiles in a
# worker thread; anyio parses its own source the first time httpx closes a client. The
# GC callback below hands the GIL over mid-parse, as a finalizer can, so on such a
# Python the overlap happens on every run (on a fixed one this passes regardless).
OVERLAPPING_PARSES = """
import ast, asyncio, gc, inspect, threading, time
import paperfeed
import httpx

source = inspect.getsource(asyncio.base_events)
gc.set_threshold(50, 5, 5)
gc.callbacks.append(lambda phase, info: [object() for _ in range(300)] and time.sleep(0))
stop = threading.Event()
failures = []

def compile_in_a_thread():
    while not stop.is_set():
        try:
            ast.parse(source)
        except Exception as error:
            failures.append(repr(error))

async def close_a_client():
    async with httpx.AsyncClient():
        pass

thread = threading.Thread(target=compile_in_a_thread)
thread.start()
try:
    asyncio.run(close_a_client())
finally:
    stop.set()
    thread.join()
print(failures)
"""


def test_the_catalog_client_closes_while_a_thread_compiles() -> None:
    # The CI failure this guards against: a sync's httpx client closed while the
    # artifact job's numba compile ran, and one of the two raised SystemError.
    done = subprocess.run(
        [sys.executable, "-c", OVERLAPPING_PARSES], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
