"""Application metrics beside Litestar's request metrics (served at /metrics)."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter, Gauge
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.store import keys
from paperfeed.store.client import RedisClient

EVENTS_ACCEPTED = Counter("paperfeed_events_accepted_total", "Events applied")
EVENTS_DUPLICATE = Counter("paperfeed_events_duplicate_total", "Replayed events ignored")
FEEDS_SERVED = Counter("paperfeed_feeds_total", "Personalized feeds served", ["kind"])

# Counted in Redis by whichever process sends mail (worker, CronJob, api), mirrored here.
DIGEST_COUNTERS = {
    "digest_sent": Gauge("paperfeed_digest_sent", "Digests accepted by the SMTP server"),
    "digest_confirmations": Gauge(
        "paperfeed_digest_confirmations_sent", "Confirmation mails accepted by the SMTP server"
    ),
    "digest_smtp_failures": Gauge(
        "paperfeed_digest_smtp_failures", "SMTP attempts that failed (each retry counts)"
    ),
    "digest_failed": Gauge(
        "paperfeed_digest_failed", "Digests given up after every retry (sent on the next run)"
    ),
}
STORE_METRICS_S = 15.0


async def mirror_store_metrics(redis: RedisClient, stopping: asyncio.Event) -> None:
    """Copy the counters kept in Redis into this process's gauges until ``stopping``."""
    while not stopping.is_set():
        try:
            values = await redis.hmget(keys.STATS, list(DIGEST_COUNTERS))
            for gauge, value in zip(DIGEST_COUNTERS.values(), values, strict=True):
                gauge.set(float(value or 0))
        except (RedisError, RedisClusterException):
            pass  # readiness reports Redis; the gauges keep their last values
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STORE_METRICS_S)
