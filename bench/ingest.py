"""Ingest throughput: events/s through the HTTP api against the same writes made directly.

Both sides run the same ingest code path on the same kind of batches (100 events, 16 in
flight); the direct side calls ``Ingestor.ingest`` with a redis-py client in this
process, the api side posts to ``paperfeed serve`` over HTTP (auth, validation, rate
limiting and metrics included). Run: ``python -m bench.ingest``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import httpx

from bench.common import api_server, redis_server
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.settings import load_settings

KINDS = ["impression", "impression", "impression", "view", "click", "upvote", "save"]


def batch(size: int, papers: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "event_id": uuid.uuid4().hex,
            "paper_id": f"2411.{(hash((i, now)) % papers):05d}",
            "type": KINDS[i % len(KINDS)],
            "ts": now,
        }
        for i in range(size)
    ]


async def run_api(url: str, users: int, batches: int, size: int, papers: int) -> float:
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=16)
    ) as http:
        tokens = [(await http.post("/v1/installs")).json()["token"] for _ in range(users)]
        work = [(tokens[i % users], batch(size, papers)) for i in range(batches)]
        queue: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                token, events = queue.get_nowait()
                response = await http.post(
                    "/v1/events",
                    json={"events": events},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return batches * size / (time.perf_counter() - started)


async def run_direct(redis_url: str, users: int, batches: int, size: int, papers: int) -> float:
    core = Core.connect(load_settings({}, redis_url=redis_url))
    user_ids = [(await core.users.register()).user_id for _ in range(users)]
    work = [
        (user_ids[i % users], [Event(**e) for e in batch(size, papers)]) for i in range(batches)
    ]
    queue: asyncio.Queue[tuple[str, list[Event]]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            user_id, events = queue.get_nowait()
            await core.ingestor.ingest(user_id, events)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    rate = batches * size / (time.perf_counter() - started)
    await core.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--papers", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"api": [], "direct": []}
    with redis_server() as redis_url, api_server(redis_url) as url:
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            results["direct"].append(
                asyncio.run(run_direct(redis_url, args.users, args.batches, args.size, args.papers))
            )
            results["api"].append(
                asyncio.run(run_api(url, args.users, args.batches, args.size, args.papers))
            )
    best = {k: max(v) for k, v in results.items()}
    report = {
        "events_per_s": {k: round(v) for k, v in best.items()},
        "rounds": {k: [round(x) for x in v] for k, v in results.items()},
        "api_over_direct": round(best["api"] / best["direct"], 3),
        "batch": args.size,
        "in_flight": 16,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
