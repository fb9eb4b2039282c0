from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, TooManyRequestsException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
)

from paperfeed.api.deps import bearer_token, provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.api.papers import Limit
from paperfeed.core import Core
from paperfeed.imports.importer import (
    MAX_BYTES,
    LibraryImport,
    LibraryImporter,
    TooManyEntries,
    TooManyImports,
)
from paperfeed.imports.parse import Format
from paperfeed.library import CURSOR_PATTERN, LibraryKind, LibraryPage, library
from paperfeed.pairing import Linked, PairingCode
from paperfeed.users import UserExport

LibraryCursor = Annotated[
    str | None,
    QueryParameter(pattern=CURSOR_PATTERN, description="The ``next`` of the previous page"),
]


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    """The pairing code shown by the other browser (case, spaces and dashes ignored)."""


@dataclass
class ImportOperation(Operation):
    """``POST /v1/me/import``'s body is the file itself (the handler reads it raw)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description=(
                "The file: BibTeX, CSL-JSON (Zotero's export), RIS, or arXiv ids or URLs "
                f"(any number a line); at most {MAX_BYTES} bytes, in any Content-Type"
            ),
            # Any Content-Type is read alike (application/x-bibtex, application/json, ...).
            content={
                "text/plain": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_BYTES)
                )
            },
        )


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
        cursor: LibraryCursor = None,
    ) -> LibraryPage:
        """Follows the caller's events at once: an ``unsave`` takes a paper out of
        ``saved``, an ``undismiss`` out of ``dismissed``. ``next`` continues the list."""
        return await library(
            core.redis, core.catalog, user_id, kind, limit, cursor, offload=core.offload
        )

    @post(
        "/import",
        status_code=HTTP_200_OK,
        summary="Import the caller's library (BibTeX, CSL-JSON, RIS, arXiv ids) as saves",
        tags=["library"],
        responses=documented(400, 401, 413),
        request_max_body_size=MAX_BYTES,
        operation_class=ImportOperation,
    )
    async def import_library(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
        format: FromQuery[Format | None] = None,
    ) -> LibraryImport:
        """The file itself is the body (at most 2 MiB and 5,000 entries: 413 past
        either); ``format`` is detected when left out. Entries are matched to catalog
        papers by arXiv id, DOI or title and saved as the caller's ``save`` events (a
        re-import counts once); an arXiv id the catalog lacks waits for a source. The
        answer counts what matched, what waits, and lists by line what could not be
        read or matched (``docs/import.md``). At most 20 imports an hour."""
        importer = LibraryImporter(
            core.redis, core.settings, core.catalog, core.ingestor, core.feeds
        )
        try:
            await importer.spend(user_id)
        except TooManyImports as exc:
            raise TooManyRequestsException(
                detail=f"rate limit reached: {exc}", headers={"Retry-After": "3600"}
            ) from exc
        try:
            body = await request.body()
        except RequestEntityTooLarge as exc:
            raise RequestEntityTooLarge(
                detail=f"body: larger than {MAX_BYTES} bytes (2 MiB); split the file"
            ) from exc
        try:
            return await importer.run(user_id, body, format)
        except TooManyEntries as exc:
            raise HTTPException(
                status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE, detail=str(exc)
            ) from exc

    @post(
        "/pairing-codes",
        status_code=HTTP_201_CREATED,
        summary="A code that links another browser's install to the caller",
        tags=["pairing"],
        responses=documented(401, 429),
    )
    async def pairing_code(
        self, core: NamedDependency[Core], user_id: NamedDependency[str]
    ) -> PairingCode:
        """Valid five minutes, for one use; at most ten an hour."""
        return await core.pairing.create_code(user_id)

    @post(
        "/link",
        status_code=HTTP_200_OK,
        summary="Link this install to the reader whose pairing code is given",
        tags=["pairing"],
        responses=documented(400, 401, 404, 409, 429),
    )
    async def link(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
        data: JSONBody[LinkRequest],
    ) -> Linked:
        """This install's token now stands for that reader (one history, one feed, one
        library); what it did before joins them. A wrong, expired or used code: 404,
        the same for each; this browser's own code: 409; at most ten codes tried an
        hour."""
        return await core.pairing.link(bearer_token(request) or "", user_id, data.code)

    @delete(
        "/link",
        status_code=HTTP_204_NO_CONTENT,
        summary="Unlink this install from its reader (its token is revoked)",
        tags=["pairing"],
        responses=documented(401, 409),
    )
    async def unlink(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> None:
        """The extension registers afresh after it. The reader's first install cannot
        be unlinked: 409 (``DELETE /v1/me`` erases the reader and every linked
        install)."""
        await core.pairing.unlink(bearer_token(request) or "", user_id)

    @delete(
        status_code=HTTP_204_NO_CONTENT,
        summary="Erase the caller everywhere",
        responses=documented(401),
    )
    async def erase(self, core: NamedDependency[Core], user_id: NamedDependency[str]) -> None:
        """Deletes the install, its token and every install linked to it, its events, and
        takes back its trending weight."""
        await core.users.erase(user_id)
