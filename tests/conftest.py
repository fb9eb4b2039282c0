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
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from paperfeed.api.app import create_app
from paperfeed.core import Core
from paperfeed.settings import Settings, env_name, load_settings
from paperfeed.store import keys
from paperfeed.store.embedded import redis_server_binary
from tests.redis_cluster import start_cluster

ADMIN_TOKEN = "test-admin-token"
FIXTURES = Path(__file__).parent / "fixtures"
DATA_DIR = tempfile.mkdtemp(prefix="pf-test-data-")
"""The data dir of the services the tests start (the trainer's cache goes there)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLUSTER_URLS: set[str] = set()
"""URLs of the Redis Clusters the tests started (their settings need the cluster client)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``cluster`` run twice: on one redis-server and on a Redis Cluster."""
    if "redis_backend" in metafunc.fixturenames:
        backends = ["single"]
        if metafunc.definition.get_closest_marker("cluster"):
            backends.append("cluster")
        metafunc.parametrize("redis_backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "single"))


def start_on_free_port(
    start: Callable[[int], subprocess.Popen[Any]],
    ready: Callable[[int], bool],
    timeout_s: float = 60,
) -> tuple[subprocess.Popen[Any], int]:
    """``start(port)`` on a free port, waiting until ``ready(port)``. A server that exits
    first may have lost its port between the pick and its bind: another port, up to five
    times (the last exit is reported with the server's stderr, when piped)."""
    for attempt in range(5):
        port = free_port()
        process = start(port)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None:
            if ready(port):
                return process, port
            if time.monotonic() > deadline:
                process.kill()
                process.wait(10)
                raise RuntimeError(f"{process.args!r} did not become ready on {port}")
            time.sleep(0.05)
        if attempt == 4:
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"{process.args!r} exited ({process.returncode}): {stderr!r}")
    raise AssertionError("unreachable")


def redis_answers(port: int) -> bool:
    """A redis-server on 127.0.0.1:port answers PING (loaded)."""
    try:
        return bool(redis.Redis(port=port).ping())
    except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
        return False


