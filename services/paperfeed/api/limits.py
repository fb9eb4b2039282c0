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
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.store.scripts import lua
from paperfeed.users import hash_token

USER_ID_STATE = "paperfeed_user_id"
INSTALLS_PATH = "/v1/installs"


def bearer_from_scope(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


HOUR_S = 3600


class RequestBudgets(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    def __init__(self, core: Core, unlimited: list[str]) -> None:
        self.core = core
        self.per_minute = core.settings.rate_limit_per_minute
        self.installs_per_hour = core.settings.installs_per_hour
        self.unlimited = frozenset(unlimited)
        self._count = core.redis.register_script(lua("rate_count"))

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        path = scope["path"]
        if path in self.unlimited or path.startswith("/schema"):
            await next_app(scope, receive, send)
            return
        token = bearer_from_scope(scope)
        user_id = await self.core.users.authenticate(token) if token else None
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if user_id is not None:
            scope.setdefault("state", {})[USER_ID_STATE] = user_id
            assert token is not None
            key = keys.install_rate_limit(hash_token(token))
            await self._spend(key, keys.RATE_WINDOW_S, self.per_minute)
        else:
            await self._spend(keys.rate_limit(f"ip:{address}"), keys.RATE_WINDOW_S, self.per_minute)
        if path == INSTALLS_PATH and scope.get("method") == "POST":
            key = keys.rate_limit(f"installs:{address}", HOUR_S)
            await self._spend(key, HOUR_S, self.installs_per_hour)
        await next_app(scope, receive, send)

    async def _spend(self, key: str, window_s: int, limit: int) -> None:
        """One request from ``key``'s budget of ``limit`` a ``window_s``; 429 past it."""
        count, ttl_ms = await self._count(keys=[key], args=[window_s * 1000])
        if int(count) > limit:
            retry = str(max(1, -(-int(ttl_ms) // 1000)))
            headers: dict[str, Any] = {
                "Retry-After": retry,
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": retry,
            }
            raise TooManyRequestsException(headers=headers)
