"""The training data read from Redis, through the trainer's cache: the same as reading
everything, whatever happened in between (real Redis)."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import pytest
import redis

from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.events import Event
from paperfeed.store import keys
from paperfeed.training.data import CACHE_FILE, Interactions, read_interactions
from tests.personas import event
from tests.recsys_fixtures import many_events, many_id, populate_many


def cells(data: Interactions) -> dict[tuple[str, str], tuple[float, float]]:
    weights, first = data.weights.tocoo(), data.first_at.tocoo()
    return {
        (data.user_ids[r], data.item_ids[c]): (float(w), float(t))
        for r, c, w, t in zip(weights.row, weights.col, weights.data, first.data, strict=True)
    }


async def test_the_cached_read_equals_a_full_read_after_changes(
    core: Core, r: redis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = await populate_many(core, readers=120)
    # Everyone was last active an hour ago: the next read may take them from the cache.
    r.zadd(keys.USERS, {user: time.time() - 3_600 for user in users})
    first = await read_interactions(core.redis, cache_dir=tmp_path)
    assert (tmp_path / CACHE_FILE).exists()
    assert cells(first) == cells(await read_interactions(core.redis))
    # Then: some readers act (a save, a dismissal), one is erased, a paper arrives and
    # a reader reads it, a paper leaves the catalog.
    rng = random.Random(2)
    for n, user in enumerate(users[:10]):
        await core.ingestor.ingest(user, many_events(n, rng, 2))
    await core.ingestor.ingest(users[10], [Event(**event(many_id(10, 1), "dismiss"))])
    await core.users.erase(users[11])
    await core.catalog.upsert([Paper(id="2412.00001", title="A new paper")], time.time())
    await core.ingestor.ingest(users[12], [Event(**event("2412.00001", "save"))])
    r.hdel(keys.PAPERS, many_id(0, 0))
    with caplog.at_level(logging.INFO, logger="paperfeed.training.data"):
        again = await read_interactions(core.redis, cache_dir=tmp_path)
    read = next(rec for rec in caplog.records if rec.getMessage() == "training data read")
    # Only the readers active since were read again.
    assert read.__dict__["read"] == 12
    assert read.__dict__["from_cache"] == len(users) - 13  # one was erased
    full = await read_interactions(core.redis)
    assert cells(again) == cells(full)
    assert users[11] not in again.user_ids
    assert (users[12], "2412.00001") in cells(again)
    assert cells(again)[(users[10], many_id(10, 1))][0] < 0  # dismissed
    assert not any(item == many_id(0, 0) for _, item in cells(again))


async def test_a_cache_of_another_deployment_is_never_used(
    core: Core, r: redis.Redis, tmp_path: Path
) -> None:
    users = await populate_many(core, readers=30)
    r.zadd(keys.USERS, {user: time.time() - 3_600 for user in users})
    await read_interactions(core.redis, cache_dir=tmp_path)
    r.flushall()  # another Redis, or this one emptied: another deployment
    others = await populate_many(core, readers=5, seed=9)
    r.zadd(keys.USERS, {user: time.time() - 3_600 for user in others})
    data = await read_interactions(core.redis, cache_dir=tmp_path)
    assert set(data.user_ids) == set(others)
    assert cells(data) == cells(await read_interactions(core.redis))


async def test_papers_are_read_in_id_order_whatever_the_redis_hash_order(
    core: Core, r: redis.Redis
) -> None:
    """The same data gives the same matrix (and so the same model) after a Redis restart:
    columns follow the papers' ids, not HSCAN's order, which follows the server's hash
    seed."""
    ids = [f"2412.{n:05d}" for n in range(300)]  # past the small-hash encoding
    random.Random(4).shuffle(ids)
    await core.catalog.upsert([Paper(id=pid, title=f"Paper {pid}") for pid in ids], time.time())
    scanned = [str(pid) for pid, _ in r.hscan_iter(keys.PAPERS)]
    assert scanned != sorted(scanned)  # Redis's own order is not the ids'
    data = await read_interactions(core.redis)
    assert data.item_ids == sorted(ids)
    assert data.item_texts[0].startswith(f"Paper {min(ids)}.")  # each text with its paper
