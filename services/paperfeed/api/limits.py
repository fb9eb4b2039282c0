"""Request budgets: one atomic Redis script call per request, shared by every process.

A request with a valid install token spends that install's budget; anything else
(no token, a made-up or revoked one) spends its client address's, so inventing tokens
buys nothing. Creating installs has a tighter budget of its own per address, because
every install is kept (until ``forget_silent_installs_days`` if it never sends an
event). Litestar's rate-limit middleware reads its history and writes it back in two
round trips (two requests at once can both pass); a counter incremented by a script
cannot be raced and costs one.

The caller's user id, once checked, is left in the request's state for
``deps.provide_reader_id`` (the feed, event ingest), so their token is looked up once.
A feed or an event batch whose token names its reader (``users.claimed_reader``) is not
looked up at all: the script serving it checks the token's hash against the reader's
installs before anything (``ReaderBudget.verify``). One that names a reader it is not
one of is refused there, reaches nothing of theirs and spends its client address's
budget; past that budget, the address's tokens are looked up first again.
The two commonest requests with a valid token, a feed and a batch of events, spend their
install's budget inside the one script that serves them (``reader_budget.lua``, under
the reader's hash tag): the middleware leaves a ``ReaderBudget`` in the request's state
instead of spending it, and the handler raises ``over_budget`` past it.

When Redis refuses writes at ``maxmemory`` (``store.pressure``) it refuses the budget's
counter too. A write request is then answered 503 with ``Retry-After`` (it could not be
stored anyway); a read is counted against the same budget kept by this process alone
(``LocalWindows``: with N processes a client may make up to N times its budget while
Redis is full) and answered, so readers keep their feeds through the incident.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Final

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import ResponseError

from paperfeed.api.errors import over_budget
from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.store.budgets import LocalWindows, OverBudget, ReaderBudget
from paperfeed.store.client import storage_failed
from paperfeed.store.pressure import WritesRefused, note_refused, refused_for_memory
from paperfeed.store.scripts import lua
from paperfeed.users import claimed_reader, hash_token

USER_ID_STATE = "paperfeed_user_id"
BUDGET_STATE = "paperfeed_budget"
INSTALLS_PATH = "/v1/installs"
SPENT_IN_SCRIPT: Final = frozenset({("GET", "/v1/feed"), ("POST", "/v1/events")})
"""Requests whose install budget the script serving them spends (one round trip)."""


BUDGET_SPENT = "paperfeed_budget_spent"


class Exhausted:
    """Installs this process saw past their budget, until their window ends: their next
    requests are refused here, without a round trip (at most ``cap`` remembered)."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        self._until: dict[str, float] = {}

    def mark(self, install: str, ms_left: int) -> None:
        if len(self._until) >= self.cap:
            now = time.monotonic()
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= self.cap:
                self._until.clear()
        self._until[install] = time.monotonic() + ms_left / 1000

    def ms_left(self, install: str) -> int:
        until = self._until.get(install)
        if until is None:
            return 0
        left = int((until - time.monotonic()) * 1000)
        if left <= 0:
            del self._until[install]
            return 0
        return left


EXHAUSTED = Exhausted()


def reader_budget(scope_state: dict[str, Any]) -> ReaderBudget | None:
    budget: ReaderBudget | None = scope_state.get(BUDGET_STATE)
    return budget


@contextlib.contextmanager
def spending(scope_state: dict[str, Any]) -> Iterator[ReaderBudget | None]:
    """The request's budget, for the service call that spends it: once the call has
    run (or refused the request past the budget), the middleware spends nothing more."""
    budget = reader_budget(scope_state)
    try:
        yield budget
    except OverBudget as exc:
        scope_state[BUDGET_SPENT] = True
        EXHAUSTED.mark(exc.budget.install, exc.ms_left)
        raise
    scope_state[BUDGET_SPENT] = True


