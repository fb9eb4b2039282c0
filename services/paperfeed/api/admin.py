from __future__ import annotations

import time

from litestar import Controller, post
from litestar.di import Provide
from litestar.status_codes import HTTP_200_OK

from paperfeed.api.deps import require_admin
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
    async def import_papers(self, data: list[PaperRecord], core: Core, admin: None) -> ImportResult:
        if len(data) > MAX_PAPERS_PER_REQUEST:
            raise InvalidInput("body", f"at most {MAX_PAPERS_PER_REQUEST} papers a request")
        papers = []
        for index, record in enumerate(data):
            try:
                papers.append(paper_from_record(record, "admin"))
            except ImportFormatError as exc:
                raise InvalidInput(f"[{index}]", str(exc)) from exc
        return await core.catalog.upsert(papers, time.time())