def serves_readyz(port: int) -> bool:
    """A paperfeed api on 127.0.0.1:port answers /readyz with 200."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def start_serve(env: dict[str, str]) -> tuple[subprocess.Popen[Any], int]:
    """``paperfeed serve`` in a process of its own (its output piped) on a free port, once
    it answers /readyz: (process, port)."""

    def serve(port: int) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            [sys.executable, "-m", "paperfeed.cli", "serve"],
            env={**env, "PAPERFEED_PORT": str(port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    return start_on_free_port(serve, serves_readyz, timeout_s=30)


def start_redis_anywhere(workdir: Path, *extra: str) -> tuple[subprocess.Popen[Any], int]:
    """A redis-server (``redis_server_binary()``) on a free port, answering PING
    (redis-server cannot be given port 0 and report what it got)."""

    def start(port: int) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
             str(workdir), *extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    return start_on_free_port(start, redis_answers, timeout_s=10)


@pytest.fixture(scope="session")
def redis_url(redis_backend: str) -> Iterator[str]:
    """A private redis-server, or Redis Cluster, for the whole run."""
    workdir = Path(tempfile.mkdtemp(prefix="pf-redis-"))
    if redis_backend == "cluster":
        cluster = start_cluster(redis_server_binary(), workdir)
        CLUSTER_URLS.add(cluster.url)
        yield cluster.url
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        return
    process, port = start_redis_anywhere(workdir, "--save", "")
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def plain_client(url: str) -> redis.Redis:
    """A synchronous client for checking what the service stored (cluster-aware)."""
    if url in CLUSTER_URLS:
        return redis.RedisCluster.from_url(url, decode_responses=True)  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True)


def redis_env(url: str) -> dict[str, str]:
    """The environment that points a ``paperfeed`` command at ``url``."""
    return {
        "REDIS_URL": url,
        "PAPERFEED_REDIS_CLUSTER": str(url in CLUSTER_URLS).lower(),
        "PAPERFEED_DATA_DIR": DATA_DIR,
        **OFFLINE_SYNC,
    }


OFFLINE_SYNC = {
    "PAPERFEED_SYNC_INTERVAL_S": "0",
    "PAPERFEED_HF_API_URL": "http://127.0.0.1:9",
    "PAPERFEED_ARXIV_API_URL": "http://127.0.0.1:9",
}
"""A worker started by a test never syncs from the internet."""


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on an emptied database, for checking what the api stored."""
    client = plain_client(redis_url)
    client.flushall()
    yield client
    client.close()


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_cluster": redis_url in CLUSTER_URLS,
        "admin_token": ADMIN_TOKEN,
        "demo_catalog": False,
        "rate_limit_per_minute": 100_000,
        "installs_per_hour": 100_000,
        "log_json": False,
        "log_level": "WARNING",
        "trending_cache_s": 0,
        # Feeds see trending as it is (tests of the feed cache set their own epoch).
        "trending_snapshot_s": 0.001,
        "model_poll_s": 0.2,
        "data_dir": DATA_DIR,
        # Never the internet: tests of the sync serve recorded answers and say so.
        "sync_interval_s": 0,
        "hf_api_url": "http://127.0.0.1:9",
        "arxiv_api_url": "http://127.0.0.1:9",
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

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        # The socket is bound here and handed to uvicorn: no window in which another
        # process could take a port found free.
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of sockets
        # that say so (with proto 0 every answer waited ~40 ms for a delayed ACK).
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port or 0))
        self.port = int(self.socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            proxy_headers=True,  # as paperfeed serve runs it
            timeout_keep_alive=settings.keep_alive_s,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

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
        self.socket.close()


@contextlib.contextmanager
def live_server(settings: Settings, port: int | None = None) -> Iterator[LiveServer]:
    server = LiveServer(settings, port).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def live_servers(settings: Settings, count: int = 2) -> Iterator[list[LiveServer]]:
    """``count`` api processes on one Redis (as replicas behind a load balancer)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(live_server(settings)) for _ in range(count)]


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


def inside_one_budget_window(r: redis.Redis, needed_s: float = 20.0) -> None:
    """Return once ``needed_s`` or more are left of the current window of the readers'
    request budgets, which are aligned to Redis's clock (``reader_budget.lua``): a test
    counting refusals must not see the count restart halfway. Waits on that clock."""
    window_s = keys.RATE_WINDOW_S
    while True:
        seconds, micros = r.time()
        if window_s - (seconds % window_s + micros / 1e6) >= needed_s:
            return
        time.sleep(0.2)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def paperfeed_cli(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``paperfeed ARGS`` as a user would, in its own process; never raises."""
    return subprocess.run(
        [sys.executable, "-m", "paperfeed.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


class Mailbox:
    """A real SMTP server (aiosmtpd) on a loopback port; what it accepted, parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.refuse_next = 0
        """Answer this many DATA commands with a temporary failure (451) first."""
        self.hold_after: int | None = None
        """Hold the DATA of message number ``hold_after + 1`` until ``release`` is set."""
        self.holding = threading.Event()
        self.release = threading.Event()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("refused@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio
        import email
        from email import policy

        if self.refuse_next > 0:
            self.refuse_next -= 1
            return "451 4.3.0 try again later"
        if self.hold_after is not None and len(self.messages) >= self.hold_after:
            self.holding.set()
            await asyncio.to_thread(self.release.wait, 60)
            return "451 4.3.0 released"
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]

    def wait_for(self, count: int, timeout: float = 15) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} mails arrived"
            time.sleep(0.05)
        return self.messages


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    yield box
    box.release.set()
    box.controller.stop()


def smtp_settings(mailbox: Mailbox, public_url: str) -> dict[str, Any]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": mailbox.port,
        "smtp_tls": "none",
        "smtp_from": "paperfeed <digest@paperfeed.test>",
        "public_url": public_url,
    }


def smtp_env(mailbox: Mailbox, public_url: str) -> dict[str, str]:
    """The same, as the environment of a ``paperfeed`` process."""
    return {
        env_name(name): str(value) for name, value in smtp_settings(mailbox, public_url).items()
    }


# Fixtures of a trained service, shared by the recommender and reliability tests.
from tests.recsys_fixtures import api, trained  # noqa: E402, F401
