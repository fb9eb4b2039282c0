from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from paperfeed.api.deps import decode_json, require_admin
from paperfeed.api.openapi import ADMIN_AUTH, documented
from paperfeed.catalog.importers import ImportFormatError, PaperRecord, paper_from_record
from paperfeed.catalog.repository import ImportResult
from paperfeed.core import Core
from paperfeed.errors import InvalidInput
from paperfeed.recsys.launch import start_training

MAX_PAPERS_PER_REQUEST = 5_000


class TrainStarted(msgspec.Struct):
    status: str
    """``started`` (a trainer process was launched) or ``running`` (one already is)."""


class ModelStatus(msgspec.Struct):
    version: str | None
    """Published version (null before the first model)."""
    served_version: str | None
    """Version this api process serves with."""
    trained_at: float | None = None
    metrics: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    users: int = 0
    papers: int = 0
    interactions: int = 0
    params: dict[str, object] = msgspec.field(default_factory=dict)


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
        summary="Train a model now (in the background)",
        responses=documented(401, 403),
    )
    async def train(
        self, core: NamedDependency[Core], admin: NamedDependency[None]
    ) -> TrainStarted:
        """Launches ``paperfeed train`` beside the api; a model is published if it is better."""
        started = await start_training(core)
        return TrainStarted(status="started" if started else "running")

    @get(
        "/model",
        summary="The published model and its held-out metrics",
        responses=documented(401, 403),
    )
    async def model(self, core: NamedDependency[Core], admin: NamedDependency[None]) -> ModelStatus:
        version = await core.models.current_version()
        meta = await core.models.meta(version) if version else None
        if meta is None:
            return ModelStatus(version=None, served_version=core.holder.version)
        return ModelStatus(
            version=meta.version,
            served_version=core.holder.version,
            trained_at=meta.trained_at,
            metrics=meta.metrics,
            users=meta.n_users,
            papers=meta.n_items,
            interactions=meta.n_interactions,
            params={"als": msgspec.to_builtins(meta.als), "blend": msgspec.to_builtins(meta.blend)},
        )
