from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_201_CREATED

from paperfeed.api.openapi import documented
from paperfeed.core import Core
from paperfeed.users import Install


class InstallController(Controller):
    path = "/v1/installs"
    tags = ["installs"]

    @post(
        status_code=HTTP_201_CREATED,
        summary="Register an anonymous install",
        responses=documented(),
    )
    async def register(self, core: NamedDependency[Core]) -> Install:
        """A new anonymous user id and its bearer token. Nothing personal is asked."""
        return await core.users.register()
