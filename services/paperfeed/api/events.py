from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from paperfeed.api.deps import bearer_token, provide_reader_id, relinked_reader
from paperfeed.api.limits import spending
from paperfeed.api.metrics import EVENTS_ACCEPTED, EVENTS_DUPLICATE
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.core import Core
from paperfeed.errors import Unauthorized
from paperfeed.events import EventBatch, IngestResult


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]
    dependencies = {"user_id": Provide(provide_reader_id)}
    security = INSTALL_AUTH

    @post(
        status_code=HTTP_200_OK,
        summary="Record a batch of interaction events",
        responses=documented(400, 401, 413),
    )
    async def ingest(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EventBatch],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> IngestResult:
        """Apply the events atomically and idempotently (by ``event_id``).

        ``duplicates`` counts events already applied earlier: a client may drop them.
        """
        with spending(request.scope.setdefault("state", {})) as budget:
            if not data.events and budget is not None and budget.verify:
                # No script runs for an empty batch to check a token that named its
                # reader: it is looked up (an empty batch is rare; a forged one a 401).
                if await core.users.authenticate(bearer_token(request) or "") is None:
                    raise Unauthorized("unknown or revoked token")
                return IngestResult(accepted=0, duplicates=0)
            try:
                result = await core.ingestor.ingest(user_id, data.events, budget=budget)
            except Unauthorized:
                relinked = await relinked_reader(request, core, user_id)
                if relinked is None:
                    raise
                result = await core.ingestor.ingest(relinked, data.events, budget=budget)
        EVENTS_ACCEPTED.inc(result.accepted)
        EVENTS_DUPLICATE.inc(result.duplicates)
        return result
