"""Faults, hostile input and access: paperfeed keeps working, loses nothing, lets no one in.

Faults are injected into real processes: a redis-server with the production
``deploy/redis.conf`` stopped or killed with SIGKILL under load, a trainer killed in the
middle of training, broken model versions in Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import redis

from paperfeed.core import Core
from paperfeed.store import embedded, keys
from paperfeed.training.train import train_and_publish
from tests.conftest import (
    ADMIN_TOKEN,
    LiveServer,
    admin_headers,
    free_port,
    inside_one_budget_window,
    live_server,
    make_settings,
    paperfeed_cli,
    register,
    start_serve,
)
from tests.extension_queue import ExtensionQueue, Senders, assert_exactly_once
from tests.personas import event
from tests.recsys_fixtures import feed, populate, train_settings

ROOT = Path(__file__).resolve().parent.parent
PAPERS = [{"id": f"2413.{n:05d}", "title": f"Reliable paper {n}"} for n in range(1, 11)]


class ProductionRedis:
    """A redis-server with deploy/redis.conf (AOF, fsync always) that can be hurt."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = password
        conf = (ROOT / "deploy" / "redis.conf").read_text().replace("dir /data", f"dir {workdir}")
        if password:
            conf += f"\nrequirepass {password}\n"
        (workdir / "redis.conf").write_text(conf)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [embedded.redis_server_binary(), str(self.workdir / "redis.conf"),
             "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                assert self.process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(15)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture
def production_redis(tmp_path: Path) -> Iterator[ProductionRedis]:
    server = ProductionRedis(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.stop(signal.SIGTERM)


def run_extensions(
    server: LiveServer, count: int, hurt: Any, settle_s: float = 1.0
) -> list[ExtensionQueue]:
    """``count`` installs send batches continuously while ``hurt()`` runs, then settle."""
    with httpx.Client(base_url=server.url) as http:
        queues = []
        for _ in range(count):
            user_id, auth = register(http)
            queues.append(ExtensionQueue(server.url, auth, user_id))
    senders = Senders(queues, [p["id"] for p in PAPERS])
    time.sleep(settle_s)
    hurt()
    time.sleep(settle_s)
    senders.stop()
    return queues


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "killed with SIGKILL"])
def test_redis_lost_mid_ingest_answers_503_and_retries_land_exactly_once(
    production_redis: ProductionRedis, how: str
) -> None:
    settings = make_settings(production_redis.url)
    with live_server(settings) as server:
        with httpx.Client(base_url=server.url) as http:
            assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success

        def hurt() -> None:
            production_redis.stop(signal.SIGTERM if how == "stopped" else signal.SIGKILL)
            time.sleep(1.5)  # clients keep sending into the outage
            production_redis.start()  # from its AOF

        extensions = run_extensions(server, 8, hurt)
    statuses = sum((e.statuses for e in extensions), Counter())
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert statuses[503] > 0, "the outage was noticed"
    assert set().union(*(e.retry_after for e in extensions)) == {"5"}
    total = assert_exactly_once(production_redis.client(), extensions)
    assert total > 8 * 3 * 2


def test_the_embedded_redis_fsyncs_every_acknowledged_write(tmp_path: Path) -> None:
    url = embedded.ensure_server(tmp_path)
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        client.close()
        embedded.release_server(tmp_path)


