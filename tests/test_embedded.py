"""``paperfeed serve`` with its embedded Redis: the demo catalog, sharing, persistence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FIXTURES, free_port, paperfeed_cli
from tests.test_events import event

pytestmark = pytest.mark.slow


def paperfeed_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERFEED_")}
    env.pop("REDIS_URL", None)
    env.update(
        PAPERFEED_DATA_DIR=str(data_dir),
        PAPERFEED_PORT=str(port),
        PAPERFEED_ADMIN_TOKEN="embedded-admin",
        PAPERFEED_LOG_JSON="false",
    )
    return env


class Service:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.env = paperfeed_env(data_dir, self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The port was free when chosen; another process may take it before the server
        # binds it. A server that exits at once is started again on a new port (its URL
        # is read from ``self.url`` after start).
        for attempt in range(3):
            self.process = subprocess.Popen(
                [sys.executable, "-m", "paperfeed.cli", "serve"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._ready():
                return
            if attempt < 2 and self.process.poll() is not None:
                self.port = free_port()
                self.env["PAPERFEED_PORT"] = str(self.port)
                self.url = f"http://127.0.0.1:{self.port}"
                continue
            break
        raise AssertionError("paperfeed serve did not become ready")

    def _ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited (the port was taken, say)
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "var")
    yield svc
    if svc.process and svc.process.poll() is None:
        svc.process.kill()


def test_serve_loads_demo_catalog_keeps_data_across_restarts_and_shares_redis(
    service: Service, tmp_path: Path
) -> None:
    service.start()
    http = httpx.Client(base_url=service.url, timeout=10)
    first_page = http.get("/v1/papers", params={"limit": 200}).json()
    assert len(first_page["items"]) == 136
    trending = http.get("/v1/trending", params={"window": "day", "limit": 3}).json()
    assert trending["items"][0]["paper"]["title"] == (
        "Streaming Deep Reinforcement Learning Finally Works"
    )

    install = http.post("/v1/installs").json()
    auth = {"Authorization": f"Bearer {install['token']}"}
    saved = event(first_page["items"][5]["id"], "save")
    assert http.post("/v1/events", json={"events": [saved]}, headers=auth).json()["accepted"] == 1

    # `paperfeed import` beside the running service uses the same embedded Redis.
    imported = paperfeed_cli("import", str(FIXTURES / "daily_papers.json"), env=service.env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["new"] == 6
    assert http.get("/v1/papers/2312.17653").status_code == 200

    assert service.stop() == 0
    socket = tmp_path / "var" / "redis.sock"
    assert not socket.exists(), "the embedded redis-server stops with the service"
    assert (tmp_path / "var" / "appendonlydir").exists() or (
        tmp_path / "var" / "appendonly.aof"
    ).exists()

    service.start()
    export = http.get("/v1/me/export", headers=auth).json()
    assert export["user_id"] == install["user_id"]
    assert [(e["paper_id"], e["type"]) for e in export["events"]] == [
        (saved["paper_id"], saved["type"])
    ]
    assert http.get("/v1/papers/2312.17653").status_code == 200
    assert len(http.get("/v1/papers", params={"limit": 200}).json()["items"]) == 142
    # A replay after the restart is still recognised.
    again = http.post("/v1/events", json={"events": [saved]}, headers=auth).json()
    assert again == {"accepted": 0, "duplicates": 1, "unknown_papers": 0}
    assert service.stop() == 0


def test_import_alone_starts_and_stops_the_embedded_redis(tmp_path: Path) -> None:
    env = paperfeed_env(tmp_path / "var", free_port())
    done = paperfeed_cli("import", str(FIXTURES / "daily_papers.json"), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["papers"] == 6
    assert not (tmp_path / "var" / "redis.sock").exists()
    again = paperfeed_cli("import", str(FIXTURES / "daily_papers.json"), env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"papers": 6, "new": 0, "updated": 0}


def test_a_wrong_setting_stops_with_a_clear_message(tmp_path: Path) -> None:
    env = paperfeed_env(tmp_path / "var", free_port())
    env["PAPERFEED_PORT"] = "eighty"
    done = paperfeed_cli("serve", env=env)
    assert done.returncode == 2
    assert "PAPERFEED_PORT" in done.stderr


def test_a_killed_embedded_redis_is_restarted_and_loses_nothing_acknowledged(
    service: Service, tmp_path: Path
) -> None:
    """An OOM kill of the embedded redis-server: the service starts it again from its
    AOF; events acknowledged before and after are all there."""
    service.start()
    http = httpx.Client(base_url=service.url, timeout=10)
    paper = http.get("/v1/papers", params={"limit": 1}).json()["items"][0]["id"]
    install = http.post("/v1/installs").json()
    auth = {"Authorization": f"Bearer {install['token']}"}
    acknowledged: list[tuple[str, int]] = []

    def send(kind: str) -> int:
        sent = event(paper, kind, dwell_ms=1_000 + len(acknowledged))  # each one distinct
        answer = http.post("/v1/events", json={"events": [sent]}, headers=auth)
        if answer.status_code == 200:
            acknowledged.append((kind, sent["dwell_ms"]))
        return answer.status_code

    assert send("view") == 200
    pid = int((tmp_path / "var" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    # Events keep coming while it is down: refused (503, retried by the extension) or
    # acknowledged, never acknowledged and lost.
    deadline = time.monotonic() + 30
    while not (send("click") == 200 and len(acknowledged) >= 3):
        assert time.monotonic() < deadline, "the embedded redis-server did not come back"
        time.sleep(0.1)
    assert int((tmp_path / "var" / "redis.pid").read_text()) != pid
    assert http.get("/readyz").status_code == 200
    exported = http.get("/v1/me/export", headers=auth).json()
    assert set(acknowledged) <= {(e["type"], e["dwell_ms"]) for e in exported["events"]}
    assert service.stop() == 0
