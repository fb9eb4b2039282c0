"""``GET /v1/me/pairing``: whether this install is linked to a reader by a pairing code
(the options page offers "Unlink this browser" only then; ``POST``/``DELETE /v1/me/link``,
in ``api.me``, link and unlink)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide

from paperfeed.api.deps import bearer_token, provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.users import hash_token


class LinkState(msgspec.Struct, kw_only=True):
    linked: bool
    """This install was linked to its reader by a pairing code (it can be unlinked);
    false for the reader's first install."""
    browsers: int
    """Installs that are this reader: the first one and every linked one."""


class LinkStateController(Controller):
    path = "/v1/me/pairing"
    tags = ["pairing"]
    dependencies = {"user_id": Provide(provide_user_id)}
    security = INSTALL_AUTH

    @get(summary="Whether this install is linked to its reader", responses=documented(401))
    async def link_state(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> LinkState:
        token_hash = hash_token(bearer_token(request) or "")
        async with core.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(keys.user_installs(user_id), token_hash)
            pipe.scard(keys.user_installs(user_id))
            linked, others = await pipe.execute()
        return LinkState(linked=bool(linked), browsers=1 + int(others))
