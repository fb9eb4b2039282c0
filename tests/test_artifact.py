"""The serving artifact (issue 24, item 1): the worker builds the catalog index once and
api processes load it instead of building their own. Real Redis, real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
import redis

from paperfeed.catalog.importers import PaperRecord, paper_from_record
from paperfeed.core import Core
from paperfeed.recsys import artifact
from paperfeed.recsys.index import CatalogIndex, build_index
from paperfeed.recsys.search import find
from paperfeed.serving.feed import decode_cached
from paperfeed.store import keys
from paperfeed.training.train import train_and_publish
from tests.conftest import (
    ADMIN_TOKEN,
    admin_headers,
    live_server,
    make_settings,
    redis_env,
    register,
    start_serve,
)
from tests.recsys_fixtures import feed, populate, train_settings
from tests.test_recommender import WorkerProcess, history_events, send, wait_for

pytestmark = [pytest.mark.slow]


def same_index(one: CatalogIndex, two: CatalogIndex, topics: bool = True) -> None:
    """Every array and mapping the feed, search and follows read is the same."""
    assert one.ids == two.ids
    assert one.titles == two.titles
    assert one.pos == two.pos
    assert one.catalog_version == two.catalog_version
    assert one.model_version == two.model_version
    assert one.fingerprint == two.fingerprint
    for name in ("dates", "text_keys", "cold", "model_rows", "newest", "pool"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
    assert (one.text != two.text).nnz == 0
    assert (one.newest_by_term != two.newest_by_term).nnz == 0
    if one.factors is None:
        assert two.factors is None
    else:
        np.testing.assert_array_equal(one.factors, two.factors)
        np.testing.assert_array_equal(one.pool_factors, two.pool_factors)
    assert one.features.same_as(two.features)
    if topics:
        assert one.topics.names == two.topics.names
        np.testing.assert_array_equal(one.topics.of_paper, two.topics.of_paper)
        assert (one.topics.centres != two.topics.centres).nnz == 0
    assert one.search.by_title == two.search.by_title
    assert one.search.by_author == two.search.by_author
    np.testing.assert_array_equal(one.search.idf, two.search.idf)
    assert one.authors.by_key == two.authors.by_key
    # The follow affinity: papers' names, one person's names, topics.
    assert one.affinity.names == two.affinity.names
    assert one.affinity.by_key == two.affinity.by_key
    assert (one.affinity.papers != two.affinity.papers).nnz == 0
    assert (one.affinity.same != two.affinity.same).nnz == 0
    assert one.affinity.papers.shape == two.affinity.papers.shape
    for each in (one, two):  # the affinity's topics are the index's own
        np.testing.assert_array_equal(each.affinity.topic_of, each.topics.of_paper)
        assert each.affinity.n_topics == len(each.topics.names)


@pytest.mark.cluster
async def test_an_index_survives_the_artifact_whole_with_and_without_a_model(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    await populate(core)
    papers, aliases = await artifact.read_catalog(core.redis, asyncio.to_thread)
    # Authors, some shared and spelled two ways: the follow affinity has names to keep.
    papers = [
        msgspec.structs.replace(
            p, authors=[f"Given{n % 7} Family{n % 7}", "A. Shared" if n % 2 else "Ada Shared"]
        )
        for n, p in enumerate(papers)
    ]
    store = artifact.ArtifactStore(core.redis)
    version = "0"
    for model in (None, await trained_model(core, redis_url)):
        built, header, chunks = artifact.build(papers, model, version, None, aliases)
        await store.publish(header, chunks)
        current = await store.current()
        assert current is not None
        assert current.id == header.id
        assert (current.model_version, current.catalog_version) == (built.model_version, "0")
        loaded = await store.load(current, model, asyncio.to_thread)
        assert built.affinity.same.nnz > 0  # the papers' authors came through
        same_index(built, loaded)
        # The loaded index searches exactly as the built one.
        query = built.titles[7].split()[0]
        found = [
            find(i.search, query, 10, i.pos, i.dates).positions.tolist() for i in (built, loaded)
        ]
        assert found[0] == found[1]
        assert found[0]
    # Nothing but numbers and msgpack in it: every array's dtype is a plain number type.
    assert all(entry.dtype in artifact.DTYPES for entry in header.arrays)


async def trained_model(core: Core, redis_url: str) -> Any:
    report = await train_and_publish(core.redis, train_settings(redis_url))
    assert report.published
    assert report.version
    return await core.models.load(report.version)


async def test_a_catalog_change_reuses_the_rows_and_a_replaced_artifact_is_pruned_after_grace(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    await populate(core)
    model = await trained_model(core, redis_url)
    papers, aliases = await artifact.read_catalog(core.redis, asyncio.to_thread)
    store = artifact.ArtifactStore(core.redis)
    first, header, chunks = artifact.build(papers[1:], model, "1", None, aliases)
    await store.publish(header, chunks)
    again, newer, more = artifact.build(papers, model, "2", first, aliases)
    await store.publish(newer, more)
    # The rows of unchanged papers are the previous index's; the whole equals a fresh
    # build, but for the topics: kept from the previous index, the new paper assigned.
    same_index(again, build_index(papers, model, "2", None, aliases), topics=False)
    assert again.topics.names == first.topics.names
    assert again.topics.of_paper[1:].tolist() == first.topics.of_paper.tolist()
    kept = r.zrange(keys.ARTIFACT_VERSIONS, 0, -1)
    assert kept == [header.id, newer.id]  # the previous one stays while processes move
    assert await store.prune(now=time.time() + artifact.GRACE_S + 1) == [header.id]
    assert not r.exists(keys.artifact_header(header.id), keys.artifact_chunk(header.id, 0))
    assert r.get(keys.ARTIFACT_CURRENT) == newer.id


async def test_the_workers_check_retires_a_replaced_artifact_after_its_grace(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """A replaced artifact leaves Redis at the worker's first check after its grace,
    without waiting for another publication (hours, while it holds its megabytes)."""
    from paperfeed.worker import Worker

    await populate(core)
    papers, aliases = await artifact.read_catalog(core.redis, asyncio.to_thread)
    store = artifact.ArtifactStore(core.redis)
    _, old, old_chunks = artifact.build(papers[1:], None, "1", None, aliases)
    await store.publish(old, old_chunks)
    _, current, chunks = artifact.build(papers, None, "2", None, aliases)
    await store.publish(current, chunks)
    worker = Worker(make_settings(redis_url), core.redis, poll_s=0.05)
    await worker.artifact_due(time.time())
    assert r.exists(keys.artifact_header(old.id))  # within its grace: processes may load it
    await worker.artifact_due(time.time() + artifact.GRACE_S + 1)
    assert not r.exists(keys.artifact_header(old.id), keys.artifact_chunk(old.id, 0))
    assert r.zrange(keys.ARTIFACT_VERSIONS, 0, -1) == [current.id]
    assert r.exists(keys.artifact_header(current.id), keys.artifact_chunk(current.id, 0)) == 2


# --- api processes and the worker ---------------------------------------------------------


def index_counts(http: httpx.Client) -> dict[str, float]:
    """``paperfeed_index_total`` of one api process, by ``how``."""
    found = re.findall(
        r'^paperfeed_index_total\{how="(\w+)"\} (\S+)$', http.get("/metrics").text, re.M
    )
    return {how: float(value) for how, value in found}


@contextlib.contextmanager
def api_processes(redis_url: str, count: int = 2) -> Iterator[list[httpx.Client]]:
    """``count`` ``paperfeed serve`` processes on one Redis, each with its own metrics."""
    env = {
        **os.environ,
        **redis_env(redis_url),
        "PAPERFEED_ADMIN_TOKEN": ADMIN_TOKEN,
        "PAPERFEED_DEMO_CATALOG": "false",
        "PAPERFEED_MODEL_POLL_S": "0.2",
        "PAPERFEED_TRENDING_SNAPSHOT_S": "0.001",
        "PAPERFEED_RATE_LIMIT_PER_MINUTE": "100000",
        "PAPERFEED_INSTALLS_PER_HOUR": "100000",
    }
    processes: list[subprocess.Popen[Any]] = []
    clients = []
    try:
        for _ in range(count):
            process, port = start_serve(env)
            processes.append(process)
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60))
        yield clients
    finally:
        for http in clients:
            http.close()
        for process in processes:
            process.terminate()
            process.communicate(timeout=30)


async def test_api_processes_serve_from_the_workers_artifact_and_never_build(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """Done means: an api process serves a feed from a published artifact without
    building any index itself; a second one loads the same artifact; a new model and a
    catalog change reach both, still without a build."""
    await populate(core)
    trained = await trained_model(core, redis_url)
    worker = WorkerProcess(redis_url, PAPERFEED_TRAIN_INTERVAL_S="86400")
    try:
        first = await asyncio.to_thread(
            wait_for, lambda: r.get(keys.ARTIFACT_CURRENT), 120, "the worker's first artifact"
        )
        assert first.startswith(f"{trained.version}.c")
        with api_processes(redis_url) as clients:
            await asyncio.to_thread(serves_from_artifacts, clients, r, redis_url, trained.version)
    finally:
        assert worker.stop() == 0
    assert "Traceback" not in worker.log
    built = [line for line in worker.lines() if line["msg"] == "serving artifact published"]
    assert len(built) >= 3  # the first, the new model's, the catalog change's


def serves_from_artifacts(
    clients: list[httpx.Client], r: redis.Redis, redis_url: str, trained: str
) -> None:
    auths = [register(http)[1] for http in clients]

    def versions() -> set[str]:
        return {
            feed(http, auth)["model_version"] for http, auth in zip(clients, auths, strict=True)
        }

    assert versions() == {trained}
    for http in clients:
        assert index_counts(http) == {"loaded": 1.0}

    # A new model: the worker builds its artifact, both processes load it.
    async def retrain() -> str:
        fresh = Core.connect(train_settings(redis_url))
        try:
            report = await train_and_publish(
                fresh.redis, train_settings(redis_url, gate_tolerance=1.0)
            )
        finally:
            await fresh.close()
        assert report.published
        assert report.version
        return report.version

    newer = asyncio.run(retrain())
    # Each process serves the previous index until the worker's artifact is loaded.
    wait_for(lambda: versions() == {newer}, 120, "both processes on the new model")
    for http in clients:
        assert index_counts(http) == {"loaded": 2.0}

    # A catalog change of one paper: found by search in both, loaded, not built.
    async def add_paper() -> None:
        fresh = Core.connect(train_settings(redis_url))
        try:
            record = PaperRecord(
                id="2412.99999", title="Zymurgical transformers for fermentation", abstract="yeast"
            )
            await fresh.catalog.upsert([paper_from_record(record, "admin")], time.time())
        finally:
            await fresh.close()

    asyncio.run(add_paper())
    wanted = str(r.get(keys.PAPERS_VERSION))

    def found(http: httpx.Client) -> list[str]:
        answer = http.get("/v1/search", params={"q": "zymurgical"}).json()
        return [item["paper"]["id"] for item in answer["items"]]

    for http in clients:
        wait_for(lambda http=http: found(http) == ["2412.99999"], 120, "the new paper")
        assert index_counts(http) == {"loaded": 3.0}
    assert versions() == {newer}
    header = r.get(keys.artifact_header(str(r.get(keys.ARTIFACT_CURRENT))))
    assert header is not None
    assert f'"catalog_version":"{wanted}"' in header


async def test_a_process_serves_its_previous_index_until_the_artifact_comes_stamped_with_it(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """The lag rule: while a worker builds (its mark is set here, and the test publishes
    the artifacts itself), a process with an index keeps serving it, feeds ranked on it
    carry its versions in their cache stamp, and the new model is served once its
    artifact is published."""
    await populate(core)
    trained = await trained_model(core, redis_url)
    store = artifact.ArtifactStore(core.redis)

    async def publish_artifact(model: Any) -> None:
        papers, aliases = await artifact.read_catalog(core.redis, asyncio.to_thread)
        catalog = str(r.get(keys.PAPERS_VERSION) or "0")
        _, header, chunks = artifact.build(papers, model, catalog, None, aliases)
        await store.publish(header, chunks)

    await publish_artifact(trained)
    r.set(keys.ARTIFACT_BUILDER, "1", ex=300)
    settings = train_settings(redis_url, artifact_wait_s=300, trending_snapshot_s=600)
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        user_id, auth = register(http)
        send(http, auth, history_events(0, 1) + history_events(0, 2))

        def stamp() -> str:
            raw = r.get(keys.user_feed(user_id))
            assert raw is not None
            return decode_cached(raw).stamp

        assert feed(http, auth)["model_version"] == trained.version
        newer = await trained_model(core, redis_url)
        assert newer.version != trained.version
        # No artifact for the new model yet: the previous index is served, and the
        # reader's feed is ranked on it and says so (ranked again once the new one is in).
        await asyncio.to_thread(
            wait_for, lambda: served_model(http) == trained.version, 30, "a served model"
        )
        for _ in range(3):
            assert feed(http, auth)["model_version"] == trained.version
            assert stamp().startswith(f"{trained.version}|")
        await publish_artifact(newer)
        await asyncio.to_thread(
            wait_for,
            lambda: feed(http, auth)["model_version"] == newer.version,
            60,
            "the new model's feed",
        )
        assert stamp().startswith(f"{newer.version}|")
        assert index_counts(http).get("built", 0.0) == 0.0


def served_model(http: httpx.Client) -> str | None:
    answer = http.get("/v1/admin/model", headers=admin_headers())
    assert answer.status_code == 200, answer.text
    return answer.json()["served_version"]


async def test_a_new_services_first_feed_shows_its_demo_catalog_while_a_worker_builds(
    core: Core, redis_url: str, r: redis.Redis
) -> None:
    """``make run`` on an empty Redis: the api loads the demo catalog while the worker
    starts building artifacts (its mark is set here; no artifact comes). The first
    reader's feed shows the demo catalog's papers: an index of an empty catalog is not
    served in the background while the real one is awaited (it showed an empty feed)."""
    r.set(keys.ARTIFACT_BUILDER, "1", ex=300)
    settings = train_settings(redis_url, demo_catalog=True, artifact_wait_s=2)
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        _, auth = register(http)
        items = feed(http, auth)["items"]
    catalog = set(r.hkeys(keys.PAPERS))
    assert len(catalog) == 136  # the demo catalog
    assert len(items) >= 10, items
    assert {item["paper"]["id"] for item in items} <= catalog
