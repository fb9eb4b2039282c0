"""Shared set-up of the benchmarks: a private redis-server and the real api over HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import redis

from paperfeed.store.embedded import redis_server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(config: Callable[[Path], list[str]] | None = None) -> Iterator[str]:
    """A private redis-server; ``config(workdir)`` gives leading arguments (a conf file)."""
    workdir = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    port = free_port()
    leading = config(workdir) if config else ["--save", "", "--dir", str(workdir)]
    process = subprocess.Popen(
        [redis_server_binary(), *leading, "--port", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


API_PIDS: dict[str, int] = {}
"""The process id of each running ``api_server``, by its URL."""


def cpu_seconds(url: str) -> float:
    """The CPU time (user and system) of the api process serving ``url`` so far, its
    worker processes included (``--workers``)."""
    process = psutil.Process(API_PIDS[url])
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = each.cpu_times()
            total += times.user + times.system
    return total


@contextlib.contextmanager
def api_server(redis_url: str, **env: str) -> Iterator[str]:
    """``paperfeed serve`` (one uvicorn process) in a subprocess (``API_PIDS``)."""
    port = free_port()
    environ = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PAPERFEED_PORT": str(port),
        "PAPERFEED_ADMIN_TOKEN": "bench",
        "PAPERFEED_DEMO_CATALOG": "false",
        "PAPERFEED_RATE_LIMIT_PER_MINUTE": "100000000",
        "PAPERFEED_INSTALLS_PER_HOUR": "100000000",
        "PAPERFEED_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "paperfeed.cli", "serve"], env=environ, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        API_PIDS[url] = process.pid
        yield url
    finally:
        API_PIDS.pop(url, None)
        process.terminate()
        process.wait(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in latencies_s]
    return {
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }
