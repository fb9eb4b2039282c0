from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.status_codes import HTTP_200_OK

from paperfeed.api.deps import decode_json, require_admin
from paperfeed.catalog.importers import ImportFormatError, PaperRecord, paper_from_record
from paperfeed.catalog.repository import ImportResult
from paperfeed.core import Core
from paperfeed.errors import InvalidInput

MAX_PAPERS_PER_REQUEST = 5_000


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    dependencies = {"admin": Provide(require_admin)}

    @post("/papers", status_code=HTTP_200_OK, summary="Import papers (JSON-lines record shape)")
    async def import_papers(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        admin: NamedDependency[None],
    ) -> ImportResult:
        """Add or update papers; re-importing the same records changes nothing."""
        records = decode_json(await request.body(), list[PaperRecord])
        if len(records) > MAX_PAPERS_PER_REQUEST:
            raise InvalidInput("body", f"at most {MAX_PAPERS_PER_REQUEST} papers a request")
        papers = []
        for index, record in enumerate(records):
            try:
                papers.append(paper_from_record(record, "admin"))
            except ImportFormatError as exc:
                raise InvalidInput(f"[{index}]", str(exc)) from exc
        return await core.catalog.upsert(papers, time.time())
