"""The model and catalog index an api process serves with, kept current without restarts.

Each process polls ``pf:{model}:current`` and ``pf:papers:version`` every
``model_poll_s``. A new model version is loaded, and the catalog index made for it,
beside the old ones; both are swapped in only when complete, so a broken or missing
blob leaves the process serving what it had. Loading, decoding and encoding run in the
process's bounded thread pool (``Offload``), never on the event loop.

The catalog index is **loaded** from the worker's serving artifact (``recsys.artifact``)
when there is one for the versions wanted. While a worker builds artifacts
(``pf:{artifact}:builder``), a process that has an index takes a new one up in the
background (waiting up to ``artifact_wait_s`` for its artifact) and serves the previous
one meanwhile; the feeds ranked on it are stamped with its versions
(``serving_versions``). With no artifact coming (no worker, an older worker, a wait run
out) it **builds** the index itself, as every process did before, and without a worker
the feeds that need it wait for it. ``paperfeed_index_total{how}`` counts both.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import Counter
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.offload import Offload
from paperfeed.recsys import kernels
from paperfeed.recsys.artifact import ArtifactStore, Header, read_catalog
from paperfeed.recsys.index import (
    EMPTY_TREND,
    CatalogIndex,
    TrendSnapshot,
    build_index,
    trend_snapshot,
)
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.repository import ModelRepository
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.trending import Trending

log = logging.getLogger(__name__)

SNAPSHOT_SIZE = 5_000
TODAY_SIZE = 100
ARTIFACT_POLL_S = 0.1
"""How often a process waiting for the worker's artifact reads its pointer (one GET)."""

INDEX_TOTAL = Counter(
    "paperfeed_index_total",
    "Catalog indexes taken up: loaded from the worker's artifact, or built in-process",
    ["how"],
)


def _not_older(have: str, want: str) -> bool:
    """Catalog version ``have`` is ``want`` or a later one (versions are counters)."""
    if have == want:
        return True
    try:
        return int(have) > int(want)
    except ValueError:
        return False


