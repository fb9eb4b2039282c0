"""What every ``paperfeed`` process needs around its work: a usable Redis, progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

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
    try:
        yield msgspec.structs.replace(settings, redis_url=url)
    finally:
        if embedded.release_server(settings.data_path):
            log.info("stopped the embedded redis-server", extra={"data_dir": settings.data_dir})


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
