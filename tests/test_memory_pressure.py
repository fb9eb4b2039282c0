"""Redis at its memory limit (issue 21, item 2): writes are refused with 503 and
``Retry-After``, reads keep answering, ``/metrics`` shows memory against its limit.

The test Redis is made full for real: its ``maxmemory`` set below what it uses (CONFIG
SET, restored after), ``noeviction``, so that Redis itself refuses every write.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from paperfeed.api.limits import LocalWindows
from paperfeed.store import embedded, keys
from paperfeed.store.pressure import refused_for_memory
from tests.conftest import (
    admin_headers,
    live_server,
    make_settings,
    redis_answers,
    register,
    start_on_free_port,
)
from tests.personas import event

ROOT = Path(__file__).resolve().parent.parent

PAPERS = [
    {"id": f"2411.{n:05d}", "title": f"Paper {n} on sparse attention", "abstract": "Sparse."}
    for n in range(1, 21)
]


def metrics(http: httpx.Client) -> dict[str, float]:
    """``/metrics`` as {name{label=value,...}: value}."""
    response = http.get("/metrics")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def refused(seen: dict[str, float], what: str) -> float:
    return seen.get(f"paperfeed_redis_writes_refused_total{{what={what}}}", 0.0)


class FullRedis:
    """Makes the test Redis refuse writes for memory, and gives it its memory back."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        config = r.config_get("maxmemory*")
        self.saved = {name: config[name] for name in ("maxmemory", "maxmemory-policy")}
        self.limit = 0

    def fill(self) -> int:
        self.r.config_set("maxmemory-policy", "noeviction")
        used = int(self.r.info("memory")["used_memory"])
        # Well below what it uses: the little it frees meanwhile (a closed connection's
        # buffers) never takes it back under the limit during the test.
        self.limit = used // 2
        self.r.config_set("maxmemory", self.limit)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            self.r.set("pf:test:probe", "a write")  # Redis itself refuses it
        return self.limit

    def restore(self) -> None:
        self.r.config_set("maxmemory", self.saved["maxmemory"])
        self.r.config_set("maxmemory-policy", self.saved["maxmemory-policy"])


@pytest.fixture
def full_redis(r: redis.Redis) -> Iterator[FullRedis]:
    full = FullRedis(r)
    try:
        yield full
    finally:
        full.restore()


def budget_counters(r: redis.Redis) -> dict[str, str | None]:
    names = sorted(str(name) for name in r.scan_iter(f"{keys.RATE_LIMIT_NAMESPACE}:*"))
    return {name: r.get(name) for name in names}


