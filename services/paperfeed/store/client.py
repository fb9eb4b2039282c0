"""One Redis client (one connection pool per node) per process: a server or a cluster."""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.settings import Settings
from paperfeed.store import embedded

RedisClient: TypeAlias = aredis.Redis | aredis.RedisCluster
"""What every part of paperfeed talks to. Code written against it runs unchanged on one
Redis and on a Redis Cluster because every multi-key command keeps to one hash slot
(see ``store.keys``) and a script queued in a pipeline either is sent with its text
(``EVAL``) or has its ``NOSCRIPT`` handled (``store.scripts.run_replicated``)."""


POOL_WAIT_S = 5.0

CLIENT_SLIPS = (AttributeError, TypeError, RuntimeError)
"""What redis-py's asyncio cluster client can raise instead of a ``ConnectionError`` when
a failover closes a connection a command is writing on: its writer already gone
(AttributeError, TypeError) or, under uvloop, the transport closed (RuntimeError)."""


class WaitingPool(aredis.ConnectionPool):
    """redis-py's pool, but a command finding every connection in use waits for one (up
    to ``timeout`` seconds, then ``ConnectionError("No connection available.")``) where
    the plain pool fails at once with "Too many connections": ``BlockingConnectionPool``'s
    promise. That pool takes a condition and a timeout context for every command, wanted
    or not (about 30 us of client CPU a command more than the plain pool, measured side by
    side at 50 concurrent: docs/benchmarks.md); here a semaphore counts the connections
    handed out, and only a command that finds none free sets up a wait. (redis-py's own
    connection metrics, for OpenTelemetry, are not recorded at checkout: paperfeed does
    not export them.)"""

    def __init__(self, *, timeout: float = POOL_WAIT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._free = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if self._free.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._free.acquire()
            except TimeoutError as exc:
                raise RedisConnectionError("No connection available.") from exc
        else:
            await self._free.acquire()
        try:
            async with self._lock:  # (held by redis-py while it moves connections)
                connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._free.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)  # the connection and its slot
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        # The slot is freed once the connection is no longer in use, and only then: a
        # connection released twice, or a release cancelled before it took the pool's
        # lock, must not leave more slots than connections.
        was_in_use = connection in self._in_use_connections
        try:
            await super().release(connection)
        finally:
            if was_in_use and connection not in self._in_use_connections:
                self._free.release()


def storage_failed(error: BaseException) -> bool:
    """``error`` says Redis could not be reached or could not answer, not that paperfeed
    has a bug: a Redis or network error, or one of ``CLIENT_SLIPS`` raised inside
    redis-py's own calls (the deepest frame of redis-py or paperfeed is redis-py's; the
    event loop's frames below it do not count)."""
    if isinstance(error, RedisError | RedisClusterException | OSError):
        return True
    if not isinstance(error, CLIENT_SLIPS) or isinstance(error, NotImplementedError):
        return False  # (redis-py's answer to a command a cluster lacks: a bug of ours)
    deepest = ""
    traceback = error.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] in ("redis", "paperfeed"):
            deepest = module.partition(".")[0]
        traceback = traceback.tb_next
    return deepest == "redis"


def resolve_redis_url(settings: Settings) -> str:
    """The URL to use, starting the embedded server when ``REDIS_URL`` is unset."""
    if settings.redis_url:
        return settings.redis_url
    return embedded.ensure_server(settings.data_path, maxmemory=settings.redis_maxmemory)


def connect(settings: Settings, url: str | None = None) -> RedisClient:
    """An asyncio client with str replies; the caller closes it with ``aclose()``.

    Binary values (model blobs) are read through ``bytes_client``.
    """
    url = url or resolve_redis_url(settings)
    if settings.redis_cluster:
        return aredis.RedisCluster.from_url(
            url,
            decode_responses=True,
            client_name=embedded.client_name(),
            # A failover takes a few seconds: retry with backoff for about that long, then
            # the api answers 503 and the extension retries the same events later.
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6),
            socket_connect_timeout=2,
            socket_timeout=5,
            max_connections=settings.redis_max_connections,
        )
    # A burst of requests waits for a free connection (up to POOL_WAIT_S) instead of
    # failing with "Too many connections".
    pool = WaitingPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=POOL_WAIT_S,
        decode_responses=True,
        client_name=embedded.client_name(),
        health_check_interval=30,
    )
    return aredis.Redis.from_pool(pool)


def is_cluster(redis: RedisClient) -> bool:
    return isinstance(redis, aredis.RedisCluster)


def bytes_client(redis: RedisClient) -> RedisClient:
    """A client to the same server or cluster whose replies are bytes, not str.

    The caller closes it with ``aclose()``.
    """
    if isinstance(redis, aredis.RedisCluster):
        nodes = [ClusterNode(node.host, node.port) for node in redis.get_primaries()]
        return aredis.RedisCluster(
            startup_nodes=nodes,
            decode_responses=False,
            socket_connect_timeout=2,
            socket_timeout=30,
            **_credentials(redis.get_primaries()[0].connection_kwargs),
        )
    pool = redis.connection_pool
    # from_pool: closing the client closes the pool too.
    return aredis.Redis.from_pool(
        aredis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "decode_responses": False},
        )
    )


def _credentials(connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in connection_kwargs.items() if k in ("username", "password", "ssl")}


def redact(url: str) -> str:
    """``url`` without its password, for logs and ``paperfeed settings``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