def bearer_from_scope(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


HOUR_S = 3600
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def address_budget(address: str) -> str:
    """The request budget of a client address (requests without a token of anyone's)."""
    return keys.rate_limit(f"ip:{address}")


class RequestBudgets(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, core: Core, unlimited: list[str]) -> None:
        self.core = core
        self.per_minute = core.settings.rate_limit_per_minute
        self.installs_per_hour = core.settings.installs_per_hour
        self.unlimited = frozenset(unlimited)
        self._count = core.redis.register_script(lua("rate_count"))
        self._spend_reader = core.redis.register_script(lua("reader_budget") + lua("budget_spend"))
        self._local = LocalWindows()
        # Addresses past their budget with tokens that named a reader they were not one
        # of: their tokens are looked up first (``handle``).
        self._exhausted_addresses = Exhausted()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope["path"]
        if path in self.unlimited or path.startswith("/schema"):
            await next_app(scope, receive, send)
            return
        token = bearer_from_scope(scope)
        token_hash = hash_token(token) if token else ""
        client = scope.get("client")
        address = client[0] if client else "unknown"
        read = scope.get("method") in READ_METHODS
        in_script = (scope.get("method"), path) in SPENT_IN_SCRIPT
        user_id, claimed = None, False
        if token and in_script:
            # The script serving the request checks a token that names its reader: no
            # lookup first (one round trip instead of two). Not from an address past its
            # budget (tokens that were no one's): its tokens are looked up, as before.
            user_id = self.core.users.remembered(token_hash)
            if user_id is None and not self._exhausted_addresses.ms_left(address):
                user_id = claimed_reader(token)
                claimed = user_id is not None
        if token and user_id is None:
            user_id = await self.core.users.authenticate(token)
        if user_id is not None:
            state = scope.setdefault("state", {})
            state[USER_ID_STATE] = user_id
            assert token is not None
            if in_script:
                budget = ReaderBudget(
                    token_hash[:32],
                    self.per_minute,
                    keys.RATE_WINDOW_S * 1000,
                    verify=token_hash if claimed else "",
                )
                left = EXHAUSTED.ms_left(budget.install)
                if left:
                    raise over_budget(budget.limit, left, budget.what)
                state[BUDGET_STATE] = budget
                try:
                    await next_app(scope, receive, send)
                finally:
                    if not state.get(BUDGET_SPENT):
                        await self._spend_after(user_id, budget, address, token)
                return
            else:
                key = keys.install_rate_limit(token_hash)
                await self._spend(
                    key, keys.RATE_WINDOW_S, self.per_minute, read, "requests a minute"
                )
        else:
            key = address_budget(address)
            await self._spend(key, keys.RATE_WINDOW_S, self.per_minute, read, "requests a minute")
        if path == INSTALLS_PATH and scope.get("method") == "POST":
            key = keys.rate_limit(f"installs:{address}", HOUR_S)
            await self._spend(
                key, HOUR_S, self.installs_per_hour, read, "new installs an hour from an address"
            )
        await next_app(scope, receive, send)

    async def _spend_after(
        self, user_id: str, budget: ReaderBudget, address: str, token: str
    ) -> None:
        """Spend the budget of a request that ended before the script serving it (a body
        refused, a batch too large), or that the script refused: the same counter, so
        such requests are bounded too; past it, the install's next requests are refused
        here. A token that named a reader unchecked (``ReaderBudget.verify``) and is not
        one of their installs is looked up: a linked install's spends its reader's
        budget, anything else the client address's, as any token that is no one's (past
        that, the address's tokens are looked up first)."""
        counter = budget.install
        try:
            count, ms_left = await self._spend_install(user_id, budget, budget.verify)
            if int(count) < 0:
                owner = await self.core.users.authenticate(token, cached=False)
                if owner is not None:
                    count, ms_left = await self._spend_install(owner, budget, "")
                else:
                    counter = address_budget(address)
                    count, ms_left = await self._count(keys=[counter], args=[budget.window_ms])
        except Exception as exc:
            # The answer is sent already: Redis refusing or unreachable (redis-py's slips
            # in a failover too) must not break the connection; this process's own count
            # stands in.
            if not storage_failed(exc):
                raise
            if isinstance(exc, ResponseError) and refused_for_memory(exc):
                note_refused("budget", exc)
            count, ms_left = self._local.spend(counter, budget.window_ms // 1000)
        if int(count) > budget.limit:
            if counter == budget.install:
                EXHAUSTED.mark(budget.install, int(ms_left))
            else:
                self._exhausted_addresses.mark(address, int(ms_left))

    async def _spend_install(
        self, user_id: str, budget: ReaderBudget, verify: str
    ) -> tuple[int, int]:
        """``budget_spend.lua`` on the reader's keys: (count, ms left); (-1, 0) when
        ``verify`` is not one of their installs (or they are no more)."""
        count, ms_left = await self._spend_reader(
            keys=[
                keys.user_budget(user_id),
                keys.user_profile(user_id),
                keys.user_installs(user_id),
            ],
            args=[budget.install, budget.window_ms, budget.limit, verify],
        )
        return int(count), int(ms_left)

    async def _spend(
        self, key: str, window_s: int, limit: int, read: bool, what: str = "requests"
    ) -> None:
        """One request from ``key``'s budget of ``limit`` a ``window_s``; 429 past it.

        Redis refusing the counter's write for memory: a read spends this process's own
        budget instead (``LocalWindows``), a write is refused (``WritesRefused``: 503).
        """
        try:
            count, ttl_ms = await self._count(keys=[key], args=[window_s * 1000])
        except ResponseError as exc:
            if not refused_for_memory(exc):
                raise
            note_refused("budget", exc)
            if not read:
                raise WritesRefused from exc
            count, ttl_ms = self._local.spend(key, window_s)
        if int(count) > limit:
            raise over_budget(limit, int(ttl_ms), what)
