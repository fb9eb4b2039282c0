"""What an api process spends to take up a new model and a catalog change, with and
without the worker's serving artifact (issue 24, item 1).

For each catalog size (default 20,000 and 50,000 papers, the recommender bench's
generator, 2,000 readers of 20 papers each), in one run:

- a model is fabricated (the catalog's word features, random factors of 256, a tenth
  of the papers cold: their factors come from text neighbours, as a trained model's)
  and published; a "new model" is the same arrays under a new version (what an api
  process does with it is the same as with a trained one);
- *in-process*: one ``paperfeed serve`` with no worker; its CPU seconds (utime + stime
  of ``/proc/<pid>/stat``) from the publish until ``/v1/admin/model`` serves the new
  version, then from a one-paper import until search finds the paper;
- *artifact*: the same with ``paperfeed worker`` running (the api loads what the worker
  built): the same two CPU figures, the worker's build time (the artifact header's
  ``build_seconds``, and the wall time from the change to the artifact's publication)
  and the artifact's size;
- each side: feeds at a steady rate (open loop) for a window without a change and a
  window in which a new model is published, p50/p99 of both.

Run: ``python -m bench.artifact [--papers 20000 50000] [--rate 40] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import redis

from bench.common import free_port, redis_server, summary
from bench.loadgen import Request, drive_rate
from bench.recommender import load
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.recsys.content import TextFeatures, paper_text, tokenize
from paperfeed.recsys.index import decode_catalog_paper
from paperfeed.recsys.matrix import ConfidenceScale
from paperfeed.recsys.model import AlsParams, ModelMeta, RecModel, new_version
from paperfeed.recsys.ranker import BlendParams
from paperfeed.settings import load_settings
from paperfeed.store import keys

ADMIN = {"Authorization": "Bearer bench"}
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextlib.contextmanager
def process(args: list[str], redis_url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    environ = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PAPERFEED_ADMIN_TOKEN": "bench",
        "PAPERFEED_DEMO_CATALOG": "false",
        "PAPERFEED_RATE_LIMIT_PER_MINUTE": "100000000",
        "PAPERFEED_INSTALLS_PER_HOUR": "100000000",
        "PAPERFEED_LOG_LEVEL": "WARNING",
        "PAPERFEED_MODEL_POLL_S": "0.5",
        "PAPERFEED_SYNC_INTERVAL_S": "0",
        "PAPERFEED_CANDIDATE_LOOKUP_INTERVAL_S": "0",
        "PAPERFEED_TRAIN_INTERVAL_S": "1e9",
        "PAPERFEED_TRAIN_MIN_NEW_EVENTS": "1000000000",
        "OPENBLAS_NUM_THREADS": "1",
        **env,
    }
    running = subprocess.Popen(
        [sys.executable, "-m", "paperfeed.cli", *args], env=environ, stdout=subprocess.DEVNULL
    )
    try:
        yield running
    finally:
        running.terminate()
        running.wait(60)


def wait(condition: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


def served_version(url: str) -> str | None:
    try:
        answer = httpx.get(f"{url}/v1/admin/model", headers=ADMIN, timeout=120)
    except httpx.TransportError:
        return None
    return answer.json().get("served_version") if answer.status_code == 200 else None


def finds(url: str, word: str) -> bool:
    answer = httpx.get(f"{url}/v1/search", params={"q": word}, timeout=120)
    return answer.status_code == 200 and bool(answer.json()["items"])


def fabricated_model(redis_url: str, factors: int = 256) -> RecModel:
    """A model of every catalogued paper: word features fitted on the catalog (as a
    training's), random factors, a tenth of the papers cold."""
    client = redis.Redis.from_url(redis_url)
    papers = sorted(
        (decode_catalog_paper(raw) for raw in client.hvals(keys.PAPERS)), key=lambda p: p.id
    )
    client.close()
    rng = np.random.default_rng(0)
    ids = [p.id for p in papers]
    counts = rng.integers(1, 50, len(ids)).astype(np.float64)
    counts[rng.random(len(ids)) < 0.1] = 0
    text = TextFeatures.fit(tokenize([paper_text(p.title, p.abstract) for p in papers]))["words"]
    meta = ModelMeta(
        version=new_version(),
        trained_at=time.time(),
        als=AlsParams(factors=factors),
        blend=BlendParams(),
        n_items=len(ids),
    )
    item_factors = (rng.standard_normal((len(ids), factors)) * 0.1).astype(np.float32)
    return RecModel(meta, ids, item_factors, counts, text, ConfidenceScale(80.0))


def publish_copy(redis_url: str, model: RecModel) -> str:
    """``model`` published again under a new version (a new model to every process)."""
    meta = msgspec.structs.replace(model.meta, version=new_version(), trained_at=time.time())
    client = redis.Redis.from_url(redis_url)
    client.set(keys.model_blob(meta.version), model.to_bytes())
    client.set(keys.model_meta(meta.version), msgspec.json.encode(meta))
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(keys.MODEL_VERSIONS, {meta.version: time.time()})
        pipe.set(keys.MODEL_CURRENT, meta.version)
        pipe.execute()
    client.close()
    return meta.version


def add_paper(redis_url: str, word: str) -> None:
    async def upsert() -> None:
        core = Core.connect(load_settings({}, redis_url=redis_url))
        paper = Paper(
            id=f"2499.{random.randrange(10**5):05d}", title=f"{word} study", abstract=word
        )
        await core.catalog.upsert([paper], time.time())
        await core.close()

    asyncio.run(upsert())


def artifact_header(redis_url: str) -> dict[str, Any] | None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    current = client.get(keys.ARTIFACT_CURRENT)
    raw = client.get(keys.artifact_header(str(current))) if current else None
    client.close()
    return json.loads(raw) if raw else None


def index_counts(url: str) -> str:
    lines = httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
    return ", ".join(line for line in lines if line.startswith("paperfeed_index_total{"))


def take_up(
    url: str, pid: int, redis_url: str, model: RecModel, worker: bool, seq: int
) -> dict[str, Any]:
    """CPU seconds of the api process to serve a new model, then a one-paper import."""
    out: dict[str, Any] = {}
    before_cpu, started = cpu_seconds(pid), time.perf_counter()
    version = publish_copy(redis_url, model)
    wait(lambda: served_version(url) == version, 600, "the new model", every=0.1)
    out["model_cpu_s"] = round(cpu_seconds(pid) - before_cpu, 2)
    out["model_wall_s"] = round(time.perf_counter() - started, 2)
    if worker:
        header = artifact_header(redis_url)
        assert header is not None
        assert header["model_version"] == version
        out["model_build_s"] = header["build_seconds"]
        out["artifact_mib"] = round(header["size"] / 2**20, 1)
        out["artifact_chunks"] = header["chunks"]
    word = f"zymurgy{seq}"
    before_cpu, started = cpu_seconds(pid), time.perf_counter()
    add_paper(redis_url, word)
    wait(lambda: finds(url, word), 600, "the new paper", every=0.1)
    out["catalog_cpu_s"] = round(cpu_seconds(pid) - before_cpu, 2)
    out["catalog_wall_s"] = round(time.perf_counter() - started, 2)
    if worker:
        header = artifact_header(redis_url)
        assert header is not None
        out["catalog_build_s"] = header["build_seconds"]
    out["index_total"] = index_counts(url)
    return out


def feed_windows(
    url: str, tokens: list[str], redis_url: str, model: RecModel, rate: float, window_s: float
) -> dict[str, Any]:
    """Feeds at ``rate`` a second for ``window_s``: steady, then with a new model
    published one second in (the window waits for the process to serve it)."""
    rng = random.Random(7)

    def make(_: int) -> Request:
        token = rng.choice(tokens)
        return ("GET", "/v1/feed?limit=20", {"Authorization": f"Bearer {token}"}, b"")

    async def window() -> list[float]:
        _, latencies = await drive_rate(url, make, rate, window_s, connections=50)
        return latencies

    steady = asyncio.run(window())

    async def switching() -> tuple[list[float], float]:
        task = asyncio.create_task(window())
        await asyncio.sleep(1.0)
        started = time.perf_counter()
        version = await asyncio.to_thread(publish_copy, redis_url, model)
        await asyncio.to_thread(
            wait, lambda: served_version(url) == version, 600, "the new model", 0.1
        )
        switched = time.perf_counter() - started  # the window may go on after it
        return await task, switched

    during, switch_s = asyncio.run(switching())
    return {
        "steady": summary(steady),
        "switch": summary(during),
        "switch_s": round(switch_s, 2),
        "p99_ratio": round(summary(during)["p99_ms"] / summary(steady)["p99_ms"], 2),
    }


def bench_size(papers: int, readers: int, rate: float, window_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {"papers": papers}
    with redis_server() as redis_url:
        loaded = asyncio.run(load(redis_url, readers, papers, 20, seed=1))
        model = fabricated_model(redis_url)
        publish_copy(redis_url, model)
        # In-process: no worker, the api builds its index itself.
        port = free_port()
        with process(["serve"], redis_url, PAPERFEED_PORT=str(port)) as api:
            url = f"http://127.0.0.1:{port}"
            wait(lambda: served_version(url) is not None, 600, "the api", every=0.2)
            result["in_process"] = take_up(url, api.pid, redis_url, model, False, 1)
            result["in_process"].update(
                feed_windows(url, loaded["tokens"], redis_url, model, rate, window_s)
            )
        # Artifact: the worker builds, the api loads.
        with process(["worker", "--poll", "1"], redis_url):
            wait(lambda: artifact_header(redis_url) is not None, 600, "the first artifact", 0.2)
            port = free_port()
            with process(["serve"], redis_url, PAPERFEED_PORT=str(port)) as api:
                url = f"http://127.0.0.1:{port}"
                wait(lambda: served_version(url) is not None, 600, "the api", every=0.2)
                result["artifact"] = take_up(url, api.pid, redis_url, model, True, 2)
                result["artifact"].update(
                    feed_windows(url, loaded["tokens"], redis_url, model, rate, window_s)
                )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--readers", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=40.0, help="feeds a second")
    parser.add_argument("--window", type=float, default=30.0, help="seconds a load window")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    for papers in args.papers:
        results.append(bench_size(papers, args.readers, args.rate, args.window))
        print(json.dumps(results[-1], indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
