"""Soak: a steady stream of event batches from many installs while feeds are read and a
training run publishes a new model; then every acknowledged event is checked in Redis.

One ``paperfeed serve`` process and a private redis-server with the production
``deploy/redis.conf`` (AOF, fsync always). Installs send a batch of ``--batch`` events
every ``--interval`` seconds each (open loop: the rate does not slow down when the server
does), retrying a refused batch with the same event ids as the extension does; readers
ask for their feed; a third of the way in, ``paperfeed train`` runs beside them.

At the end, for every install, the events in Redis must be exactly the acknowledged ones
(none lost, none twice), no request may have had a 5xx, and the feed latency must stay
within ``--feed-p99-ms``. ``tests/test_soak.py`` runs a short form in the suite.

Run: ``python -m bench.soak [--seconds 120 --installs 200 --readers 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import msgspec
import redis

from bench.common import api_server, percentile, redis_server
from bench.loadgen import Connection, connect
from paperfeed.events import event_id_hash, seen_hashes
from paperfeed.store import keys

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["graph neural", "diffusion image", "language model", "protein folding", "robot policy"]
PAPERS_PER_TOPIC = 60


class SoakReport(msgspec.Struct, kw_only=True):
    seconds: float
    installs: int
    readers: int
    events_acknowledged: int
    events_per_s: float
    batches: int
    batch_retries: int
    statuses: dict[str, int]
    server_errors: int
    lost: int
    doubled: int
    feeds: int
    feed_p50_ms: float
    feed_p99_ms: float
    feed_p99_target_ms: float
    model_published: bool
    model_version_served: str | None

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.doubled == 0
            and self.server_errors == 0
            and self.feed_p99_ms <= self.feed_p99_target_ms
        )


def catalog() -> list[dict[str, Any]]:
    return [
        {
            "id": f"2412.{t * PAPERS_PER_TOPIC + n:05d}",
            "title": f"{topic} paper {n}",
            "abstract": f"A study of {topic} methods, variant {n}. " * 5,
            "published": "2024-12-01",
        }
        for t, topic in enumerate(TOPICS)
        for n in range(PAPERS_PER_TOPIC)
    ]


class Install:
    def __init__(self, token: str, topic: int) -> None:
        self.token = token
        self.user_id = ""
        self.topic = topic
        self.acknowledged: list[str] = []


async def request(
    url: str, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, bytes]:
    """One request on a fresh connection (keeps the soak simple; loopback is cheap)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn: Connection = await connect(url)
    try:
        payload = json.dumps(body).encode() if body is not None else b""
        return await conn.request(method, path, headers, payload)
    finally:
        conn.writer.close()
        with suppress(Exception):
            await conn.writer.wait_closed()


