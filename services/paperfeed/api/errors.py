"""paperfeed's error tree mapped to HTTP, in one place."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from litestar import MediaType, Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, TooManyRequestsException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.exceptions.responses import create_exception_response
from litestar.middleware import ASGIMiddleware
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send
from litestar.types.protocols import Logger
from redis import exceptions as redis_errors
from redis.exceptions import OutOfMemoryError, RedisClusterException, RedisError

from paperfeed.errors import (
    ClientDisconnected,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotOffered,
    PaperfeedError,
    RequestsExhausted,
    Unauthorized,
    Unavailable,
    readable,
)
from paperfeed.pairing import TooManyAttempts
from paperfeed.store.budgets import OverBudget
from paperfeed.store.client import CLIENT_SLIPS, storage_failed
from paperfeed.store.pressure import (
    RETRY_AFTER_S,
    WritesRefused,
    note_refused,
    refused_for_memory,
)
from paperfeed.store.scripts import NotReplicated

log = logging.getLogger(__name__)

STATUS = {
    TooManyAttempts: HTTP_429_TOO_MANY_REQUESTS,
    RequestsExhausted: HTTP_429_TOO_MANY_REQUESTS,
    InvalidInput: HTTP_400_BAD_REQUEST,
    Unauthorized: HTTP_401_UNAUTHORIZED,
    Forbidden: HTTP_403_FORBIDDEN,
    NotFound: HTTP_404_NOT_FOUND,
    Conflict: HTTP_409_CONFLICT,
    Unavailable: HTTP_503_SERVICE_UNAVAILABLE,
}


def status_of(error: PaperfeedError) -> int:
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return HTTP_500_INTERNAL_SERVER_ERROR


def paperfeed_error(request: Request[Any, Any, Any], error: PaperfeedError) -> Response[object]:
    status = status_of(error)
    if isinstance(error, ClientDisconnected):
        # No answer reaches anyone (uvicorn logs no access line for it): this line is all.
        log.info(
            "client went away before its request was complete",
            extra={"method": request.method, "path": request.url.path},
        )
    body: dict[str, object] = {"status_code": status, "detail": str(error)}
    if isinstance(error, InvalidInput):
        body["extra"] = [{"key": error.field, "message": error.message}]
    headers: dict[str, str] | None = None
    if status == HTTP_401_UNAUTHORIZED:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == HTTP_503_SERVICE_UNAVAILABLE:
        headers = {"Retry-After": "5"}
    elif status == HTTP_429_TOO_MANY_REQUESTS:
        headers = {"Retry-After": str(getattr(error, "retry_after_s", 3600))}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def redis_error(request: Request[Any, Any, Any], error: Exception) -> Response[object]:
    if refused_for_memory(error):  # Redis 6.2: a script's refusal is a plain ResponseError
        return storage_full(request, error)
    log.error("redis unavailable", extra={"path": request.url.path, "error": repr(error)})
    body = {"status_code": HTTP_503_SERVICE_UNAVAILABLE, "detail": "storage unavailable, retry"}
    return Response(
        body,
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
        headers={"Retry-After": "5"},
    )


def storage_full(request: Request[Any, Any, Any], error: Exception) -> Response[object]:
    """Redis refused a write at ``maxmemory`` (``store.pressure``): 503, retry much later.
    Counted, and logged once a minute (no traceback: nothing here is a bug)."""
    if not isinstance(error, WritesRefused):  # else counted where its budget was refused
        note_refused("request", error, path=request.url.path)
    body = {
        "status_code": HTTP_503_SERVICE_UNAVAILABLE,
        "detail": "storage full: writes are refused for now, retry later (reads still work)",
    }
    return Response(
        body,
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def client_fault(request: Request[Any, Any, Any], error: Exception) -> Response[object]:
    """redis-py's asyncio cluster client can fail with an AttributeError, TypeError or
    RuntimeError when a failover closes a connection a command is writing on
    (``store.client.storage_failed``): the storage is unavailable, and the client retries
    (its events are idempotent). The same errors anywhere else are bugs: 500."""
    if storage_failed(error):
        return redis_error(request, error)
    log.error("unhandled error", exc_info=error, extra={"path": request.url.path})
    body = {"status_code": HTTP_500_INTERNAL_SERVER_ERROR, "detail": "Internal Server Error"}
    return Response(body, status_code=HTTP_500_INTERNAL_SERVER_ERROR, media_type=MediaType.JSON)


def too_deep(_: Request[Any, Any, Any], error: RecursionError) -> Response[object]:
    """JSON nested deeper than the decoder's stack: the client's fault, not ours."""
    body = {
        "status_code": HTTP_400_BAD_REQUEST,
        "detail": "body: nested too deeply",
        "extra": [{"key": "body", "message": "nested too deeply"}],
    }
    return Response(body, status_code=HTTP_400_BAD_REQUEST, media_type=MediaType.JSON)


def too_many_requests(
    _: Request[Any, Any, Any], error: TooManyRequestsException
) -> Response[object]:
    """Litestar's 429 with ``Retry-After`` (clients read it; the draft RateLimit-* headers
    stay as well)."""
    headers = dict(error.headers or {})
    headers.setdefault("Retry-After", headers.get("RateLimit-Reset", "60"))
    detail = error.detail if str(error.detail).startswith("rate limit") else "rate limit reached"
    body = {"status_code": HTTP_429_TOO_MANY_REQUESTS, "detail": detail}
    return Response(
        body,
        status_code=HTTP_429_TOO_MANY_REQUESTS,
        media_type=MediaType.JSON,
        headers=headers,
    )


def over_budget(limit: int, ms_left: int, what: str) -> TooManyRequestsException:
    """The 429 of a spent budget, with the standard headers."""
    retry = str(max(1, -(-int(ms_left) // 1000)))
    headers: dict[str, Any] = {
        "Retry-After": retry,
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": retry,
    }
    return TooManyRequestsException(
        detail=f"rate limit reached: at most {limit} {what}", headers=headers
    )


def spent_budget(request: Request[Any, Any, Any], error: OverBudget) -> Response[object]:
    """An install past the budget its request's own script spent (``store.budgets``)."""
    budget = error.budget
    return too_many_requests(request, over_budget(budget.limit, error.ms_left, budget.what))


