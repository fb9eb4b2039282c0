"""Application metrics beside Litestar's request metrics (served at /metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any, Final

import msgspec
from prometheus_client import Counter, Gauge

from paperfeed.catalog.sync import read_state
from paperfeed.recsys.repository import is_gate_decision
from paperfeed.serving.holder import ModelHolder
from paperfeed.store import keys
from paperfeed.store.client import RedisClient, is_cluster, storage_failed

log = logging.getLogger(__name__)

# With several api processes (PAPERFEED_WORKERS > 1) each writes its metrics to
# PROMETHEUS_MULTIPROC_DIR and a scrape sums them; a gauge shows the value most recently
# set by a living process (they all mirror the same Redis or model state).
SHARED: Final = "livemostrecent"

EVENTS_ACCEPTED = Counter("paperfeed_events_accepted_total", "Events applied")
EVENTS_DUPLICATE = Counter("paperfeed_events_duplicate_total", "Replayed events ignored")
FEEDS_SERVED = Counter("paperfeed_feeds_total", "Personalized feeds served", ["kind"])

# Counted in Redis by whichever process sends mail (worker, CronJob, api), mirrored here.
DIGEST_COUNTERS = {
    "digest_sent": Gauge(
        "paperfeed_digest_sent", "Digests accepted by the SMTP server", multiprocess_mode=SHARED
    ),
    "digest_confirmations": Gauge(
        "paperfeed_digest_confirmations_sent",
        "Confirmation mails accepted by the SMTP server",
        multiprocess_mode=SHARED,
    ),
    "digest_smtp_failures": Gauge(
        "paperfeed_digest_smtp_failures",
        "SMTP attempts that failed (each retry counts)",
        multiprocess_mode=SHARED,
    ),
    "digest_failed": Gauge(
        "paperfeed_digest_failed",
        "Digests given up after every retry (sent on the next run)",
        multiprocess_mode=SHARED,
    ),
}
MODEL_AGE = Gauge(
    "paperfeed_model_age_seconds",
    "Seconds since the served model was trained (NaN: none)",
    multiprocess_mode=SHARED,
)
GATE_PUBLISHED = Gauge(
    "paperfeed_model_gate_published",
    "The last training's gate decision: 1 published, 0 not",
    multiprocess_mode=SHARED,
)
GATE_REFUSALS = Gauge(
    "paperfeed_model_gate_refusals_in_a_row",
    "Training runs in a row whose gate published nothing (0: the last one published)",
    multiprocess_mode=SHARED,
)
GATE_DECISIONS_READ = 20
TRAINING_SECONDS = Gauge(
    "paperfeed_model_training_seconds",
    "Seconds the last training run spent in each stage (read, prepare, learn, gate, publish;"
    " learn's own stages as learn.<stage>, docs/recommender.md)",
    ["stage"],
    multiprocess_mode=SHARED,
)
TRAINING_STAGES = ("read", "prepare", "learn", "gate", "publish")
GATE_AT = Gauge(
    "paperfeed_model_gate_decision_timestamp_seconds",
    "When the last gate decision was made",
    multiprocess_mode=SHARED,
)
GATE_NDCG = Gauge(
    "paperfeed_model_gate_ndcg",
    "nDCG@20 on the last gate's judged interactions",
    ["model"],
    multiprocess_mode=SHARED,
)
SYNC_LAST_SUCCESS = Gauge(
    "paperfeed_sync_last_success_timestamp_seconds",
    "When each catalog source last synced (0: never)",
    ["source"],
    multiprocess_mode=SHARED,
)
SYNC_ADDED = Gauge(
    "paperfeed_sync_papers_added",
    "Papers each catalog source added, in total",
    ["source"],
    multiprocess_mode=SHARED,
)
SYNC_FAILURES = Gauge(
    "paperfeed_sync_failures",
    "Failed syncs of each catalog source, in total",
    ["source"],
    multiprocess_mode=SHARED,
)
SYNC_CATEGORY_LAST_SUCCESS = Gauge(
    "paperfeed_sync_category_last_success_timestamp_seconds",
    "When each arXiv category last synced (0: never)",
    ["category"],
    multiprocess_mode=SHARED,
)
SYNC_CATEGORY_ADDED = Gauge(
    "paperfeed_sync_category_papers_added",
    "Papers each arXiv category added, in total",
    ["category"],
    multiprocess_mode=SHARED,
)
SYNC_CATEGORY_FAILURES = Gauge(
    "paperfeed_sync_category_failures",
    "Failed runs of each arXiv category, in total",
    ["category"],
    multiprocess_mode=SHARED,
)
SYNC_CATEGORY_FAILING = Gauge(
    "paperfeed_sync_category_failing",
    "1 while an arXiv category's last run failed (it waits for its retry), else 0",
    ["category"],
    multiprocess_mode=SHARED,
)
REPORTED_WAITING = Gauge(
    "paperfeed_reported_waiting",
    "Reported arXiv ids waiting for a source to confirm them (at the last lookup)",
    multiprocess_mode=SHARED,
)
REPORTED_DROPPED = Gauge(
    "paperfeed_reported_dropped",
    "Reported ids dropped because no source knows them, in total",
    multiprocess_mode=SHARED,
)
SYNC_SOURCES = ("hf", "arxiv", "reported")
"""Units with the source metrics; ``reported`` is the lookup of reported ids."""
STORE_METRICS_S = 5.0

# Redis memory against its limit, read from INFO at each scrape (alert on their ratio,
# docs/deploy.md "Memory limit and eviction"). On a cluster: the primary nearest its limit.
# Writes refused at the limit: ``store.pressure.WRITES_REFUSED``
# (paperfeed_redis_writes_refused_total{what="budget|cache|request"}).
REDIS_USED_MEMORY = Gauge(
    "paperfeed_redis_used_memory_bytes",
    "Memory Redis uses (INFO used_memory; a cluster's primary nearest its limit)",
    multiprocess_mode=SHARED,
)
REDIS_MAXMEMORY = Gauge(
    "paperfeed_redis_maxmemory_bytes",
    "Redis's maxmemory, where it refuses writes (0: no limit)",
    multiprocess_mode=SHARED,
)
REDIS_UP = Gauge(
    "paperfeed_redis_up",
    "1 when Redis answered INFO at this scrape, 0 when it did not",
    multiprocess_mode=SHARED,
)
REDIS_COMMANDS = Gauge(
    "paperfeed_redis_commands_processed",
    "Commands Redis processed since it started (INFO total_commands_processed; a "
    "cluster's primaries summed): rate() it",
    multiprocess_mode=SHARED,
)
REDIS_CLIENTS = Gauge(
    "paperfeed_redis_connected_clients",
    "Clients connected to Redis (a cluster's primaries summed)",
    multiprocess_mode=SHARED,
)
REDIS_INFO_TIMEOUT_S = 2.0
WORKER_HEARTBEAT = Gauge(
    "paperfeed_worker_heartbeat_timestamp_seconds",
    "When a worker's loop last turned (pf:worker:heartbeat; 0: none alive)",
    multiprocess_mode=SHARED,
)


def observe_model(holder: ModelHolder) -> None:
    """Set the age of the model ``holder`` serves (just before each scrape: a gauge's
    function is not seen across processes, a value set is)."""
    model = holder.model
    MODEL_AGE.set(time.time() - model.meta.trained_at if model is not None else math.nan)


def mirror_decision(decision: dict[str, Any], known: Iterable[str] = ()) -> None:
    """Mirror one decision; ``known``: stages of other decisions, which read 0 unless
    this one has them (learn.judged_model, skipped without judged cells, must not keep
    the seconds of the run that had it)."""
    GATE_PUBLISHED.set(1.0 if decision.get("published") else 0.0)
    stages = decision.get("stages") or {}
    for stage in {*TRAINING_STAGES, *known, *stages}:
        TRAINING_SECONDS.labels(stage=stage).set(float(stages.get(stage, 0.0)))
    GATE_AT.set(float(decision.get("at", 0.0)))
    for name, values in (decision.get("metrics") or {}).items():
        GATE_NDCG.labels(model=name).set(float(values.get("ndcg", math.nan)))


def mirror_decisions(decisions: list[dict[str, Any]]) -> None:
    """Mirror the newest training decisions (newest first; rollbacks skipped)."""
    gate = [decision for decision in decisions if is_gate_decision(decision)]
    if not gate:
        # Values set are what other processes' scrapes see (an unset one is absent).
        GATE_REFUSALS.set(0.0)
        GATE_PUBLISHED.set(0.0)
        for stage in TRAINING_STAGES:
            TRAINING_SECONDS.labels(stage=stage).set(0.0)
        return
    # Every process reads the same decisions: the same stages are zeroed in each.
    mirror_decision(gate[0], {stage for d in gate for stage in d.get("stages") or {}})
    refused = 0
    for decision in gate:
        if decision.get("published"):
            break
        refused += 1
    GATE_REFUSALS.set(float(refused))


def mirror_sync(state: dict[str, str]) -> None:
    for source in SYNC_SOURCES:
        SYNC_LAST_SUCCESS.labels(source=source).set(float(state.get(f"{source}:last_success", 0)))
        SYNC_ADDED.labels(source=source).set(float(state.get(f"{source}:added_total", 0)))
        SYNC_FAILURES.labels(source=source).set(float(state.get(f"{source}:failures_total", 0)))
    for field, value in state.items():
        unit, _, name = field.rpartition(":")
        if not unit.startswith("arxiv:"):
            continue
        category = unit.removeprefix("arxiv:")
        if name == "last_success":
            SYNC_CATEGORY_LAST_SUCCESS.labels(category=category).set(float(value or 0))
        elif name == "added_total":
            SYNC_CATEGORY_ADDED.labels(category=category).set(float(value or 0))
        elif name == "failures_total":
            SYNC_CATEGORY_FAILURES.labels(category=category).set(float(value or 0))
        elif name == "failures":
            SYNC_CATEGORY_FAILING.labels(category=category).set(1.0 if float(value or 0) else 0.0)
    REPORTED_WAITING.set(float(state.get("reported:waiting") or 0))
    REPORTED_DROPPED.set(float(state.get("reported:dropped_total") or 0))


async def _infos(redis: RedisClient) -> list[dict[str, Any]]:
    """INFO (its default sections) of the server, or of each primary of a cluster."""
    if is_cluster(redis):
        await redis.initialize()  # a cluster client knows its nodes only then
        primaries = redis.get_primaries()  # type: ignore[union-attr]
        return [await redis.info(target_nodes=node) for node in primaries]
    return [await redis.info()]


def _fill(memory: tuple[float, float]) -> tuple[float, float]:
    used, limit = memory
    return (used / limit if limit else 0.0, used)


async def read_redis_memory(redis: RedisClient) -> None:
    """Set the Redis memory gauges from INFO (each scrape; its last values if Redis does
    not answer within ``REDIS_INFO_TIMEOUT_S``)."""
    try:
        infos = await asyncio.wait_for(_infos(redis), REDIS_INFO_TIMEOUT_S)
        memories = [(float(info["used_memory"]), float(info.get("maxmemory", 0))) for info in infos]
        commands = sum(float(info.get("total_commands_processed", 0)) for info in infos)
        clients = sum(float(info.get("connected_clients", 0)) for info in infos)
    except Exception as exc:
        # An INFO without the fields (KeyError, ValueError) counts as down too; a timeout
        # is an OSError, which storage_failed covers.
        if not (isinstance(exc, KeyError | ValueError) or storage_failed(exc)):
            raise
        REDIS_UP.set(0.0)
        return
    REDIS_UP.set(1.0)
    REDIS_COMMANDS.set(commands)
    REDIS_CLIENTS.set(clients)
    if memories:
        used, limit = max(memories, key=_fill)
        REDIS_USED_MEMORY.set(used)
        REDIS_MAXMEMORY.set(limit)


async def mirror_store_metrics(redis: RedisClient, stopping: asyncio.Event) -> None:
    """Copy the counters kept in Redis into this process's gauges until ``stopping``."""
    while not stopping.is_set():
        try:
            values = await redis.hmget(keys.STATS, list(DIGEST_COUNTERS))
            for gauge, value in zip(DIGEST_COUNTERS.values(), values, strict=True):
                gauge.set(float(value or 0))
            latest = await redis.lrange(keys.MODEL_DECISIONS, 0, GATE_DECISIONS_READ - 1)
            mirror_decisions([msgspec.json.decode(raw) for raw in latest])
            mirror_sync(await read_state(redis))
            heartbeat = await redis.get(keys.WORKER_HEARTBEAT)
            WORKER_HEARTBEAT.set(float(heartbeat or 0))
        except Exception as exc:
            # Readiness reports Redis; the gauges keep their last values. A slip of
            # redis-py's in a failover (storage_failed) must not end this loop either.
            if not storage_failed(exc):
                log.exception("mirroring the store's metrics failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STORE_METRICS_S)
