from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from paperfeed.api.deps import decode_json, require_admin
from paperfeed.api.openapi import ADMIN_AUTH, documented
from paperfeed.catalog.importers import ImportFormatError, PaperRecord, paper_from_record
from paperfeed.catalog.repository import ImportResult
from paperfeed.core import Core
from paperfeed.errors import InvalidInput
from paperfeed.recsys.repository import Rollback

MAX_PAPERS_PER_REQUEST = 5_000
DECISIONS_SHOWN = 10


class TrainRequest(msgspec.Struct):
    status: Literal["queued", "already queued"]
    """``queued``: the worker will train on its next check; ``already queued``: a request
    was waiting already (one training answers both)."""
    running: bool
    """A training is running now (a request made meanwhile is served by the next one)."""
    worker_seen_s: float | None
    """Seconds since a worker was last alive (null: none seen; nothing will train)."""


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    """A kept version (``GET /v1/admin/model``'s ``decisions`` name them); null or left
    out: the newest kept version published before the current one."""


class ModelStatus(msgspec.Struct, kw_only=True):
    version: str | None
    """Published version (null before the first model)."""
    served_version: str | None
    """Version this api process serves with."""
    trained_at: float | None = None
    age_s: float | None = None
    """Seconds since the published model was trained."""
    data_until: float | None = None
    """Newest interaction the model learned from: the next gate judges on later ones."""
    metrics: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """The published model's gate metrics (candidate, popularity, current)."""
    users: int = 0
    papers: int = 0
    interactions: int = 0
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    """What this deployment learned: ALS hyperparameters (and the search they came
    from), text features, blend weights, their validation scores."""
    training: bool = False
    """A training runs now."""
    search: dict[str, Any] | None = None
    """The last hyperparameter search (when, trials, best); the next is due
    ``PAPERFEED_SEARCH_INTERVAL_S`` after it."""
    decisions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """The latest training runs, newest first: published or not, why, the metrics."""


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    dependencies = {"admin": Provide(require_admin)}
    security = ADMIN_AUTH

    @post(
        "/papers",
        status_code=HTTP_200_OK,
        summary="Import papers (JSON-lines record shape)",
        responses=documented(400, 401, 403, 413),
    )
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

    @post(
        "/train",
        status_code=HTTP_202_ACCEPTED,
        summary="Ask the worker to train a model now",
        responses=documented(401, 403),
    )
    async def train(
        self, core: NamedDependency[Core], admin: NamedDependency[None]
    ) -> TrainRequest:
        """Queues a training for the worker (``paperfeed worker``, or the one ``make run``
        starts); a model is published if the gate finds it better. Asking again while one
        is queued changes nothing."""
        queued, running, heartbeat = await core.models.request_training()
        return TrainRequest(
            status="queued" if queued else "already queued",
            running=running,
            worker_seen_s=round(time.time() - heartbeat, 1) if heartbeat else None,
        )

    @get(
        "/model",
        summary="The published model, what it learned, and the latest training decisions",
        responses=documented(401, 403),
    )
    async def model(self, core: NamedDependency[Core], admin: NamedDependency[None]) -> ModelStatus:
        version = await core.models.current_version()
        meta = await core.models.meta(version) if version else None
        decisions = await core.models.decisions(DECISIONS_SHOWN)
        search = await core.models.last_search()
        running = await core.models.training()
        status = ModelStatus(
            version=None,
            served_version=core.holder.version,
            training=running,
            search=msgspec.to_builtins(search) if search else None,
            decisions=decisions,
        )
        if meta is None:
            return status
        return msgspec.structs.replace(
            status,
            version=meta.version,
            trained_at=meta.trained_at,
            age_s=round(time.time() - meta.trained_at, 1),
            data_until=meta.data_until or None,
            metrics=meta.metrics,
            users=meta.n_users,
            papers=meta.n_items,
            interactions=meta.n_interactions,
            params={
                "als": msgspec.to_builtins(meta.als),
                "blend": msgspec.to_builtins(meta.blend),
                "choices": msgspec.to_builtins(meta.choices),
            },
        )

    @post(
        "/model/rollback",
        status_code=HTTP_200_OK,
        summary="Make an earlier kept model version current",
        responses=documented(400, 401, 403),
    )
    async def rollback(
        self,
        core: NamedDependency[Core],
        admin: NamedDependency[None],
        data: JSONBody[RollbackRequest],
    ) -> Rollback:
        """Serves an earlier model version again (every api process switches within
        ``PAPERFEED_MODEL_POLL_S``) and records the rollback with the training decisions.
        The next training is judged against it and publishes a better model as usual.
        A version that is not kept, is current already, or is incomplete: 400."""
        return await core.models.rollback(data.version)