async def soak(
    url: str,
    redis_url: str,
    seconds: float,
    installs: int,
    readers: int,
    batch: int,
    interval: float,
    feed_p99_target_ms: float,
    train_env: dict[str, str],
) -> SoakReport:
    status, _ = await request(url, "POST", "/v1/admin/papers", "bench", catalog())
    assert status == 200, status
    rng = random.Random(0)
    people: list[Install] = []
    for i in range(installs):
        status, body = await request(url, "POST", "/v1/installs")
        assert status == 201, status
        created = json.loads(body)
        person = Install(created["token"], i % len(TOPICS))
        person.user_id = created["user_id"]
        people.append(person)

    statuses: Counter[str] = Counter()
    batches = retries = 0
    feed_latencies: list[float] = []
    served_versions: Counter[str | None] = Counter()
    stop_at = time.monotonic() + seconds

    async def send(person: Install) -> None:
        nonlocal batches, retries
        await asyncio.sleep(rng.random() * interval)
        while time.monotonic() < stop_at:
            next_at = time.monotonic() + interval
            first = person.topic * PAPERS_PER_TOPIC
            events = [
                {
                    "event_id": uuid.uuid4().hex,
                    "paper_id": f"2412.{first + rng.randrange(PAPERS_PER_TOPIC):05d}",
                    "type": rng.choice(["view", "view", "view", "click", "save", "upvote"]),
                    "ts": time.time(),
                }
                for _ in range(batch)
            ]
            deadline = time.monotonic() + 60
            while True:  # a batch is retried until acknowledged, even after stop_at
                try:
                    status, _ = await request(
                        url, "POST", "/v1/events", person.token, {"events": events}
                    )
                except (OSError, asyncio.IncompleteReadError):
                    status = 0
                statuses[str(status)] += 1
                if status == 200:
                    person.acknowledged.extend(e["event_id"] for e in events)
                    batches += 1
                    break
                retries += 1
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def read_feeds() -> None:
        while time.monotonic() < stop_at:
            person = rng.choice(people)
            started = time.perf_counter()
            try:
                status, body = await request(url, "GET", "/v1/feed?limit=30", person.token)
            except (OSError, asyncio.IncompleteReadError):
                status, body = 0, b""
            feed_latencies.append(time.perf_counter() - started)
            statuses[f"feed {status}"] += 1
            if status == 200:
                served_versions[json.loads(body)["model_version"]] += 1
            await asyncio.sleep(0.05)

    async def train_later() -> bool:
        await asyncio.sleep(seconds / 3)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paperfeed.cli", "train", "--quiet",
            env=train_env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await process.communicate()
        report = json.loads(out.decode().strip().splitlines()[-1])
        return bool(report["published"])

    started = time.monotonic()
    trainer = asyncio.create_task(train_later())
    await asyncio.gather(*(send(p) for p in people), *(read_feeds() for _ in range(readers)))
    published = await trainer
    elapsed = time.monotonic() - started

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    lost = doubled = 0
    for person in people:
        raw = client.execute_command("GET", keys.user_seen(person.user_id), NEVER_DECODE=True)
        seen = set(seen_hashes(raw))
        logged = str(client.get(keys.user_events(person.user_id)) or "").splitlines()
        doubled += max(0, len(logged) - len(person.acknowledged))
        lost += len({event_id_hash(e) for e in person.acknowledged} - seen)
    client.close()
    acknowledged = sum(len(p.acknowledged) for p in people)
    latest = max((v for v in served_versions if v), default=None)
    return SoakReport(
        seconds=round(elapsed, 1),
        installs=installs,
        readers=readers,
        events_acknowledged=acknowledged,
        events_per_s=round(acknowledged / elapsed, 1),
        batches=batches,
        batch_retries=retries,
        statuses=dict(sorted(statuses.items())),
        server_errors=sum(n for s, n in statuses.items() if s.split()[-1].startswith("5")),
        lost=lost,
        doubled=doubled,
        feeds=len(feed_latencies),
        feed_p50_ms=round(percentile(feed_latencies, 0.5) * 1000, 1),
        feed_p99_ms=round(percentile(feed_latencies, 0.99) * 1000, 1),
        feed_p99_target_ms=feed_p99_target_ms,
        model_published=published,
        model_version_served=latest,
    )


def production_redis_args(workdir: Path) -> list[str]:
    """deploy/redis.conf, with this run's directory."""
    conf = workdir / "redis.conf"
    conf.write_text(
        (ROOT / "deploy" / "redis.conf").read_text().replace("dir /data", f"dir {workdir}")
    )
    return [str(conf)]


def run(
    seconds: float,
    installs: int,
    readers: int,
    batch: int = 5,
    interval: float = 1.0,
    feed_p99_target_ms: float = 250.0,
) -> SoakReport:
    with redis_server(config=production_redis_args) as redis_url:
        env = {
            "PAPERFEED_LOG_LEVEL": "WARNING",
            "PAPERFEED_MODEL_POLL_S": "1",
            "PAPERFEED_TRENDING_CACHE_S": "2",
        }
        with api_server(redis_url, **env) as url:
            train_env = {
                **os.environ,
                "REDIS_URL": redis_url,
                "PAPERFEED_ALS_FACTORS": "32",
                "PAPERFEED_LOG_LEVEL": "WARNING",
                "OPENBLAS_NUM_THREADS": "1",
            }
            return asyncio.run(
                soak(url, redis_url, seconds, installs, readers, batch, interval,
                     feed_p99_target_ms, train_env)
            )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--installs", type=int, default=200)
    parser.add_argument("--readers", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--feed-p99-ms", type=float, default=250.0)
    args = parser.parse_args()
    report = run(
        args.seconds, args.installs, args.readers, args.batch, args.interval, args.feed_p99_ms
    )
    print(json.dumps(msgspec.to_builtins(report), indent=2))
    print("OK" if report.ok else "FAILED")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