class ModelHolder:
    def __init__(
        self,
        redis: RedisClient,
        repository: ModelRepository,
        trending: Trending,
        offload: Offload,
        poll_s: float,
        trend_s: float,
        artifact_wait_s: float = 0.0,
    ) -> None:
        self.redis = redis
        self.artifacts = ArtifactStore(redis)
        self.artifact_wait_s = artifact_wait_s
        self.on_catalog_change: Callable[[], None] = lambda: None
        """Called when this process sees the catalog change (its paper cache empties)."""
        self.repository = repository
        self.trending = trending
        self.offload = offload
        self.poll_s = poll_s
        self.trend_s = trend_s
        self.model: RecModel | None = None
        self.index: CatalogIndex | None = None
        self.trend: TrendSnapshot = EMPTY_TREND
        self.failed_version: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()

    def has_paper(self, paper_id: str) -> bool:
        """Whether the catalog index of this process has the paper (by any of its ids)."""
        index = self.index
        return index is not None and paper_id in index.pos

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    @property
    def catching_up(self) -> bool:
        """A newer index is being taken up in the background; ``index`` is the previous
        one, served meanwhile."""
        task = self._catching_up
        return self.index is not None and task is not None and not task.done()

    def serving_versions(self, model_version: Any, catalog_version: Any) -> tuple[Any, Any]:
        """The (model, catalog) versions a feed ranked now is ranked on: the Redis ones
        given, or the index's while a newer index is taken up in the background (the
        feed's cache stamp names what it was ranked on, so a feed ranked on the previous
        index is ranked again once the new one is in)."""
        index = self.index
        if index is None or not self.catching_up:
            return model_version, catalog_version
        return index.model_version, index.catalog_version

    async def refresh(self) -> bool:
        """Take up a new model and catalog index if the model or the catalog changed;
        True when something changed.

        While a worker builds artifacts and this process has an index, the new one is
        taken up in the background (waiting for the worker's artifact, then loading
        it) and the previous one is served meanwhile: False at once. Otherwise (the
        first index, no worker) the caller waits for it, as every process did before
        artifacts. An index of an empty catalog is no index: serving it meanwhile would
        show a new service's first readers an empty feed."""
        if self.catching_up:
            return False
        if await self._in_background():
            return False
        return await self._take_up(foreground=True)

    async def _in_background(self) -> bool:
        """While a worker builds and this process has an index of papers: a new index is
        taken up in the background (when one is due) and the present one served; True.
        Asked again by a caller that waited for the lock behind another's take-up (the
        index it waited for may be in by then)."""
        if self.catching_up:
            return True
        if not (
            self.index is not None and len(self.index) and await self.artifacts.builder_alive()
        ):
            return False
        if await self._stale():
            self._catching_up = asyncio.create_task(self._catch_up(), name="catch-up")
        else:
            await self.refresh_trend()
        return True

    async def _stale(self) -> bool:
        """The model or the catalog moved since the index was made."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.MODEL_CURRENT)
            pipe.get(keys.PAPERS_VERSION)
            version, catalog = await pipe.execute()
        index = self.index
        if index is None or index.catalog_version != str(catalog or "0"):
            return True
        wanted = str(version) if version else None
        return wanted not in (index.model_version, self.failed_version) and wanted is not None

    async def _catch_up(self) -> None:
        try:
            await self._take_up()
        except (RedisError, RedisClusterException, OSError) as exc:
            log.warning("taking up a new index failed; trying again", extra={"error": repr(exc)})
        except Exception:
            log.exception("taking up a new index failed; trying again")

    async def _take_up(self, foreground: bool = False) -> bool:
        async with self._lock:
            if foreground and await self._in_background():
                return False
            changed = False
            version = await self.repository.current_version()
            model = self.model
            if version and version != self.version and version != self.failed_version:
                try:
                    model = await self.repository.load(version, self.offload)
                    # What a reader's fold-in needs, made before the first feed waits on it.
                    await self.offload(model.base_inverse)
                except Exception:
                    log.exception(
                        "loading model failed; keeping the current one", extra={"version": version}
                    )
                    self.failed_version = version
                    model = self.model
            catalog_version = str(await self.redis.get(keys.PAPERS_VERSION) or "0")
            index = self.index
            stale = (
                index is None
                or index.catalog_version != catalog_version
                or index.model_version != (model.version if model else None)
            )
            if stale:
                if index is not None and index.catalog_version != catalog_version:
                    self.on_catalog_change()
                index = await self._index_for(model, catalog_version, index)
                # Hashing 50,000 ids takes a millisecond or two: here, not in a feed.
                await self.offload(lambda built=index: built.fingerprint)
                self.model, self.index = model, index
                # The index and the model are hundreds of thousands of long-lived objects:
                # left to the cyclic collector, each full collection walks them all on
                # the event loop (170 ms at 50,000 papers, every request waiting).
                # Frozen, they are never scanned again (refcounting still frees them).
                gc.freeze()
                if model is not None and version == model.version:
                    log.info("model loaded", extra={"version": model.version, "papers": len(index)})
                changed = True
                self.trend = EMPTY_TREND
            await self.refresh_trend()
            return changed

    async def _index_for(
        self, model: RecModel | None, catalog_version: str, previous: CatalogIndex | None
    ) -> CatalogIndex:
        """The catalog index of ``model`` and ``catalog_version``: the worker's artifact
        when there is one (or comes within ``artifact_wait_s``), else built here."""
        header = await self._artifact_for(model.version if model else None, catalog_version)
        if header is not None:
            started = time.perf_counter()
            try:
                index = await self.artifacts.load(header, model, self.offload)
            except (LookupError, ValueError, msgspec.DecodeError) as exc:
                log.warning(
                    "serving artifact unusable; building the index here",
                    extra={"artifact": header.id, "error": repr(exc)},
                )
            else:
                INDEX_TOTAL.labels(how="loaded").inc()
                log.info(
                    "catalog index loaded",
                    extra={
                        "artifact": header.id,
                        "papers": len(index),
                        "model": index.model_version,
                        "catalog": index.catalog_version,
                        "seconds": round(time.perf_counter() - started, 3),
                    },
                )
                return index
        papers, aliases = await read_catalog(self.redis, self.offload)
        index = await self.offload(build_index, papers, model, catalog_version, previous, aliases)
        INDEX_TOTAL.labels(how="built").inc()
        return index

    async def _artifact_for(self, model_version: str | None, catalog_version: str) -> Header | None:
        """The current artifact if it serves ``model_version`` and ``catalog_version`` (or
        a newer catalog: the worker skips versions a burst of imports passed through);
        while a worker builds artifacts, waited for up to ``artifact_wait_s``."""
        deadline = time.monotonic() + self.artifact_wait_s
        while True:
            header = await self.artifacts.current()
            if (
                header is not None
                and header.model_version == model_version
                and _not_older(header.catalog_version, catalog_version)
            ):
                return header
            if time.monotonic() >= deadline or not await self.artifacts.builder_alive():
                return None
            await asyncio.sleep(ARTIFACT_POLL_S)

    async def refresh_trend(self, now: float | None = None) -> TrendSnapshot:
        """The trending snapshot, taken again in each new epoch of ``trend_s`` seconds on
        the common clock, or when the index changed. (A reader's cached feed lives by
        their own epoch, offset from this one: ``feed.reader_epoch``; the candidate table
        kept with it keeps the trending it was ranked with.)"""
        now = time.time() if now is None else now
        index = self.index
        if index is None:
            return self.trend
        if (
            self.trend.catalog_version == index.catalog_version
            and int(now // self.trend_s) == int(self.trend.taken_at // self.trend_s)
            and len(self.trend.week) == len(index)
        ):
            return self.trend
        week = await self.trending.top("week", SNAPSHOT_SIZE, now)
        today = await self.trending.top("day", TODAY_SIZE, now)
        self.trend = trend_snapshot(index, week, today, now)
        return self.trend

    async def _poll(self) -> None:
        # The ranking's compiled kernels, loaded from numba's cache (compiled the first
        # time) before the first feed needs them, while the api already answers.
        await self.offload(kernels.warm_up)
        gc.freeze()  # numba's own objects too
        failing = False
        while not self._stopping.is_set():
            try:
                await self.refresh()
                failing = False
            except (RedisError, RedisClusterException, OSError) as exc:
                # Redis down for a moment: keep serving, try again.
                if not failing:
                    log.warning("model poll failed", extra={"error": repr(exc)})
                failing = True
            except Exception:
                log.exception("refreshing the model or the catalog index failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_s)

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._poll(), name="model-poll")

    async def stop(self) -> None:
        # An event, not a cancel: redis-py may turn a cancel inside a command into a
        # ConnectionError, which the loop would take for a Redis hiccup and go on.
        if self._task:
            self._stopping.set()
            await self._task
        if self._catching_up is not None and not self._catching_up.done():
            self._catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._catching_up
