"""Trending reads: ``GET /v1/trending`` over HTTP against the same reads made directly.

The api is driven over HTTP by ``bench.loadgen``; the direct side makes the same Redis
reads (top 50 + the papers) with redis-py in this process; ``/healthz`` is the
bare-endpoint ceiling of the HTTP stack. The catalog holds the 753 Hugging Face papers
plus synthetic ones (default 20,000), with interactions spread over all of them; each
request asks for the top 50 of a window.
Run: ``python -m bench.trending``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from bench.common import api_server, redis_server, summary
from bench.loadgen import drive
from paperfeed.catalog.importers import parse_file
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.settings import load_settings
from paperfeed.trending import Contribution

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf-daily-papers.jsonl"
WINDOWS = ("day", "week", "month")


async def fill(redis_url: str, synthetic: int) -> None:
    core = Core.connect(load_settings({}, redis_url=redis_url))
    now = time.time()
    papers = parse_file(FIXTURE) + [
        Paper(id=f"2411.{n:05d}", title=f"Synthetic paper {n}", abstract="words " * 150)
        for n in range(synthetic)
    ]
    await core.catalog.upsert(papers, now)
    contributions = [
        Contribution(p.id, float(1 + i % 17), now - (i % 500) * 600) for i, p in enumerate(papers)
    ]
    for start in range(0, len(contributions), 2000):
        await core.trending.add(contributions[start : start + 2000], now)
    await core.close()


async def load(call: object, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(WINDOWS[i % 3])  # type: ignore[operator]
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started), latencies


def run_api(url: str, path: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    def request(i: int) -> tuple[str, str, dict[str, str], bytes]:
        return "GET", path.format(window=WINDOWS[i % 3]), {}, b""

    def check(status: int, body: bytes) -> None:
        assert status == 200, body

    return asyncio.run(drive(url, request, requests, concurrency, check))


async def run_direct(redis_url: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    core = Core.connect(load_settings({}, redis_url=redis_url))

    async def call(window: str) -> None:
        ranked = await core.trending.top(window, 50, time.time())  # type: ignore[arg-type]
        papers = await core.catalog.get_many([pid for pid, _ in ranked])
        assert len(papers) == 50

    try:
        return await load(call, requests, concurrency)
    finally:
        await core.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--synthetic", type=int, default=20_000)
    args = parser.parse_args()
    with redis_server() as redis_url:
        asyncio.run(fill(redis_url, args.synthetic))
        with api_server(redis_url) as url:
            direct_rate, direct_lat = asyncio.run(
                run_direct(redis_url, args.requests, args.concurrency)
            )
            api_rate, api_lat = run_api(
                url, "/v1/trending?window={window}&limit=50", args.requests, args.concurrency
            )
            bare_rate, bare_lat = run_api(url, "/healthz", args.requests, args.concurrency)
    print(
        json.dumps(
            {
                "requests_per_s": {
                    "api": round(api_rate),
                    "direct": round(direct_rate),
                    "bare_healthz": round(bare_rate),
                },
                "latency": {
                    "api": summary(api_lat),
                    "direct": summary(direct_lat),
                    "bare_healthz": summary(bare_lat),
                },
                "api_over_direct": round(api_rate / direct_rate, 3),
                "concurrency": args.concurrency,
                "papers": 753 + args.synthetic,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
