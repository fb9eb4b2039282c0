"""Search over the bench catalog (50,000 papers) on one api process, against ``GET
/readyz`` on the same process in the same run (closed loop, the raw asyncio load
generator), and the memory the search index takes.

    python -m bench.search [--papers 50000] [--requests 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import api_server, redis_server, summary
from bench.loadgen import Request, drive
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.settings import load_settings

TOPICS = 50
WORDS_PER_TOPIC = 40


async def load(redis_url: str, papers: int, seed: int) -> list[list[str]]:
    """The bench catalog (``bench.recommender``'s papers, with authors)."""
    rng = random.Random(seed)
    words = [[f"t{t}w{w}" for w in range(WORDS_PER_TOPIC)] for t in range(TOPICS)]
    common = [f"c{w}" for w in range(300)]
    names = [f"Author{n} Name{n % 97}" for n in range(5_000)]
    core = Core.connect(load_settings({}, redis_url=redis_url))
    catalog = []
    for n in range(papers):
        topic = n % TOPICS
        catalog.append(
            Paper(
                id=f"{2400 + n // 90000}.{n % 90000:05d}",
                title=" ".join(rng.choices(words[topic], k=8)),
                abstract=" ".join(rng.choices(words[topic], k=40) + rng.choices(common, k=60)),
                authors=rng.sample(names, 4),
                published="2024-06-01T00:00:00Z",
            )
        )
    for start in range(0, len(catalog), 5_000):
        await core.catalog.upsert(catalog[start : start + 5_000], time.time())
    await core.close()
    return words


def index_megabytes(redis_url: str) -> dict[str, float]:
    async def measure() -> dict[str, float]:
        core = Core.connect(load_settings({}, redis_url=redis_url))
        await core.holder.refresh()
        assert core.holder.index is not None
        sizes = {
            "search_index_mb": core.holder.index.search.nbytes() / 1e6,
            "catalog_index_mb": core.holder.index.nbytes() / 1e6,
        }
        await core.close()
        return {k: round(v, 1) for k, v in sizes.items()}

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--papers", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    rng = random.Random(1)
    report: dict[str, Any] = {"papers": args.papers, "concurrency": args.concurrency}
    with redis_server() as redis_url:
        started = time.perf_counter()
        words = asyncio.run(load(redis_url, args.papers, 0))
        report["load_seconds"] = round(time.perf_counter() - started, 1)
        print(f"loaded in {report['load_seconds']} s", flush=True)

        def bare(i: int) -> Request:
            return "GET", "/readyz", {}, b""

        def search(i: int) -> Request:
            topic = words[rng.randrange(TOPICS)]
            query = " ".join(rng.sample(topic, 2))
            return "GET", f"/v1/search?q={quote(query)}&limit=20", {}, b""

        def ok(status: int, body: bytes) -> None:
            assert status == 200, body[:200]

        with api_server(redis_url) as url:
            for name, make in (("bare_readyz", bare), ("search", search)):
                asyncio.run(drive(url, make, 200, args.concurrency, ok))  # warm-up
                rate, latencies = asyncio.run(drive(url, make, args.requests, args.concurrency, ok))
                report[name] = {"requests_per_s": round(rate), **summary(latencies)}
                print(f"{name}: {report[name]}", flush=True)
        report["search"]["over_bare"] = round(
            report["search"]["requests_per_s"] / report["bare_readyz"]["requests_per_s"], 3
        )
        report["memory"] = index_megabytes(redis_url)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
