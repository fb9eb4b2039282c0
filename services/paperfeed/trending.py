"""Global trending: per paper, an exponentially time-decayed sum of weighted interactions.

One sorted set per window (day, week, month), each with its own half-life. Scores are
kept in log space (``w * 2^((t - epoch) / half_life)``) so adding an event is one
``ZINCRBY`` and nothing ever has to be decayed in place; the script rescales the set
when the exponent grows large.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

Window = Literal["day", "week", "month"]


class Contribution(msgspec.Struct, array_like=True, frozen=True):
    """``weight`` credited to ``paper_id`` as of unix time ``at`` (negative undoes)."""

    paper_id: str
    weight: float
    at: float


class Trending:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.half_lives = settings.half_lives_s
        self.cap = settings.trending_cap
        self._script = lua("trending_add")

    async def add(
        self, contributions: Sequence[Contribution], now: float, once: str | None = None
    ) -> None:
        """Add the contributions to every window (one round trip). ``once``: an id of this
        addition that makes it happen once per window whatever retries it (an erasure's
        or a link's taking back, which a retry or the worker may run again)."""
        if not contributions:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            self.queue_add(pipe, contributions, now, once)
            await pipe.execute()

    def queue_add(
        self,
        pipe: Any,
        contributions: Sequence[Contribution],
        now: float,
        once: str | None = None,
    ) -> None:
        """Queue the additions on ``pipe``: one script per window, each on its own hash
        slot (a cluster pipeline sends each to its node). ``EVAL`` with the script's
        text, not ``EVALSHA``: a Redis that lost its scripts (a restart, a failover)
        runs it all the same, so the pipeline keeps redis-py's own error handling and
        retries (Redis caches the compiled script either way; measured no slower)."""
        args: list[str | float] = []
        for c in contributions:
            args.extend((c.paper_id, c.weight, min(c.at, now)))
        for window, half_life in self.half_lives.items():
            names = [keys.trend_scores(window), keys.trend_epoch(window)]
            if once is not None:
                names.append(keys.trend_once(window, once))
            pipe.execute_command(
                "EVAL", self._script, len(names), *names, now, half_life, self.cap, *args,
            )  # fmt: skip

    def queue_forget_once(self, pipe: Any, once: str) -> None:
        """Queue the deletion of ``once``'s markers (the addition is done with: nothing
        will run it again)."""
        for window in self.half_lives:
            pipe.delete(keys.trend_once(window, once))

    async def top(
        self, window: Window, limit: int, now: float, offset: int = 0
    ) -> list[tuple[str, float]]:
        """The ``limit`` hottest papers of ``window`` after the ``offset`` hottest, with
        their current decayed score."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(keys.trend_scores(window), offset, offset + limit - 1, withscores=True)
            pipe.get(keys.trend_epoch(window))
            ranked, epoch = await pipe.execute()
        scale = self._scale(window, epoch, now)
        return [(paper_id, score * scale) for paper_id, score in ranked]

    def _scale(self, window: str, epoch: str | None, now: float) -> float:
        if epoch is None:
            return 0.0
        return float(2.0 ** (-(now - float(epoch)) / self.half_lives[window]))
