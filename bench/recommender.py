"""Recommender at a realistic scale: training time and feed latency.

Synthetic data (default: 100,000 readers, 50,000 papers on 50 topics, 5,000,000
interactions, 50 a reader, mostly within the reader's two topics) is bulk-loaded into a
private redis-server in the layout the ingest script writes (the event path has its own
benchmark). Then, side by side in one run:

- training: a first ``train_and_publish`` that searches the ALS hyperparameters, then,
  after 10% of the readers saved 5 more papers each, a retraining that reuses the
  search (Redis -> matrix -> text features -> validation -> ALS -> blend -> gate on the
  new interactions -> published model and reader vectors); both against a bare
  ``implicit`` ALS fit of the same confidence matrix with the parameters they used;
- feed: ``GET /v1/feed`` on one api process, 50 connections, random readers, against
  ``GET /readyz`` (one Redis round trip) on the same process: closed loop (50 requests
  always in flight: throughput, and the latency of a saturated process), then open loop
  at half the closed-loop throughput (the latency of one request when not queueing).

Run: ``python -m bench.recommender [--users N --papers N --per-user N] [--skip-training]
[--skip-feed] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from bench.common import api_server, cpu_seconds, redis_server, summary
from bench.loadgen import Request, drive, drive_rate
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.events import SAVED, UPVOTED, confidence
from paperfeed.recsys.matrix import ConfidenceScale, build_matrix
from paperfeed.recsys.model import AlsParams, fit_als
from paperfeed.settings import load_settings
from paperfeed.store import keys
from paperfeed.training.train import train_and_publish

WORDS_PER_TOPIC = 40
OPEN_LOOP_SHARE = 0.5
TOPICS = 50


def topic_words(rng: random.Random) -> list[list[str]]:
    return [[f"t{t}w{w}" for w in range(WORDS_PER_TOPIC)] for t in range(TOPICS)]


def bench_user(u: int) -> str:
    return f"bench{u:07d}"


def bench_token(u: int) -> str:
    """Reader ``u``'s install token, of the kind ``Users.register`` makes (it names the
    reader: ``paperfeed.users.claimed_reader``)."""
    return f"pf_{bench_user(u)}.bench-secret-{u}"


async def load(redis_url: str, users: int, papers: int, per_user: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    words = topic_words(rng)
    common = [f"c{w}" for w in range(300)]
    core = Core.connect(load_settings({}, redis_url=redis_url))
    now = time.time()
    catalog = []
    for n in range(papers):
        topic = n % TOPICS
        text = rng.choices(words[topic], k=40) + rng.choices(common, k=60)
        catalog.append(
            Paper(
                id=f"{2400 + n // 90000}.{n % 90000:05d}",
                title=" ".join(rng.choices(words[topic], k=8)),
                abstract=" ".join(text),
                published="2024-06-01T00:00:00Z",
            )
        )
    await core.catalog.upsert(catalog, now)
    by_topic = [[p.id for i, p in enumerate(catalog) if i % TOPICS == t] for t in range(TOPICS)]
    # Records in the earlier JSON layout (still read as they are): a view, a view and a
    # click, an upvote, a save; the matrix weight is each one's confidence.
    kinds = {1.0: {"v": 1}, 3.0: {"v": 1, "c": 1}, 5.0: {"v": 1, "f": UPVOTED},
             11.0: {"v": 1, "c": 1, "f": SAVED}}  # fmt: skip
    record = {
        w: msgspec.json.encode({"f": 0, "c": 0, "i": 0, "dw": 0.0, "t": now - 3600, **kind})
        for w, kind in kinds.items()
    }
    weight_of = {
        w: float(confidence(kind.get("f", 0), kind["v"], kind.get("c", 0), 0.0))
        for w, kind in kinds.items()
    }
    tokens: list[str] = []
    favourites: list[int] = []
    rows, cols, vals = [], [], []
    index = {p.id: i for i, p in enumerate(catalog)}
    chunk = 1000
    for start in range(0, users, chunk):
        async with core.redis.pipeline(transaction=False) as pipe:
            for u in range(start, min(start + chunk, users)):
                user_id = bench_user(u)
                token = bench_token(u)
                tokens.append(token)
                token_hash = hashlib.sha256(token.encode()).hexdigest()
                favourite = rng.sample(range(TOPICS), 2)
                favourites.append(favourite[0])
                chosen: dict[str, float] = {}
                while len(chosen) < per_user:
                    topic = (
                        favourite[0]
                        if rng.random() < 0.6
                        else (favourite[1] if rng.random() < 0.7 else rng.randrange(TOPICS))
                    )
                    chosen[rng.choice(by_topic[topic])] = rng.choice((1.0, 1.0, 3.0, 5.0, 11.0))
                pipe.hset(
                    keys.user_papers(user_id), mapping={p: record[w] for p, w in chosen.items()}
                )
                pipe.hset(keys.user_profile(user_id), mapping={
                    "created_at": now - 86400, "token_hash": token_hash, "events": per_user,
                    "last_event_at": now - 3600})  # fmt: skip
                pipe.set(keys.token(token_hash), user_id)
                pipe.zadd(keys.USERS, {user_id: now - 3600})
                for pid, w in chosen.items():
                    rows.append(u)
                    cols.append(index[pid])
                    vals.append(weight_of[w])
            await pipe.execute()
    trending = [(p.id, float(rng.paretovariate(1.2)), now - rng.random() * 86400 * 5)
                for p in rng.sample(catalog, min(papers, 5000))]  # fmt: skip
    from paperfeed.trending import Contribution

    await core.trending.add([Contribution(*t) for t in trending], now)
    await core.close()
    weights = build_matrix(rows, cols, vals, (users, papers))
    return {"tokens": tokens, "weights": weights, "favourites": favourites}


def bare_fit_seconds(weights: Any, params: AlsParams) -> float:
    """A bare ``implicit`` fit of the same matrix with the same parameters, in memory."""
    scale = ConfidenceScale.fit(weights, params.alpha, params.scaling)
    confidences = scale(weights)
    started = time.perf_counter()
    fit_als(confidences, params)
    return time.perf_counter() - started


async def training_seconds(redis_url: str, search: bool) -> tuple[float, dict[str, Any]]:
    settings = load_settings({}, redis_url=redis_url)
    core = Core.connect(settings)
    started = time.perf_counter()
    report = await train_and_publish(core.redis, settings, search=search)
    elapsed = time.perf_counter() - started
    await core.close()
    return elapsed, msgspec.to_builtins(report)


async def add_new_interactions(
    redis_url: str, favourites: list[int], papers: int, share: float, per_user: int, seed: int
) -> int:
    """``share`` of the readers each save ``per_user`` more papers of their favourite
    topic that they had not met before, after the model."""
    rng = random.Random(seed)
    core = Core.connect(load_settings({}, redis_url=redis_url))
    now = time.time()
    record = msgspec.json.encode(
        {"w": 7.0, "f": 2, "v": 1, "c": 0, "i": 0, "dw": 0.0, "t": now, "vt": now, "st": now}
    )
    users = len(favourites)
    chosen = rng.sample(range(users), int(share * users))
    added = 0
    for start in range(0, len(chosen), 1_000):
        batch = chosen[start : start + 1_000]
        async with core.redis.pipeline(transaction=False) as pipe:
            for u in batch:
                pipe.hkeys(keys.user_papers(f"bench{u:07d}"))
            known = await pipe.execute()
        async with core.redis.pipeline(transaction=False) as pipe:
            for u, had in zip(batch, known, strict=True):
                user_id = bench_user(u)
                topic = favourites[u]
                new = {}
                while len(new) < per_user:
                    n = rng.randrange(topic, papers, TOPICS)
                    pid = f"{2400 + n // 90000}.{n % 90000:05d}"
                    if pid not in had:
                        new[pid] = record
                pipe.hset(keys.user_papers(user_id), mapping=new)
                pipe.zadd(keys.USERS, {user_id: now})  # as the ingest does: active now
                added += len(new)
            await pipe.execute()
    await core.close()
    return added


def training_bench(
    redis_url: str, data: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """A first training that searches the hyperparameters, then (10% of the readers
    having saved more papers) a retraining that reuses the search; each against a bare
    fit of the same matrix with the parameters it used, measured in the same run."""
    search_s, search_report = asyncio.run(training_seconds(redis_url, search=not args.no_search))
    print(f"search run {search_s:.1f} s: {search_report['reason']}", flush=True)
    searched = search_report["choices"]["search"]
    chosen = msgspec.convert(searched["best"], AlsParams) if searched else AlsParams()
    added = asyncio.run(
        add_new_interactions(redis_url, data["favourites"], args.papers, 0.1, 5, seed=1)
    )
    retrain_s, retrain_report = asyncio.run(training_seconds(redis_url, search=False))
    print(f"retraining {retrain_s:.1f} s: {retrain_report['reason']}", flush=True)
    bare = bare_fit_seconds(data["weights"], chosen)
    print(f"bare fit {bare:.1f} s ({chosen})", flush=True)
    return {
        "searched_parameters": msgspec.to_builtins(chosen),
        "bare_implicit_fit_s": round(bare, 1),
        "search_run": {
            "seconds": round(search_s, 1),
            "over_bare": round(search_s / bare, 2),
            "stages_s": search_report["stages"],
            "trials": searched["trials"] if searched else [],
            "published": search_report["published"],
            "metrics": search_report["metrics"],
        },
        "retraining": {
            "new_interactions": added,
            "seconds": round(retrain_s, 1),
            "over_bare": round(retrain_s / bare, 2),
            "stages_s": retrain_report["stages"],
            "judged_on": retrain_report["judged_on"],
            "judged_readers": retrain_report["judged_readers"],
            "published": retrain_report["published"],
            "reason": retrain_report["reason"],
            "metrics": retrain_report["metrics"],
        },
    }


CACHED_READERS = 2_000


def feed_load(
    url: str, tokens: list[str], papers: int, requests: int, concurrency: int
) -> dict[str, Any]:
    """The feed against ``/readyz`` on the same process, in one run: readers whose
    cached feed is current (each read it once before); a reader's upvote alone; a
    reader's upvote followed by their feed (the cache must be recomputed); then both
    endpoints in an open loop at half the cached feed's throughput."""
    rng = random.Random(1)
    run = f"{time.time():.0f}"  # event ids of their own: a Redis used before saw the last run's
    cached_readers = tokens[:CACHED_READERS]
    acting_readers = tokens[CACHED_READERS:]

    def feed_of(token: str) -> Request:
        return "GET", "/v1/feed?limit=20", {"Authorization": f"Bearer {token}"}, b""

    def bare_request(i: int) -> Request:
        return "GET", "/readyz", {}, b""

    def cached_feed(i: int) -> Request:
        return feed_of(cached_readers[rng.randrange(len(cached_readers))])

    def upvote(token: str, i: int, kind: str = "upvote") -> Request:
        n = rng.randrange(papers)
        paper_id = f"{2400 + n // 90000}.{n % 90000:05d}"
        event = {"event_id": f"bench-{run}-{i}-{rng.random()}", "type": kind,
                 "paper_id": paper_id, "ts": time.time()}  # fmt: skip
        body = json.dumps({"events": [event]}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return "POST", "/v1/events", headers, body

    def event_alone(i: int) -> Request:
        return upvote(acting_readers[rng.randrange(len(acting_readers))], i)

    def event_then_feed(i: int) -> list[Request]:
        token = acting_readers[rng.randrange(len(acting_readers))]
        return [upvote(token, i), feed_of(token)]

    def impression_then_feed(i: int) -> list[Request]:
        # A reader whose feed is cached sees a card, then reads their feed again.
        token = cached_readers[rng.randrange(len(cached_readers))]
        return [upvote(token, i, "impression"), feed_of(token)]

    def ok(status: int, body: bytes) -> None:
        assert status in (200, 202), body[:200]

    # Every cached reader reads their feed once: from then on it is current.
    asyncio.run(drive(url, lambda i: feed_of(cached_readers[i]), len(cached_readers),
                      concurrency, ok))  # fmt: skip
    out: dict[str, Any] = {}
    scenarios = (("bare_readyz", bare_request), ("feed_cached", cached_feed),
                 ("event_alone", event_alone), ("event_then_feed", event_then_feed),
                 ("impression_then_feed", impression_then_feed))  # fmt: skip

    def refresh_cached() -> None:
        # Each reader's cache lives until their own trending epoch ends (offset by their
        # id): read them all again, so that a "cached" phase reads current caches.
        asyncio.run(drive(url, lambda i: feed_of(cached_readers[i]), len(cached_readers),
                          concurrency, ok))  # fmt: skip

    for name, make in scenarios:
        if name == "feed_cached":
            refresh_cached()
        asyncio.run(drive(url, make, 200, concurrency, ok))  # warm-up
        before = cache_counts(url)
        cpu_before = cpu_seconds(url)
        rate, latencies = asyncio.run(drive(url, make, requests, concurrency, ok))
        out[name] = {"requests_per_s": round(rate), **summary(latencies)}
        # The api process's own CPU for each (a pair counts once): less noisy than rates.
        out[name]["api_cpu_ms"] = round((cpu_seconds(url) - cpu_before) / requests * 1000, 3)
        if name != "bare_readyz":
            after = cache_counts(url)
            out[name]["feeds"] = {k: round(after[k] - before[k]) for k in after}
        print(f"{name}: {out[name]}", flush=True)
    bare = out["bare_readyz"]["requests_per_s"]
    out["feed_cached"]["over_bare"] = round(out["feed_cached"]["requests_per_s"] / bare, 3)
    out["event_alone"]["over_bare"] = round(out["event_alone"]["requests_per_s"] / bare, 3)
    for name in ("event_then_feed", "impression_then_feed"):
        pairs = out[name]["requests_per_s"] / bare
        out[name]["over_bare"] = round(pairs, 3)
        out[name]["requests_over_bare"] = round(2 * pairs, 3)
    # What an event then a feed would reach if ranking the stale feed cost no more than
    # reading a cached one: an event and a cached feed, one after the other.
    out["event_then_cached_feed_bound"] = round(
        1 / (1 / out["event_alone"]["over_bare"] + 1 / out["feed_cached"]["over_bare"]), 3
    )
    # Both at the same rate, below saturation (open loop): what one request costs when
    # the process is not queueing them.
    offered = OPEN_LOOP_SHARE * out["feed_cached"]["requests_per_s"]
    refresh_cached()
    for name, make in (("bare_readyz_open_loop", bare_request), ("feed_open_loop", cached_feed)):
        before = cache_counts(url)
        rate, latencies = asyncio.run(drive_rate(url, make, offered, 20.0, concurrency))
        out[name] = {"offered_per_s": round(offered), "requests_per_s": round(rate),
                     **summary(latencies)}  # fmt: skip
        after = cache_counts(url)
        out[name]["feeds"] = {k: round(after[k] - before[k]) for k in after}
        print(f"{name}: {out[name]}", flush=True)
    out["open_loop_p99_over_bare"] = round(
        out["feed_open_loop"]["p99_ms"] / max(out["bare_readyz_open_loop"]["p99_ms"], 1e-3), 2
    )
    # The feed read right after the reader's event, pairs offered at the same rate: its
    # p99 against the cached feed's.
    rate, latencies = asyncio.run(drive_rate(url, event_then_feed, offered, 20.0, concurrency))
    out["feed_after_event_open_loop"] = {
        "offered_per_s": round(offered),
        "requests_per_s": round(rate),
        **summary(latencies),
    }
    print(f"feed_after_event_open_loop: {out['feed_after_event_open_loop']}", flush=True)
    out["feed_after_event_p99_over_cached_p99"] = round(
        out["feed_after_event_open_loop"]["p99_ms"] / max(out["feed_open_loop"]["p99_ms"], 1e-3), 2
    )
    return out


def cache_counts(url: str) -> dict[str, float]:
    """The api's feeds by how they were answered (``paperfeed_feed_cache_total``)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {
        result: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        for result in ("hit", "resort", "miss")
        if line.startswith(f'paperfeed_feed_cache_total{{result="{result}"}}')
    }


def across_boundary(
    url: str, tokens: list[str], trend_s: float, concurrency: int
) -> dict[str, Any]:
    """Repeat feed reads of readers whose feeds are cached, over the minute after a
    trending snapshot boundary of the common clock, against ``/readyz`` measured just
    before (the same process)."""
    rng = random.Random(2)
    readers = tokens[:CACHED_READERS]

    def feed_of(i: int) -> Request:
        token = readers[rng.randrange(len(readers))]
        return "GET", "/v1/feed?limit=20", {"Authorization": f"Bearer {token}"}, b""

    asyncio.run(drive(url, lambda i: feed_of(i), len(readers) * 2, concurrency))
    bare_rate, _ = asyncio.run(
        drive(url, lambda i: ("GET", "/readyz", {}, b""), 3_000, concurrency)
    )
    wait = trend_s - time.time() % trend_s
    print(f"waiting {wait:.0f} s for the trending boundary", flush=True)
    time.sleep(wait)
    before = cache_counts(url)
    served, started = 0, time.perf_counter()
    while time.perf_counter() - started < 60:
        asyncio.run(drive(url, feed_of, 1_000, concurrency))
        served += 1_000
    rate = served / (time.perf_counter() - started)
    after = cache_counts(url)
    return {"bare_readyz_per_s": round(bare_rate), "feeds_per_s": round(rate),
            "over_bare": round(rate / bare_rate, 3),
            "feeds": {k: round(after[k] - before[k]) for k in after}}  # fmt: skip


def arrays_bytes(redis_url: str) -> dict[str, float]:
    """Memory the in-process ranking arrays take (the catalog index and its model), as
    one api process builds them."""
    from paperfeed.serving.holder import ModelHolder

    async def measure() -> dict[str, float]:
        core = Core.connect(load_settings({}, redis_url=redis_url))
        holder: ModelHolder = core.holder
        await holder.refresh()
        assert holder.index is not None
        sizes = {"index_mb": holder.index.nbytes() / 1e6}
        if holder.model is not None:
            model = holder.model
            sizes["model_factors_mb"] = model.item_factors.nbytes / 1e6
            sizes["model_yty_mb"] = (model.item_factors.shape[1] ** 2) * 4 / 1e6
        await core.close()
        return {k: round(v, 1) for k, v in sizes.items()}

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=50_000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-feed", action="store_true")
    parser.add_argument("--no-search", action="store_true", help="first training without search")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--redis-url",
        help="a Redis this bench loaded and trained already "
        "(python -m bench.ranking --redis-url URL --load makes one)",
    )
    parser.add_argument("--workers", type=int, default=1, help="api processes")
    parser.add_argument(
        "--boundary",
        action="store_true",
        help="also: cached feeds over the minute after a trending boundary",
    )
    args = parser.parse_args()
    if args.redis_url:
        report = {"users": args.users, "papers": args.papers, "workers": args.workers}
        tokens = [bench_token(u) for u in range(args.users)]
        env = {"PAPERFEED_MODEL_POLL_S": "1", "PAPERFEED_WORKERS": str(args.workers)}
        with api_server(args.redis_url, **env) as url:
            report["feed"] = feed_load(url, tokens, args.papers, args.requests, args.concurrency)
            if args.boundary:
                report["boundary"] = across_boundary(url, tokens, 600.0, args.concurrency)
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return
    report: dict[str, Any] = {
        "users": args.users, "papers": args.papers, "interactions": args.users * args.per_user,
    }  # fmt: skip
    with redis_server() as redis_url:
        started = time.perf_counter()
        data = asyncio.run(load(redis_url, args.users, args.papers, args.per_user, 0))
        report["load_seconds"] = round(time.perf_counter() - started, 1)
        print(f"loaded in {report['load_seconds']} s", flush=True)
        if not args.skip_training:
            report["training"] = training_bench(redis_url, data, args)
        if not args.skip_feed:
            if args.skip_training:  # the feed is measured with a model
                seconds, _ = asyncio.run(training_seconds(redis_url, search=False))
                print(f"model trained in {seconds:.0f} s", flush=True)
            with api_server(redis_url, PAPERFEED_MODEL_POLL_S="1") as url:
                report["feed"] = feed_load(
                    url, data["tokens"], args.papers, args.requests, args.concurrency
                )
            report["feed"]["concurrency"] = args.concurrency
            report["feed"]["arrays"] = arrays_bytes(redis_url)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
