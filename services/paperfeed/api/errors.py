"""paperfeed's error tree mapped to HTTP, in one place."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PaperfeedError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS = {
    InvalidInput: HTTP_400_BAD_REQUEST,
    Unauthorized: HTTP_401_UNAUTHORIZED,
    Forbidden: HTTP_403_FORBIDDEN,
    NotFound: HTTP_404_NOT_FOUND,
    Unavailable: HTTP_503_SERVICE_UNAVAILABLE,
}


def status_of(error: PaperfeedError) -> int:
    for kind, status in STATUS.items():
        if isinstance(error, kind):
            return status
    return HTTP_500_INTERNAL_SERVER_ERROR


def paperfeed_error(_: Request[Any, Any, Any], error: PaperfeedError) -> Response[object]:
    status = status_of(error)
    body: dict[str, object] = {"status_code": status, "detail": str(error)}
    if isinstance(error, InvalidInput):
        body["extra"] = [{"key": error.field, "message": error.message}]
    headers: dict[str, str] | None = None
    if status == HTTP_401_UNAUTHORIZED:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == HTTP_503_SERVICE_UNAVAILABLE:
        headers = {"Retry-After": "5"}
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def redis_error(
    request: Request[Any, Any, Any], error: RedisError | RedisClusterException
) -> Response[object]:
    log.error("redis unavailable", extra={"path": request.url.path, "error": repr(error)})
    body = {"status_code": HTTP_503_SERVICE_UNAVAILABLE, "detail": "storage unavailable, retry"}
    return Response(
        body,
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        media_type=MediaType.JSON,
        headers={"Retry-After": "5"},
    )


EXCEPTION_HANDLERS = {
    PaperfeedError: paperfeed_error,
    RedisError: redis_error,
    RedisClusterException: redis_error,
}

__all__ = ["EXCEPTION_HANDLERS", "HTTPException"]