async def test_a_trainer_killed_mid_training_leaves_the_old_model_serving(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    import asyncio

    await populate(core)
    first = await train_and_publish(core.redis, train_settings(redis_url))
    assert first.published
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PAPERFEED_ALS_FACTORS": "64",
        "PAPERFEED_ALS_ITERATIONS": "100000",  # far longer than the test waits
        "PAPERFEED_SEARCH_TRIALS": "0",
        "PAPERFEED_LOCK_TTL_S": "1.5",
        "PAPERFEED_LOG_JSON": "true",
    }
    trainer = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "paperfeed.cli", "train", "--log-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert trainer.stderr is not None
    # Wait until it is fitting the ALS (it says so), then past the lease's TTL.
    while True:
        line = await asyncio.to_thread(trainer.stderr.readline)
        assert line, "the trainer ended before fitting"
        if line.startswith("{") and json.loads(line).get("stage") == "als":
            break
    held = r.get(keys.TRAIN_LOCK)
    assert held
    acquired = time.monotonic()
    while time.monotonic() - acquired < 2 * 1.5:
        assert r.get(keys.TRAIN_LOCK) == held, "the lease is renewed while it trains"
        await asyncio.sleep(0.1)
    assert trainer.poll() is None
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(10)

    assert r.get(keys.MODEL_CURRENT) == first.version
    with (
        live_server(train_settings(redis_url)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        _, auth = register(http)
        assert feed(http, auth)["model_version"] == first.version
    # The dead trainer's lease runs out by itself; the next training goes ahead.
    deadline = time.monotonic() + 10
    while r.exists(keys.TRAIN_LOCK):
        assert time.monotonic() < deadline, "the dead trainer's lock never expired"
        await asyncio.sleep(0.1)
    again = {**env, "PAPERFEED_ALS_ITERATIONS": "10", "PAPERFEED_ALS_FACTORS": "32",
             "PAPERFEED_GATE_TOLERANCE": "1.0"}  # fmt: skip
    done = await asyncio.to_thread(paperfeed_cli, "train", "--quiet", env=again, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["published"]
    assert r.get(keys.MODEL_CURRENT) != first.version


def test_broken_model_versions_are_ignored_and_logged(
    api: LiveServer,
    trained: str,
    redis_url: str,
    r: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    http = httpx.Client(base_url=api.url)
    _, auth = register(http)
    assert feed(http, auth)["model_version"] == trained
    good_blob = redis.Redis.from_url(redis_url).get(keys.model_blob(trained))
    assert good_blob
    good_meta = r.get(keys.model_meta(trained))
    broken = {
        "partial": {keys.model_meta("partial"): good_meta},  # the blob never arrived
        "truncated": {
            keys.model_meta("truncated"): good_meta,
            keys.model_blob("truncated"): good_blob[: len(good_blob) // 2],
        },
        "garbled": {
            keys.model_meta("garbled"): b"{not json",
            keys.model_blob("garbled"): good_blob,
        },
    }
    with caplog.at_level(logging.WARNING, logger="paperfeed"):
        for version, entries in broken.items():
            for key, value in entries.items():
                r.set(key, value)
            r.set(keys.MODEL_CURRENT, version)
            deadline = time.monotonic() + 5
            while not any(getattr(rec, "version", None) == version for rec in caplog.records):
                assert time.monotonic() < deadline, f"{version} was not noticed"
                time.sleep(0.05)
            assert feed(http, auth)["model_version"] == trained, version
    failed = [rec for rec in caplog.records if rec.getMessage().startswith("loading model failed")]
    assert {getattr(rec, "version", None) for rec in failed} == set(broken)


# --- hostile input ------------------------------------------------------------------


def test_hostile_bodies_are_4xx_never_5xx(http: httpx.Client) -> None:
    _, auth = register(http)
    json_headers = {**auth, "Content-Type": "application/json"}
    nested = b'{"events": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    cases = {
        "deeply nested": nested,
        "huge paper id": json.dumps({"events": [event("9" * 100_000)]}).encode(),
        "huge event id": json.dumps(
            {"events": [{**event("2413.00001"), "event_id": "x" * 10_000}]}
        ).encode(),
        "wrong types": b'{"events": [{"event_id": 1, "paper_id": [], "type": {}, "ts": "x"}]}',
        "null bytes": b'{"events": [{"event_id": "\\u0000", "paper_id": "\\u0000"}]}',
        "not utf-8": b'{"events": ["\xff\xfe"]}',
        "number overflow": b'{"events": [{"event_id": "a", "paper_id": "2413.00001",'
        b' "type": "view", "ts": 1e999999}]}',
    }
    for name, body in cases.items():
        response = http.post("/v1/events", content=body, headers=json_headers)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    oversized = http.post(
        "/v1/events", content=b"[" + b" " * 1_100_000 + b"]", headers=json_headers
    )
    assert oversized.status_code == 413


def test_unicode_and_control_characters_round_trip_unharmed(
    http: httpx.Client, r: redis.Redis
) -> None:
    _, auth = register(http)
    title = "Ünïcödé \u202e evil \u0007 bell \U0001f9ea <script>alert(1)</script> \u0000 end"
    report = event("2499.00001", title=title, url="https://arxiv.org/abs/2499.00001")
    response = http.post("/v1/events", json={"events": [report]}, headers=auth)
    assert response.status_code == 200, response.text
    exported = http.get("/v1/me/export", headers=auth).json()
    assert exported["events"][0]["paper_id"] == "2499.00001"
    # The page's title is kept as the reader's hint: control and bidi characters dropped,
    # the rest (markup included, as text) returned unharmed.
    kept = exported["page_titles"]["2499.00001"]
    assert kept == "Ünïcödé evil bell \U0001f9ea <script>alert(1)</script> end"
    library = http.get("/v1/me/library", params={"kind": "read"}, headers=auth).json()
    assert library["items"][0]["paper"]["title"] == kept


def test_an_event_storm_from_one_install_meets_the_rate_limiter(
    redis_url: str, r: redis.Redis
) -> None:
    # (r: an emptied database, so no budget spent by an earlier test counts here)
    with live_server(make_settings(redis_url, rate_limit_per_minute=30)) as server:
        http = httpx.Client(base_url=server.url)
        user_id, auth = register(http)
        _, calm = register(http)
        inside_one_budget_window(r)
        statuses, stored = Counter(), 0
        for _ in range(40):
            response = http.post("/v1/events", json={"events": [event("2413.00001")]}, headers=auth)
            statuses[response.status_code] += 1
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) > 0
            else:
                stored += response.json()["accepted"]
        assert statuses[429] >= 10
        assert set(statuses) == {200, 429}
        # The other install is not slowed down by the storm.
        calm_answer = http.post("/v1/events", json={"events": [event("2413.00002")]}, headers=calm)
        assert calm_answer.status_code == 200
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        kept = str(client.get(keys.user_events(user_id)) or "").splitlines()
        assert len(kept) == stored  # refused batches left no trace


# --- access -------------------------------------------------------------------------


def test_a_token_reaches_its_own_data_only_and_cannot_be_forged(
    http: httpx.Client, r: redis.Redis
) -> None:
    alice_id, alice = register(http)
    bob_id, bob = register(http)
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
    http.post("/v1/events", json={"events": [event("2413.00001", "save")]}, headers=alice)
    bob_export = http.get("/v1/me/export", headers=bob).json()
    assert bob_export["user_id"] == bob_id
    assert bob_export["events"] == []
    assert alice_id not in json.dumps(bob_export)

    token = alice["Authorization"].removeprefix("Bearer ")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    forged = [
        {"Authorization": f"Bearer pf_{uuid.uuid4().hex}"},
        {"Authorization": f"Bearer {flipped}"},
        {"Authorization": f"Bearer {alice_id}"},  # the user id is not a token
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer"},
        {},
    ]
    calls = [
        ("GET", "/v1/feed", None),
        ("GET", "/v1/me/export", None),
        ("POST", "/v1/events", {"events": [event("2413.00002")]}),
        ("DELETE", "/v1/me", None),
    ]
    for headers in forged:
        for method, path, body in calls:
            response = http.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (headers, path, response.status_code)
            assert response.headers["www-authenticate"] == "Bearer"
    assert http.get("/v1/me/export", headers=alice).json()["events_total"] == 1

    # Tokens are kept only as SHA-256 hashes: no key or value in Redis holds one.
    for key in r.scan_iter("*"):
        assert token not in key
        kind = r.type(key)
        values: list[str] = []
        if kind == "string":
            # (event id hashes are binary: read without decoding)
            raw = r.execute_command("GET", key, NEVER_DECODE=True)
            values = [raw.decode("utf-8", "replace")]
        elif kind == "hash":
            values = [str(v) for v in r.hgetall(key).values()]
        elif kind == "list":
            values = [str(v) for v in r.lrange(key, 0, -1)]
        assert not any(token in v for v in values), key

    # User tokens are no admin tokens; an erased install's token opens nothing.
    for path in ("/v1/admin/model", "/v1/admin/train"):
        method = "GET" if path.endswith("model") else "POST"
        assert http.request(method, path, headers=alice).status_code == 403
        assert http.request(method, path).status_code == 401
    assert http.delete("/v1/me", headers=alice).status_code == 204
    assert http.get("/v1/feed", headers=alice).status_code == 401
    assert http.get("/v1/me/export", headers=bob).status_code == 200


def test_no_secret_reaches_logs_or_error_responses(tmp_path: Path) -> None:
    store = ProductionRedis(tmp_path, password="redis-secret-" + uuid.uuid4().hex)
    store.start()
    env = {
        **os.environ,
        "REDIS_URL": store.url,
        "PAPERFEED_ADMIN_TOKEN": ADMIN_TOKEN,
        "PAPERFEED_LOG_LEVEL": "DEBUG",
        "PAPERFEED_LOG_JSON": "true",
        "PAPERFEED_DEMO_CATALOG": "false",
    }

    process, port = start_serve(env)
    bodies: list[str] = []
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        user_id, auth = register(http)
        token = auth["Authorization"].removeprefix("Bearer ")
        admin = admin_headers()
        wrong_admin = {"Authorization": f"Bearer {ADMIN_TOKEN}x"}
        requests = [
            ("POST", "/v1/admin/papers", PAPERS, admin),
            ("GET", "/v1/admin/model", None, wrong_admin),
            ("GET", "/v1/admin/model", None, auth),
            ("POST", "/v1/events", {"events": [event("2413.00001")]}, auth),
            ("POST", "/v1/events", {"events": [{"bad": token}]}, auth),
            ("GET", "/v1/feed", None, {"Authorization": f"Bearer {token}x"}),
            ("GET", "/v1/me/export", None, auth),
        ]
        for method, path, body, headers in requests:
            bodies.append(http.request(method, path, json=body, headers=headers).text)
        store.stop(signal.SIGKILL)  # errors now: connection failures are logged
        for method, path, body, headers in requests:
            bodies.append(http.request(method, path, json=body, headers=headers).text)
        bodies.append(http.get("/readyz").text)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    logs = output.decode(errors="replace")
    assert "redis unavailable" in logs  # the outage was logged ...
    assert "Traceback" not in logs  # ... a line a request, no stack (it is no bug of ours)
    for secret in (token, ADMIN_TOKEN, store.password or ""):
        assert secret not in logs  # ... without the secrets
        assert not any(secret in body for body in bodies), secret
    assert user_id  # the install existed


def test_litestar_logs_a_traceback_only_for_what_no_handler_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outage answered 503 is its handler's one line, not a stack a request, and a bug
    client_fault logged is not logged twice; wrong credentials (no retry cures them), a
    slip inside redis-py (a failover, or our bug handing it a wrong type) and any other
    fault keep their traceback."""
    from redis.exceptions import AuthenticationError, ClusterDownError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from paperfeed.api.errors import log_uncaught

    logger = logging.getLogger("litestar-test")
    scope: Any = {"type": "http", "path": "/v1/feed"}

    def slip_in_redis_py() -> None:
        redis.Redis().zadd("k", [("a", 1)])  # type: ignore[arg-type]  # AttributeError there

    logged = {}
    for name, error in (
        ("outage", RedisConnectionError("Connection refused")),
        ("timeout", RedisTimeoutError("Timeout reading from socket")),
        ("cluster down", ClusterDownError("CLUSTERDOWN")),
        ("our AttributeError", AttributeError("'NoneType' object has no attribute 'x'")),
        ("slip in redis-py", slip_in_redis_py),
        ("credentials", AuthenticationError("invalid password")),
        ("script", ResponseError("ERR Error running script")),
        ("other", KeyError("a bug")),
    ):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="litestar-test"):
            try:
                if callable(error):
                    error()
                raise error  # type: ignore[misc]
            except Exception:
                log_uncaught(logger, scope, [])
        logged[name] = [r.exc_info is not None for r in caplog.records]
    assert logged == {
        "outage": [],
        "timeout": [],
        "cluster down": [],
        "our AttributeError": [],  # client_fault logged it, with its traceback
        "slip in redis-py": [True],
        "credentials": [True],
        "script": [True],
        "other": [True],
    }


async def test_a_connection_closed_under_a_command_is_a_503_and_a_bug_is_a_500() -> None:
    """redis-py's cluster client, when a failover closes a connection a command is
    writing on, fails with an AttributeError inside redis-py (seen in test_cluster.py):
    that is storage unavailable (503, retried). The same error in our code is a bug."""
    from redis.asyncio.connection import Connection

    from paperfeed.api import errors

    closed = Connection()  # never connected: its writer is None, as after a disconnect
    with pytest.raises(AttributeError) as inside:
        await closed._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    with pytest.raises(AttributeError) as ours:
        None.attribute  # type: ignore[attr-defined]  # noqa: B018
    request: Any = type("Request", (), {"url": httpx.URL("http://test/v1/events")})()
    unavailable = errors.client_fault(request, inside.value)
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "5"
    assert errors.client_fault(request, ours.value).status_code == 500


async def test_the_store_metrics_mirror_outlives_a_connection_closed_under_it() -> None:
    """The api's loop copying Redis counters into its gauges meets the same failover
    slips (inside redis-py): it must go on (its gauges, the worker's heartbeat among
    them, would freeze for the process's life) and stop cleanly when asked."""
    from redis.asyncio.connection import Connection

    from paperfeed.api import metrics

    calls = 0

    class Failing:
        async def hmget(self, *_: Any) -> list[str]:
            nonlocal calls
            calls += 1
            await Connection()._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
            return []

    stopping = asyncio.Event()
    with mock.patch.object(metrics, "STORE_METRICS_S", 0.01):
        mirror = asyncio.create_task(metrics.mirror_store_metrics(Failing(), stopping))  # type: ignore[arg-type]
        while calls < 3:  # it tried again after each slip
            assert not mirror.done(), mirror
            await asyncio.sleep(0.01)
        stopping.set()
        await asyncio.wait_for(mirror, 5)  # ends without raising


def test_a_transport_closed_under_a_command_on_uvloop_is_storage_unavailable() -> None:
    """Under uvloop (as the api runs) the same failover makes redis-py's write raise a
    RuntimeError ("the handler is closed") from the loop's own code below redis-py: that
    too is storage unavailable (503), and the reader budget's after-spend, which runs once
    the answer is sent, counts locally instead of breaking the connection (a run of
    test_cluster.py dropped a connection on it). A RuntimeError of ours is a 500."""
    import uvloop
    from redis.asyncio.connection import Connection

    from paperfeed.api import errors
    from paperfeed.store.client import storage_failed

    async def write_on_a_closed_transport() -> BaseException:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.transport.abort()
        for _ in range(3):  # the loop frees the handle on its next turns
            await asyncio.sleep(0)
        closed = Connection()
        closed._writer = writer
        try:
            await closed._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
        except BaseException as error:
            return error
        finally:
            server.close()
        raise AssertionError("writing on a closed uvloop transport raised nothing")

    inside = uvloop.run(write_on_a_closed_transport())
    assert isinstance(inside, RuntimeError), repr(inside)
    assert storage_failed(inside)
    request: Any = type("Request", (), {"url": httpx.URL("http://test/v1/events")})()
    assert errors.client_fault(request, inside).status_code == 503
    with pytest.raises(RuntimeError) as ours:
        raise RuntimeError("a bug of ours")
    assert not storage_failed(ours.value)
    assert errors.client_fault(request, ours.value).status_code == 500
    # redis-py's refusal of a command a cluster lacks is a bug of ours too, not a failover.
    from redis.asyncio import RedisCluster

    with pytest.raises(NotImplementedError) as lacking:
        RedisCluster.__new__(RedisCluster).cluster_flushslots()
    assert not storage_failed(lacking.value)
