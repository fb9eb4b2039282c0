"""The api process's bounded thread pools for CPU work off the event loop (``Offload``):
the feeds' and the follows' (``feed_threads``), and the housekeeping pool that loads
models and catalog indexes (``Core``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Offload:
    """A bounded pool for CPU work of the api (numpy and BLAS release the GIL): at most
    ``limit`` calls run, the rest wait their turn, so a burst cannot pile up threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, function: Callable[..., T], *args: object) -> T:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            return await asyncio.to_thread(function, *args)
