"""The parts of paperfeed wired to one Redis client, shared by the api and the CLI."""

from __future__ import annotations

import time

from paperfeed.catalog import importers
from paperfeed.catalog.repository import Catalog, ImportResult
from paperfeed.digest.service import Digests
from paperfeed.events import Ingestor
from paperfeed.pairing import Pairing
from paperfeed.recsys.feed import FeedService
from paperfeed.recsys.repository import ModelRepository
from paperfeed.recsys.serving import ModelHolder, Offload
from paperfeed.settings import Settings
from paperfeed.store import client
from paperfeed.store.client import RedisClient
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
        self.holder = ModelHolder(
            redis,
            self.models,
            self.trending,
            self.offload,
            poll_s=settings.model_poll_s,
            trend_s=settings.trending_snapshot_s,
        )
        self.holder.on_catalog_change = self.catalog.forget_cached
        self.feeds = FeedService(
            self.catalog,
            self.users,
            self.holder,
            self.models,
            self.offload,
            trend_s=settings.trending_snapshot_s,
        )
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
