"""Request budgets kept where the request's own script can spend them, and the budgets
of a process alone while Redis refuses writes (see ``api.limits``)."""

from __future__ import annotations

import time
from typing import NamedTuple


class ReaderBudget(NamedTuple):
    """An install's request budget, to be spent by the script serving its request."""

    install: str
    """The install's token hash (its field in the reader's budget hash)."""
    limit: int
    window_ms: int
    what: str = "requests a minute"
    verify: str = ""
    """The token's whole hash when the reader's id was read from the token itself
    (``users.claimed_reader``), unchecked: the script serving the request checks it is
    one of the reader's installs before anything else. '' when the api looked it up."""


class OverBudget(Exception):
    """The install spent its budget: the api answers 429 (``api.limits.over_budget``)."""

    def __init__(self, budget: ReaderBudget, ms_left: int) -> None:
        super().__init__(f"at most {budget.limit} {budget.what}")
        self.budget = budget
        self.ms_left = ms_left


class LocalWindows:
    """Fixed-window request counters in this process: the budgets of reads while Redis
    refuses the shared counter's writes. At most ``cap`` budgets are kept (those of past
    windows go first; if every one is current, all are forgotten)."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        self._counts: dict[tuple[str, int], tuple[int, int]] = {}

    def spend(self, key: str, window_s: int, now: float | None = None) -> tuple[int, int]:
        """One request from ``key``: (count in this window, ms left of it)."""
        now = time.time() if now is None else now
        window = int(now // window_s)
        slot = (key, window_s)
        if slot not in self._counts and len(self._counts) >= self.cap:
            self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
            if len(self._counts) >= self.cap:
                self._counts.clear()
        seen, count = self._counts.get(slot, (window, 0))
        count = count + 1 if seen == window else 1
        self._counts[slot] = (window, count)
        return count, max(1, int(((window + 1) * window_s - now) * 1000))
