"""The api's connection pool (``store.client.WaitingPool``) against a real Redis: a burst
larger than the pool waits for connections and is answered in full, never opening more
than the pool's size; a command that finds no connection free within the wait fails with
redis-py's "No connection available."; a command cancelled while waiting, or failing on a
dead connection, gives its connection back."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis
from redis.exceptions import ConnectionError as RedisConnectionError

from paperfeed.store.client import WaitingPool, connect
from tests.conftest import make_settings

NAME = "pool-test"


async def open_connections(redis_url: str) -> int:
    """Connections Redis itself sees under the test pool's client name."""
    async with aredis.Redis.from_url(redis_url, decode_responses=True) as watcher:
        clients = await watcher.client_list()
    return sum(1 for client in clients if client.get("name") == NAME)


async def until_waiting(pool: WaitingPool) -> None:
    """Once a command waits for a connection of ``pool`` (each turn of the loop yields
    to it once)."""
    for _ in range(1_000):
        if pool._free._waiters:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0)
    raise AssertionError("no command waits for a connection")


async def test_a_burst_larger_than_the_pool_waits_and_is_answered(redis_url: str) -> None:
    pool = WaitingPool.from_url(
        redis_url, max_connections=3, timeout=10, decode_responses=True, client_name=NAME
    )
    client = aredis.Redis.from_pool(pool)
    try:
        # Each command holds its connection 50 ms on the server: 30 of them at once
        # need the pool ten times over.
        replies = await asyncio.gather(
            *(client.eval("redis.call('SET', KEYS[1], ARGV[1]) local t = redis.call('TIME') "
                          "local stop = t[1] * 1e6 + t[2] + 50000 repeat t = redis.call('TIME') "
                          "until t[1] * 1e6 + t[2] >= stop return ARGV[1]", 1, f"k{i}", str(i))
              for i in range(30))
        )  # fmt: skip
        assert replies == [str(i) for i in range(30)]
        assert await open_connections(redis_url) == 3
        assert len(pool._available_connections) == 3
        assert not pool._in_use_connections
    finally:
        await client.aclose()


async def test_no_connection_free_within_the_wait_is_a_connection_error(redis_url: str) -> None:
    pool = WaitingPool.from_url(redis_url, max_connections=1, timeout=0.2, decode_responses=True)
    client = aredis.Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        # A waiter cancelled before its turn takes no connection with it.
        waiting = asyncio.create_task(client.ping())
        await until_waiting(pool)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await pool.release(held)
        assert await client.ping() is True
        assert await asyncio.wait_for(client.ping(), 5) is True
    finally:
        await client.aclose()


async def test_a_cancel_as_the_connection_is_handed_over_is_not_lost(redis_url: str) -> None:
    pool = WaitingPool.from_url(redis_url, max_connections=1, timeout=5, decode_responses=True)
    client = aredis.Redis.from_pool(pool)
    try:
        held = await pool.get_connection()
        waiting = asyncio.create_task(client.ping())
        await until_waiting(pool)
        # The connection is handed to the waiter and the waiter is cancelled in the same
        # turn of the loop: the cancel wins (as with redis-py's blocking pool), and the
        # connection is free again.
        await pool.release(held)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.wait_for(client.ping(), 5) is True
    finally:
        await client.aclose()


async def test_a_connection_released_twice_frees_one_slot(redis_url: str) -> None:
    pool = WaitingPool.from_url(redis_url, max_connections=1, timeout=0.2, decode_responses=True)
    client = aredis.Redis.from_pool(pool)
    try:
        connection = await pool.get_connection()
        await pool.release(connection)
        with pytest.raises(KeyError):  # redis-py's answer to a connection not in use
            await pool.release(connection)
        held = await pool.get_connection()
        # One connection, in use: the next command waits, and fails with the wait's
        # error, not with "Too many connections" (a slot too many).
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.ping()
        await pool.release(held)
    finally:
        await client.aclose()


async def test_a_connection_killed_by_the_server_is_replaced(redis_url: str) -> None:
    pool = WaitingPool.from_url(
        redis_url, max_connections=1, timeout=5, decode_responses=True, client_name=NAME
    )
    client = aredis.Redis.from_pool(pool)
    try:
        assert await client.set("pool-key", "1")
        async with aredis.Redis.from_url(redis_url, decode_responses=True) as admin:
            ours = [c["id"] for c in await admin.client_list() if c.get("name") == NAME]
            assert len(ours) == 1
            assert await admin.client_kill_filter(_id=ours[0]) == 1
        # The one connection is dead: the command on it fails (as with redis-py's own
        # pools), gives the connection back, and the pool's one slot serves the next ones
        # on a new connection.
        with pytest.raises(RedisConnectionError):
            await client.get("pool-key")
        for _ in range(3):
            assert await client.get("pool-key") == "1"
        assert await open_connections(redis_url) == 1
    finally:
        await client.aclose()


async def test_the_api_client_uses_the_waiting_pool(redis_url: str) -> None:
    client = connect(make_settings(redis_url), redis_url)
    try:
        assert isinstance(client.connection_pool, WaitingPool)  # type: ignore[union-attr]
        assert await client.ping()
    finally:
        await client.aclose()