def test_a_full_redis_refuses_writes_with_503_and_keeps_serving_reads(
    http: httpx.Client, r: redis.Redis, full_redis: FullRedis
) -> None:
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
    user_id, auth = register(http)
    history = [event("2411.00001", "upvote"), event("2411.00002", "save"), event("2411.00003")]
    assert http.post("/v1/events", json={"events": history}, headers=auth).status_code == 200
    assert http.get("/v1/feed", headers=auth).status_code == 200
    owned = {name: r.dump(name) for name in keys.user_keys(user_id) if r.exists(name)}
    before = metrics(http)

    limit = full_redis.fill()
    counters = budget_counters(r)

    # Writes: 503 with Retry-After and a JSON body saying why, never a 500.
    writes = [
        ("POST", "/v1/events", {"json": {"events": [event("2411.00004", "save")]}}),
        ("POST", "/v1/installs", {}),
        ("POST", "/v1/me/pairing-codes", {}),
        ("DELETE", "/v1/me", {}),  # refused before it starts: no erasure left half done
    ]
    for method, path, kwargs in writes:
        response = http.request(method, path, headers=auth, **kwargs)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.headers["retry-after"] == "60"
        body = response.json()
        assert body["status_code"] == 503
        assert "storage full" in body["detail"]

    # Reads: answered as before, the reader's and anonymous ones.
    feed = http.get("/v1/feed", headers=auth)
    assert feed.status_code == 200, feed.text
    assert feed.json()["items"], "the reader's feed, computed now that Redis is full"
    trending = http.get("/v1/trending", params={"window": "week"})
    assert trending.status_code == 200
    assert "2411.00001" in [item["paper"]["id"] for item in trending.json()["items"]]
    paper = http.get("/v1/papers/2411.00002")
    assert paper.status_code == 200
    assert paper.json()["title"] == "Paper 2 on sparse attention"
    assert http.get("/v1/papers", params={"limit": 5}).status_code == 200
    assert http.get("/v1/papers/2411.00002/similar").status_code == 200
    assert http.get("/v1/search", params={"q": "sparse"}, headers=auth).status_code == 200
    assert http.get("/v1/me/export", headers=auth).status_code == 200
    assert http.get("/v1/meta").status_code == 200
    library = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth)
    assert library.status_code == 200
    assert [item["paper"]["id"] for item in library.json()["items"]] == ["2411.00002"]
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert "maxmemory" in ready.json()["detail"]

    # Redis really refused them all: no budget counter moved, nothing the reader owns
    # changed (and nothing was evicted).
    assert budget_counters(r) == counters
    assert {name: r.dump(name) for name in keys.user_keys(user_id) if r.exists(name)} == owned

    # /metrics: Redis's memory over its limit, and the refusals counted by what they were.
    after = metrics(http)
    assert after["paperfeed_redis_maxmemory_bytes{}"] == limit
    assert after["paperfeed_redis_used_memory_bytes{}"] > limit
    # Every request above but /readyz spent a budget: the writes' were refused (no 503
    # counted twice), the reads' too (they spent this process's own budget). A batch of
    # events spends its budget in the ingest script: refused there (the request's), it is
    # spent after the request, refused again.
    assert refused(after, "budget") - refused(before, "budget") == len(writes) + 9
    assert refused(after, "request") - refused(before, "request") >= 1
    assert refused(after, "cache") - refused(before, "cache") == 1  # the feed it computed

    # Memory back: writes are accepted again, the refused event among them.
    full_redis.restore()
    retried = http.post("/v1/events", json={"events": [event("2411.00004", "save")]}, headers=auth)
    assert retried.status_code == 200
    assert "2411.00004" in r.hkeys(keys.user_papers(user_id))
    assert http.get("/readyz").status_code == 200
    assert metrics(http)["paperfeed_redis_maxmemory_bytes{}"] == float(
        full_redis.saved["maxmemory"]
    )


