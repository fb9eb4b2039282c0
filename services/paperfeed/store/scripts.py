"""Lua scripts shipped with the package, and running one so that replicas have its writes."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from paperfeed.errors import Unavailable
from paperfeed.store.client import RedisClient, is_cluster


@cache
def lua(name: str) -> str:
    return resources.files("paperfeed.store").joinpath(f"lua/{name}.lua").read_text("utf-8")


class NotReplicated(Unavailable):
    """The primary has the write but too few replicas confirmed it in time."""


async def run_replicated(
    redis: RedisClient,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    replicas: int,
    timeout_ms: int,
) -> Any:
    """Run ``script`` and return only once ``replicas`` replicas have its writes.

    ``WAIT`` counts the writes of its own connection, so the script and ``WAIT`` go in one
    pipeline to the node owning ``keys`` (one connection). Raises ``NotReplicated`` when
    too few replicas confirm: the write may survive or not, so the caller must not
    acknowledge it and the client retries (scripts run this way are idempotent).
    """
    if replicas <= 0:
        return await script(keys=list(keys), args=list(args))
    for _ in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            # execute_command: the cluster pipeline blocks .evalsha() but routes EVALSHA.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            if is_cluster(redis):
                node = redis.get_node_from_key(keys[0])  # type: ignore[union-attr]
                pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
            else:
                pipe.wait(replicas, timeout_ms)
            result, confirmed = await pipe.execute(raise_on_error=False)
        if isinstance(result, NoScriptError):
            # Nothing ran: load the script (on every primary of a cluster) and go again.
            await redis.script_load(script.script)
            continue
        if isinstance(result, Exception):
            raise result
        if isinstance(confirmed, Exception) or int(confirmed) < replicas:
            raise NotReplicated(f"write not confirmed by {replicas} replica(s) in {timeout_ms} ms")
        return result
    raise NotReplicated("script could not be loaded")