def too_large(request: Request[Any, Any, Any], error: RequestEntityTooLarge) -> Response[Any]:
    """Litestar's 413, saying how large a body may be (it said "Request Entity Too
    Large"), and for an event batch what to do; a route's own detail is kept."""
    if error.detail == RequestEntityTooLarge.detail:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"body: larger than {limit} bytes"
        if request.url.path == "/v1/events":
            detail += "; send the events in smaller batches"
        error = RequestEntityTooLarge(detail=detail)
    return create_exception_response(request, error)


BODY_EXAMPLES = {
    "/v1/events": '{"events": [{"event_id", "type", "paper_id", "ts"}, ...]}',
    "/v1/catalog/requests": '{"paper_id": "<arXiv id or URL>"}',
}


def invalid_request(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    """Litestar's 400 (in the route's media type), except that a missing body says so
    (Litestar's message is "'data'") and what the endpoint expects, a missing field is
    named by its own path, and a pattern is told by its meaning, not its regex."""
    detail, extra = str(error.detail), error.extra
    if isinstance(extra, list):
        if any(
            isinstance(item, dict) and item.get("key") == "data" and item.get("message") == "'data'"
            for item in extra
        ):
            expected = BODY_EXAMPLES.get(request.url.path)
            message = "a JSON body is required" + (f": {expected}" if expected else "")
            detail = f"body: {message}"
            extra = [{"key": "body", "message": message, "source": "body"}]
        else:
            extra = [_plain(item) if isinstance(item, dict) else item for item in extra]
    if detail.startswith("Validation failed for ") and len(detail) > ECHO_CHARS:
        # Litestar's detail repeats the whole URL: a 10,000-character query made a 10 kB
        # error. The path, and the start of the query (the extra names the field).
        detail = detail[:ECHO_CHARS] + "…"
    return create_exception_response(request, ValidationException(detail=detail, extra=extra))


ECHO_CHARS = 200
"""At most this much of the request's URL is repeated in a 400's detail."""


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """One of Litestar's errors, with a missing field named by its own path and a pattern
    by its meaning ("a search of spaces" was told 60 characters of regex)."""
    item = _missing_field(item) or item
    if "message" in item:
        item = {**item, "message": readable(str(item["message"]))}
    return item


def _missing_field(item: dict[str, Any]) -> dict[str, Any] | None:
    """A missing field named by its own path (``events[0].paper_id``, ``events``), where
    msgspec names the object that lacks it (``events[0]``, or ``data`` for the body)."""
    found = re.fullmatch(r"Object missing required field `([^`]+)`", str(item.get("message", "")))
    if not found:
        return None
    owner = str(item.get("key", ""))
    key = found.group(1) if owner in ("", "data") else f"{owner}.{found.group(1)}"
    return {**item, "key": key}


class WatchDisconnects(ASGIMiddleware):
    """A client that goes away while its request's body is still arriving is
    ``ClientDisconnected`` (400, one log line), where Litestar would raise a 500 that is
    logged with its traceback. A disconnect after the body is complete is passed on."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        complete = False

        async def watched() -> ReceiveMessage:
            nonlocal complete
            message = await receive()
            if message["type"] == "http.request":
                complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not complete:
                raise ClientDisconnected
            return message

        await next_app(scope, watched, send)


STORAGE_UNAVAILABLE = (
    # Redis out of reach for a while (a restart, a failover, a full pool, a cluster slot
    # moving): answered 503 with Retry-After and logged in one line by redis_error.
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.SlotNotCoveredError,
)
MISCONFIGURED = (
    # ConnectionErrors that no retry cures: our credentials or ACL are wrong.
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.ExternalAuthProviderError,
)


def logged_by_its_handler(error: BaseException) -> bool:
    """Whether ``error``'s handler logs what it needs: a storage outage in one line
    (``redis_error``), or a bug of ours among the client slips with its traceback
    (``client_fault``). A slip inside redis-py keeps Litestar's traceback: it may be a
    failover, or a bug of ours that handed redis-py a wrong type."""
    if isinstance(error, MISCONFIGURED):
        return False
    if isinstance(error, STORAGE_UNAVAILABLE):
        return True
    return (
        isinstance(error, CLIENT_SLIPS)
        and not isinstance(error, RecursionError)  # (too_deep's: it logs nothing)
        and not storage_failed(error)
    )


def log_uncaught(logger: Logger, scope: Scope, _: list[str]) -> None:
    """Litestar's log of an exception, with its traceback, unless its handler logged it:
    an outage's stack repeated for every request would bury an incident's log, and a
    bug's would be there twice. (Litestar calls this inside its ``except``.)"""
    error = sys.exc_info()[1]
    if error is not None and logged_by_its_handler(error):
        return
    logger.exception(
        "Uncaught exception (connection_type=%s, path=%r):", scope["type"], scope["path"]
    )


EXPECTED_ERRORS: set[type[Exception]] = {
    # Litestar's log of an exception matches these by exact class (no subclasses).
    TooManyAttempts,
    InvalidInput,
    ClientDisconnected,
    Unauthorized,
    Forbidden,
    NotOffered,
    NotFound,
    Conflict,
    Unavailable,
    NotReplicated,
    RecursionError,
    OutOfMemoryError,
    WritesRefused,
    OverBudget,
}

EXCEPTION_HANDLERS = {
    PaperfeedError: paperfeed_error,
    RedisError: redis_error,
    OutOfMemoryError: storage_full,
    WritesRefused: storage_full,
    RedisClusterException: redis_error,
    RecursionError: too_deep,
    TooManyRequestsException: too_many_requests,
    OverBudget: spent_budget,
    ValidationException: invalid_request,
    RequestEntityTooLarge: too_large,
    AttributeError: client_fault,
    TypeError: client_fault,
    RuntimeError: client_fault,
}

__all__ = ["EXCEPTION_HANDLERS", "HTTPException"]