def test_reads_keep_a_budget_of_their_own_while_redis_is_full(
    redis_url: str, r: redis.Redis, full_redis: FullRedis
) -> None:
    """The shared budget counter cannot be written: each process counts reads itself, with
    the same limit, instead of letting them through unbudgeted."""
    per_minute = 5
    with (
        live_server(make_settings(redis_url, rate_limit_per_minute=per_minute)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        _, auth = register(http)
        full_redis.fill()
        statuses = []
        # Two windows' worth and one: one window holds more than the budget whatever the
        # clock, so a 429 must come.
        for _ in range(2 * per_minute + 1):
            response = http.get("/v1/trending", headers=auth)
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                break
        assert statuses[:per_minute] == [200] * per_minute
        assert statuses[-1] == 429, statuses


def test_local_windows_count_each_budget_within_its_window() -> None:
    windows = LocalWindows(cap=3)
    assert windows.spend("a", 60, now=600.0) == (1, 60_000)
    assert windows.spend("a", 60, now=630.0) == (2, 30_000)
    assert windows.spend("b", 60, now=630.0) == (1, 30_000)
    assert windows.spend("a", 60, now=660.0) == (1, 60_000)  # the next window
    windows.spend("c", 60, now=660.0)
    # Full: budgets of past windows are dropped first ("b"), current ones stay.
    assert windows.spend("d", 60, now=661.0)[0] == 1
    assert windows.spend("a", 60, now=662.0)[0] == 2


def test_a_refusal_for_memory_is_told_apart_from_other_errors() -> None:
    from redis.exceptions import OutOfMemoryError, ResponseError

    assert refused_for_memory(OutOfMemoryError("command not allowed when used memory..."))
    # Redis 6.2 wraps a script's refusal into a plain error.
    wrapped = (
        "Error running script (call to f_0123): @user_script:3: @user_script: 3: "
        "-OOM command not allowed when used memory > 'maxmemory'."
    )
    assert refused_for_memory(ResponseError(wrapped))
    assert not refused_for_memory(ResponseError("WRONGTYPE Operation against a key"))
    assert not refused_for_memory(redis.exceptions.ConnectionError("gone"))


@pytest.mark.slow
def test_the_embedded_redis_has_its_limit_and_two_processes_export_it(tmp_path: Path) -> None:
    """`paperfeed serve` with its embedded Redis: PAPERFEED_REDIS_MAXMEMORY, noeviction,
    and every scrape of either api process shows the limit and the memory used."""
    from tests.test_embedded import Service

    service = Service(tmp_path / "var")
    service.env["PAPERFEED_WORKERS"] = "2"
    service.env["PAPERFEED_REDIS_MAXMEMORY"] = "64mb"
    service.start()
    try:
        socket = embedded.socket_path(tmp_path / "var")
        with redis.Redis(unix_socket_path=str(socket), decode_responses=True) as client:
            config = client.config_get("maxmemory*")
        assert config["maxmemory"] == str(64 * 1024 * 1024)
        assert config["maxmemory-policy"] == "noeviction"
        for _ in range(8):
            # A new connection each time: the kernel spreads them over both processes.
            with httpx.Client(base_url=service.url) as http:
                seen = metrics(http)
            assert seen["paperfeed_redis_maxmemory_bytes{}"] == 64 * 1024 * 1024
            assert 0 < seen["paperfeed_redis_used_memory_bytes{}"] < 64 * 1024 * 1024
    finally:
        assert service.stop() == 0


REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 1024**2,
               "g": 10**9, "gb": 1024**3}  # fmt: skip
DOCKER_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
KUBERNETES_UNITS = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def in_bytes(value: str, units: dict[str, int]) -> int:
    """A size as Redis (``1536mb``), Docker (``2g``) or Kubernetes (``2Gi``) writes it."""
    found = re.fullmatch(r"([0-9]+)([a-zA-Z]*)", value)
    assert found, value
    unit = found[2] if units is KUBERNETES_UNITS else found[2].lower()
    return int(found[1]) * units[unit]


def redis_deployments() -> dict[str, tuple[list[str], int]]:
    """Each deployed Redis: (its arguments after the config file, its memory limit)."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    service = compose["services"]["redis"]
    found = {
        "compose": (
            service["command"][2:],
            in_bytes(service["deploy"]["resources"]["limits"]["memory"], DOCKER_UNITS),
        )
    }
    for doc in yaml.safe_load_all((ROOT / "k8s" / "redis" / "redis.yaml").read_text()):
        if doc and doc["kind"] == "StatefulSet":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            limit = in_bytes(container["resources"]["limits"]["memory"], KUBERNETES_UNITS)
            found["kubernetes"] = (container["args"][1:], limit)
    return found


@pytest.mark.parametrize("where", ["compose", "kubernetes"])
def test_each_deployed_redis_has_a_limit_below_its_container_and_never_evicts(
    where: str, tmp_path: Path
) -> None:
    """deploy/redis.conf with the deployment's own arguments, on a real redis-server:
    a maxmemory that leaves a quarter of the container for AOF rewrites and buffers."""
    args, container_limit = redis_deployments()[where]
    assert args[0] == "--maxmemory"
    maxmemory = in_bytes(args[1], REDIS_UNITS)
    assert 0.6 * container_limit <= maxmemory <= 0.8 * container_limit, (maxmemory, where)
    conf = tmp_path / "redis.conf"
    conf.write_text(
        (ROOT / "deploy" / "redis.conf").read_text().replace("dir /data", f"dir {tmp_path}")
    )

    def start(port: int) -> subprocess.Popen[Any]:
        return subprocess.Popen(
            [embedded.redis_server_binary(), str(conf), *args, "--port", str(port),
             "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    process, port = start_on_free_port(start, redis_answers, timeout_s=10)
    try:
        with redis.Redis(port=port, decode_responses=True) as client:
            config = client.config_get("maxmemory*")
        assert int(config["maxmemory"]) == maxmemory
        assert config["maxmemory-policy"] == "noeviction"
    finally:
        process.terminate()
        process.wait(10)


def test_the_embedded_redis_starts_with_its_limit_and_noeviction(tmp_path: Path) -> None:
    url = embedded.ensure_server(tmp_path, maxmemory="32mb")
    try:
        with redis.Redis.from_url(url, decode_responses=True) as client:
            config = client.config_get("maxmemory*")
        assert config["maxmemory"] == str(32 * 1024 * 1024)
        assert config["maxmemory-policy"] == "noeviction"
    finally:
        embedded.release_server(tmp_path)
