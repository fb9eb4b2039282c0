"""How much Redis memory paperfeed needs: per paper, per reader, per model version.

Fills a private redis-server through paperfeed's own code paths (catalog upsert, the
ingest script, training and publishing), reading ``used_memory`` between the steps:

1. papers with a title and a ~1,000-character abstract (like arXiv's);
2. readers, each sending ``--events`` events (views, clicks, saves, upvotes) over their
   own papers, in batches of 20 like the extension's queue;
3. one trained and published model (ALS factors of every paper and reader, plus each
   reader's vector key).

Run: ``python -m bench.sizing [--papers N --users N --events N --factors N]``; figures
go in docs/deploy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import redis

from bench.common import redis_server
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.recsys.train import train_and_publish
from paperfeed.settings import load_settings
from paperfeed.store import keys

WORDS = [
    *("graph", "language", "model", "diffusion", "retrieval", "agent", "vision"),
    *("reasoning", "sparse", "attention", "transformer", "policy", "reward", "protein"),
    *("molecule", "benchmark", "dataset", "scaling", "robust", "causal"),
]
KINDS = ["view"] * 6 + ["click"] * 2 + ["save", "upvote"]


def used(url: str) -> int:
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(0)
    with redis_server() as url:
        settings = load_settings(
            {}, redis_url=url, demo_catalog=False, als_factors=args.factors, log_level="WARNING"
        )
        core = Core.connect(settings)
        base = used(url)

        papers = [
            Paper(
                id=f"2411.{n:05d}",
                title=text(rng, 10),
                abstract=text(rng, 150),
                authors=[text(rng, 2) for _ in range(4)],
                published=f"2024-11-{1 + n % 28:02d}",
            )
            for n in range(args.papers)
        ]
        await core.catalog.upsert(papers, time.time())
        after_papers = used(url)

        ids = [p.id for p in papers]
        started = time.perf_counter()
        for u in range(args.users):
            user_id = (await core.users.register()).user_id
            own = rng.sample(ids, min(len(ids), args.events))
            events = [
                Event(
                    event_id=uuid.uuid4().hex,
                    paper_id=own[i % len(own)],
                    type=rng.choice(KINDS),  # type: ignore[arg-type]
                    ts=time.time(),
                )
                for i in range(args.events)
            ]
            for start in range(0, len(events), 20):
                await core.ingestor.ingest(user_id, events[start : start + 20])
            if (u + 1) % 1_000 == 0:
                print(f"  {u + 1} readers in {time.perf_counter() - started:.0f} s", flush=True)
        after_users = used(url)

        report = await train_and_publish(core.redis, settings)
        after_model = used(url)
        client = redis.Redis.from_url(url)
        version = report.version or ""
        blob = int(client.strlen(keys.model_blob(version)))
        first_user = str(client.zrange(keys.USERS, 0, 0)[0], "utf-8")
        vector = int(client.memory_usage(keys.user_vector(first_user)) or 0)
        await core.close()

    per_paper = (after_papers - base) / args.papers
    per_user = (after_users - after_papers) / args.users
    per_model = after_model - after_users
    print(f"papers={args.papers} users={args.users} events/user={args.events} k={args.factors}")
    print(f"per paper (catalog + trending): {per_paper / 1024:.2f} KiB")
    print(f"per reader with {args.events} events: {per_user / 1024:.2f} KiB")
    print(f"per reader vector (k={args.factors}): {vector / 1024:.2f} KiB")
    print(f"model blob: {blob / 2**20:.1f} MiB ({blob / (args.papers + args.users):.0f} B/row)")
    print(f"model version incl. reader vectors: {per_model / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--papers", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--factors", type=int, default=256)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
