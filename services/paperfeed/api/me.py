from __future__ import annotations

from litestar import Controller, delete, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from litestar.status_codes import HTTP_204_NO_CONTENT

from paperfeed.api.deps import provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.api.papers import Cursor, Limit
from paperfeed.core import Core
from paperfeed.library import LibraryKind, LibraryPage, library
from paperfeed.users import UserExport


class MeController(Controller):
    path = "/v1/me"
    tags = ["privacy"]
    dependencies = {"user_id": Provide(provide_user_id)}
    security = INSTALL_AUTH

    @get(
        "/export",
        summary="Everything paperfeed keeps about the caller",
        responses=documented(401),
    )
    async def export(
        self, core: NamedDependency[Core], user_id: NamedDependency[str]
    ) -> UserExport:
        return await core.users.export(user_id)

    @get(
        "/library",
        summary="The caller's saved, upvoted, read or dismissed papers, newest first",
        tags=["library"],
        responses=documented(400, 401),
    )
    async def get_library(
        self,
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
        kind: FromQuery[LibraryKind] = "saved",
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> LibraryPage:
        """Follows the caller's events at once: an ``unsave`` takes a paper out of
        ``saved``, an ``undismiss`` out of ``dismissed``. ``next`` continues the list."""
        return await library(core.redis, core.catalog, user_id, kind, limit, cursor)

    @delete(
        status_code=HTTP_204_NO_CONTENT,
        summary="Erase the caller everywhere",
        responses=documented(401),
    )
    async def erase(self, core: NamedDependency[Core], user_id: NamedDependency[str]) -> None:
        """Deletes the install, its token, its events, and takes back its trending weight."""
        await core.users.erase(user_id)
