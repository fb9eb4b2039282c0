"""The parts of paperfeed wired to one Redis client, shared by the api and the CLI."""

from __future__ import annotations

import time

from paperfeed.catalog import importers
from paperfeed.catalog.repository import Catalog, ImportResult
from paperfeed.digest.service import Digests, RunReport
from paperfeed.events import Ingestor
from paperfeed.follows import FollowService
from paperfeed.offload import Offload
from paperfeed.pairing import Pairing
from paperfeed.recsys.repository import ModelRepository
from paperfeed.serving.feed import FeedService
from paperfeed.serving.holder import ModelHolder
from paperfeed.settings import Settings
from paperfeed.store import client, keys
from paperfeed.store.client import RedisClient
from paperfeed.store.lease import Lease
from paperfeed.trending import Trending
from paperfeed.users import Users


class Core:
    def __init__(self, settings: Settings, redis: RedisClient, redis_url: str) -> None:
        self.settings = settings
        self.redis = redis
        self.redis_url = redis_url
        self.trending = Trending(redis, settings)
        self.catalog = Catalog(redis, settings, self.trending)
        self.ingestor = Ingestor(redis, settings, self.catalog, self.trending)
        self.users = Users(redis, self.catalog, self.trending)
        self.pairing = Pairing(redis, self.users, self.trending)
        self.models = ModelRepository(redis, settings.models_kept)
        self.offload = Offload(settings.feed_threads)
        # Loading a model and rebuilding the catalog index take seconds: in a pool of
        # their own, so that feeds never queue behind them.
        self.housekeeping = Offload(1)
        self.holder = ModelHolder(
            redis,
            self.models,
            self.trending,
            self.housekeeping,
            poll_s=settings.model_poll_s,
            trend_s=settings.trending_snapshot_s,
            artifact_wait_s=settings.artifact_wait_s,
        )
        self.holder.on_catalog_change = self.catalog.forget_cached
        self.catalog.indexed = self.holder.has_paper
        self.feeds = FeedService(
            self.catalog,
            self.users,
            self.holder,
            self.models,
            self.offload,
            trend_s=settings.trending_snapshot_s,
        )
        self.follows = FollowService(redis, self.feeds.index, self.offload)
        self.digests = Digests(redis, settings, self.feeds)

    @classmethod
    def connect(cls, settings: Settings) -> Core:
        url = client.resolve_redis_url(settings)
        return cls(settings, client.connect(settings, url), url)

    async def close(self) -> None:
        await self.redis.aclose()

    async def load_demo_catalog_if_empty(self) -> ImportResult | None:
        """The shipped trending page becomes the catalog of a brand-new service."""
        if await self.catalog.count():
            return None
        papers = importers.parse_page(importers.seed_page_text())
        await self.catalog.seed_page_order(papers, time.time())
        return ImportResult(papers=len(papers), new=len(papers), updated=0)


async def forget_inactive(settings: Settings, dry_run: bool = False) -> int:
    """Erase the installs inactive for ``forget_inactive_days`` (or count them)."""
    core = Core.connect(settings)
    try:
        days = settings.forget_inactive_days
        if dry_run:
            return await core.users.count_inactive(days)
        silent = await core.users.forget_silent(settings.forget_silent_installs_days)
        return silent + await core.users.forget_inactive(days)
    finally:
        await core.close()


class DigestsBusy(RuntimeError):
    """Another process holds the digest lock."""


async def run_digests(settings: Settings, dry_run: bool = False) -> RunReport:
    """One run over every subscriber, under the digest lock (never two runs at once): the
    worker's ``digests`` job and ``paperfeed digest``."""
    with Lease(settings, keys.DIGEST_LOCK, settings.lock_ttl_s) as lease:
        if not dry_run and not lease.acquire():
            raise DigestsBusy("another process is sending digests (pf:digest:lock)")
        core = Core.connect(settings)
        try:
            await core.holder.refresh()  # the feed's model, as the api serves it
            return await core.digests.run(
                dry_run=dry_run, show=lambda text: print(text, flush=True)
            )
        finally:
            await core.close()
