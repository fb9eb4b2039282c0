"""What every ``paperfeed`` process needs around its work: a usable Redis, progress bars."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
from tqdm import tqdm

from paperfeed.settings import Settings
from paperfeed.store import client, embedded

log = logging.getLogger("paperfeed")

Progress = Callable[[str, int, int], None]


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Settings whose ``redis_url`` is usable; the embedded server is released after."""
    if settings.redis_url:
        yield settings
        return
    url = client.resolve_redis_url(settings)
    watch = EmbeddedWatch(settings.data_path, settings.redis_maxmemory)
    watch.start()
    try:
        yield msgspec.structs.replace(settings, redis_url=url)
    finally:
        watch.stop()
        if embedded.release_server(settings.data_path):
            log.info("stopped the embedded redis-server", extra={"data_dir": settings.data_dir})


WATCH_EVERY_S = 1.0
WATCH_BACKOFF_CAP_S = 30.0


class EmbeddedWatch(threading.Thread):
    """Restarts the embedded redis-server if it dies (an OOM kill, a crash): its AOF
    brings back every acknowledged write, and the clients reconnect by themselves.
    Repeated failures back off (1 s, 2 s, ... up to ``WATCH_BACKOFF_CAP_S``)."""

    def __init__(self, data_dir: Path, maxmemory: str = embedded.DEFAULT_MAXMEMORY) -> None:
        super().__init__(name="embedded-redis-watch", daemon=True)
        self.data_dir = data_dir
        self.maxmemory = maxmemory
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.wait(WATCH_EVERY_S if failures == 0 else
                                     min(WATCH_BACKOFF_CAP_S, 2.0 ** (failures - 1))):  # fmt: skip
            if embedded.is_up(self.data_dir):
                failures = 0
                continue
            log.error("the embedded redis-server is down; starting it again",
                      extra={"data_dir": str(self.data_dir), "attempt": failures + 1})  # fmt: skip
            try:
                embedded.ensure_server(self.data_dir, maxmemory=self.maxmemory)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                failures += 1
                log.error("restarting the embedded redis-server failed",
                          extra={"error": repr(exc), "attempt": failures})  # fmt: skip
            else:
                failures = 0
                log.info(
                    "the embedded redis-server is back", extra={"data_dir": str(self.data_dir)}
                )

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)


@contextlib.contextmanager
def bars() -> Iterator[Progress]:
    """A progress callback drawing one tqdm bar per stage on stderr."""
    open_bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = open_bars.get(stage)
        if bar is None:
            bar = open_bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=True)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        for bar in open_bars.values():
            bar.close()
