"""One Redis client (one connection pool) per process."""

from __future__ import annotations

import redis.asyncio as aredis

from paperfeed.settings import Settings
from paperfeed.store import embedded


def resolve_redis_url(settings: Settings) -> str:
    """The URL to use, starting the embedded server when ``REDIS_URL`` is unset."""
    if settings.redis_url:
        return settings.redis_url
    return embedded.ensure_server(settings.data_path)


def connect(settings: Settings, url: str | None = None) -> aredis.Redis:
    """An asyncio client with string replies; the caller closes it with ``aclose()``.

    Keys are laid out for Redis Cluster (hash tags), but the cluster client is not wired
    in yet: ``REDIS_URL`` names one Redis server.
    """
    url = url or resolve_redis_url(settings)
    return aredis.Redis.from_url(
        url,
        decode_responses=True,
        client_name=embedded.client_name(),
        health_check_interval=30,
    )
