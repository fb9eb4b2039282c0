"""How much Redis memory paperfeed needs: per paper, per reader, per model version.

Fills a private redis-server through paperfeed's own code paths (catalog upsert, the
ingest script, training and publishing), reading ``used_memory`` between the steps:

1. papers with a title and a ~1,000-character abstract (like arXiv's);
2. readers, each sending ``--events`` events (views, clicks, saves, upvotes) over their
   own papers, in batches of 20 like the extension's queue;
3. one trained and published model (ALS factors of every paper and reader, plus each
   reader's vector key);
4. one hostile install sending ``--hostile-events`` events at the schema's limits (64-
   character event ids, 128-character paper ids the catalog lacks and arXiv ids it
   lacks, 1,000-character titles of 4-byte characters, 20,000-character abstracts,
   2,000-character urls): what one install can make Redis keep, whatever it sends.

A reader's bytes are ``MEMORY USAGE`` summed over all of the reader's keys (their token
key included; the model's vector of the reader counted apart), and ``used_memory``
growth per reader beside it (which adds the global indexes of installs).

Run: ``python -m bench.sizing [--papers N --users N --events N --factors N]``; figures
go in docs/deploy.md and docs/benchmarks.md.
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
from paperfeed.settings import load_settings
from paperfeed.store import keys
from paperfeed.training.train import train_and_publish

WORDS = [
    *("graph", "language", "model", "diffusion", "retrieval", "agent", "vision"),
    *("reasoning", "sparse", "attention", "transformer", "policy", "reward", "protein"),
    *("molecule", "benchmark", "dataset", "scaling", "robust", "causal"),
]
KINDS = ["view"] * 6 + ["click"] * 2 + ["save", "upvote"]


def used(url: str) -> int:
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def reader_bytes(client: redis.Redis, user_id: str, with_vector: bool = False) -> int:
    """``MEMORY USAGE`` (every element counted) of all of a reader's keys and their
    token's key; the model's vector of the reader only when asked."""
    names = [k for k in keys.user_keys(user_id) if with_vector or k != keys.user_vector(user_id)]
    token_hash = client.hget(keys.user_profile(user_id), "token_hash")
    if token_hash:
        hashed = token_hash.decode() if isinstance(token_hash, bytes) else str(token_hash)
        names.append(keys.token(hashed))
    total = 0
    for name in names:
        total += int(client.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0") or 0)
    return total


async def hostile_install(core: Core, url: str, events: int) -> tuple[int, int, int]:
    """One install sends ``events`` maximum-size events about papers the catalog lacks;
    returns (its keys' bytes, used_memory growth, the catalog candidates' bytes)."""
    redis.Redis.from_url(url).script_flush()
    before = used(url)
    user_id = (await core.users.register()).user_id
    for start in range(0, events, 40):
        batch = [
            Event(
                event_id=f"{n:064d}",
                # arXiv-shaped ids (reported to the catalog) and the longest ids there are
                paper_id=f"2612.{n:05d}" if n % 10 == 0 else f"p{n:07d}-" + "x" * 119,
                type="view",  # type: ignore[arg-type]
                ts=time.time(),
                dwell_ms=86_400_000,
                source="z" * 32,
                title="\U0001d54f" * 1_000,  # 4 bytes a character in UTF-8
                abstract="A" * 20_000,
                url="https://example.org/" + "u" * 1_980,
            )
            for n in range(start, min(start + 40, events))
        ]
        await core.ingestor.ingest(user_id, batch)
    client = redis.Redis.from_url(url)
    # Redis shrinks an idle client's query buffer (1 MB requests) within a few seconds.
    await asyncio.sleep(5)
    reports = sum(
        int(client.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0") or 0)
        for name in client.scan_iter("pf:cand:*")
    )
    # The scripts' Lua heap (garbage the scripts made, collected by Lua's GC in its own
    # time, shared by every call) is no install's data: a new Lua state drops it.
    client.script_flush()
    return reader_bytes(client, user_id), used(url) - before, reports


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
        readers = [str(u, "utf-8") for u in client.zrange(keys.USERS, 0, -1)]
        vector = int(client.memory_usage(keys.user_vector(readers[0])) or 0)
        sample = readers[:: max(1, len(readers) // 500)]
        keys_per_reader = sum(reader_bytes(client, u) for u in sample) / len(sample)
        hostile, hostile_growth, reports = await hostile_install(core, url, args.hostile_events)
        await core.close()

    per_paper = (after_papers - base) / args.papers
    per_user = (after_users - after_papers) / args.users
    per_model = after_model - after_users
    print(f"papers={args.papers} users={args.users} events/user={args.events} k={args.factors}")
    print(f"per paper (catalog + trending): {per_paper / 1024:.2f} KiB")
    print(f"per reader with {args.events} events (MEMORY USAGE of their keys and token):")
    print(f"  {keys_per_reader / 1024:.2f} KiB; used_memory growth: {per_user / 1024:.2f} KiB")
    print(f"per reader vector (k={args.factors}): {vector / 1024:.2f} KiB")
    print(f"model blob: {blob / 2**20:.1f} MiB ({blob / (args.papers + args.users):.0f} B/row)")
    print(f"model version incl. reader vectors: {per_model / 2**20:.1f} MiB")
    print(f"one install, {args.hostile_events} maximum-size events about unknown papers:")
    growth = hostile_growth / 1024
    print(f"  its keys: {hostile / 1024:.1f} KiB; used_memory growth: {growth:.1f} KiB")
    print(f"  of which the catalog's candidates (its reports): {reports / 1024:.1f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--papers", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--factors", type=int, default=256)
    parser.add_argument("--hostile-events", type=int, default=6_000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
