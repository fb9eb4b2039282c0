"""Dependencies every controller may ask for: the core, the caller's user id, admin."""

from __future__ import annotations

import hmac
import re
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from paperfeed.api.limits import USER_ID_STATE, bearer_from_scope
from paperfeed.core import Core
from paperfeed.errors import Forbidden, InvalidInput, Unauthorized


def provide_core(state: State) -> Core:
    core: Core = state.core
    return core


def bearer_token(request: Request[Any, Any, Any]) -> str | None:
    return bearer_from_scope(request.scope)


async def provide_user_id(request: Request[Any, Any, Any], core: NamedDependency[Core]) -> str:
    """The user the bearer token belongs to, checked in Redis now; 401 otherwise."""
    token = _token(request)
    user_id = await core.users.authenticate(token, cached=False)
    if user_id is None:
        raise Unauthorized("unknown or revoked token")
    return user_id


async def provide_optional_reader(
    request: Request[Any, Any, Any], core: NamedDependency[Core]
) -> str | None:
    """The caller when a bearer token is sent (401 for a wrong one); None without."""
    token = bearer_token(request)
    if token is None:
        return None
    user_id = await core.users.authenticate(token)
    if user_id is None:
        raise Unauthorized("unknown or revoked token")
    return user_id


async def provide_reader_id(request: Request[Any, Any, Any], core: NamedDependency[Core]) -> str:
    """The user the bearer token belongs to, as the request budgets found it (a token is
    remembered for seconds). Only for endpoints whose own Redis call refuses a reader
    erased meanwhile (the feed, event ingest): they cost one round trip, not two."""
    token = _token(request)
    checked = request.scope.get("state", {}).get(USER_ID_STATE)
    user_id = checked if checked is not None else await core.users.authenticate(token)
    if user_id is None:
        raise Unauthorized("unknown or revoked token")
    return str(user_id)


async def relinked_reader(
    request: Request[Any, Any, Any], core: Core, stale_user_id: str
) -> str | None:
    """The reader the bearer token stands for now, when it is not ``stale_user_id``: a
    token remembered for seconds may have been linked to another reader since (pairing);
    its request goes to that reader rather than a 401 that would make the extension
    register afresh."""
    token = bearer_token(request)
    if token is None:
        return None
    user_id = await core.users.authenticate(token, cached=False)
    return user_id if user_id is not None and user_id != stale_user_id else None


def _token(request: Request[Any, Any, Any]) -> str:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return token


async def require_admin(request: Request[Any, Any, Any], core: NamedDependency[Core]) -> None:
    expected = core.settings.admin_token
    if not expected:
        raise Forbidden("admin endpoints are disabled (PAPERFEED_ADMIN_TOKEN is not set)")
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing admin bearer token")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise Forbidden("not the admin token")


T = TypeVar("T")
_AT_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$")


def decode_json(data: bytes, kind: type[T]) -> T:
    """Decode a request body; a 400 names the field at fault (``[3].upvotes``)."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        match = _AT_PATH.match(str(exc))
        if match:
            raise InvalidInput(match["path"].lstrip(".") or "body", match["message"]) from exc
        raise InvalidInput("body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput("body", f"not valid JSON ({exc})") from exc
