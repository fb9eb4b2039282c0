from __future__ import annotations

import time
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter

from paperfeed.api.openapi import documented
from paperfeed.catalog.papers import Paper, normalize_paper_id
from paperfeed.core import Core
from paperfeed.errors import NotFound
from paperfeed.recsys.feed import Similar
from paperfeed.trending import Window


class PaperPage(msgspec.Struct):
    items: list[Paper]
    next: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""


class ScoredPaper(msgspec.Struct):
    paper: Paper
    score: float


class TrendingPage(msgspec.Struct):
    window: Window
    items: list[ScoredPaper]


Limit = Annotated[int, QueryParameter(ge=1, le=200, description="How many items (1-200)")]
Cursor = Annotated[
    str | None,
    QueryParameter(pattern=r"^[0-9]{1,9}$", description="The ``next`` of the previous page"),
]


class PaperController(Controller):
    path = "/v1/papers"
    tags = ["papers"]

    @get(summary="List the catalog, newest first", responses=documented(400))
    async def list_papers(
        self, core: NamedDependency[Core], limit: Limit = 50, cursor: Cursor = None
    ) -> PaperPage:
        papers, next_cursor = await core.catalog.newest(limit, cursor)
        return PaperPage(items=papers, next=next_cursor)

    @get("/{paper_id:str}", summary="One paper", responses=documented(400, 404))
    async def get_paper(self, core: NamedDependency[Core], paper_id: FromPath[str]) -> Paper:
        paper = await core.catalog.get(normalize_paper_id(paper_id))
        if paper is None:
            raise NotFound(f"no paper {paper_id!r}")
        return paper

    @get("/{paper_id:str}/similar", summary="Papers like this one", responses=documented(400, 404))
    async def similar(
        self, core: NamedDependency[Core], paper_id: FromPath[str], limit: Limit = 10
    ) -> Similar:
        """Nearest papers by the model's factors and by text (text only before a model)."""
        return await core.feeds.similar(normalize_paper_id(paper_id), limit)


class TrendingController(Controller):
    path = "/v1/trending"
    tags = ["papers"]

    @get(summary="Globally trending papers", cache=True, responses=documented(400))
    async def trending(
        self, core: NamedDependency[Core], window: FromQuery[Window] = "week", limit: Limit = 50
    ) -> TrendingPage:
        """Papers by time-decayed interaction score (half-life per window).

        The same for everyone: answered from a short response cache
        (``PAPERFEED_TRENDING_CACHE_S``).
        """
        ranked = await core.trending.top(window, limit, time.time())
        papers = await core.catalog.get_many([pid for pid, _ in ranked])
        items = [ScoredPaper(papers[pid], score) for pid, score in ranked if pid in papers]
        return TrendingPage(window=window, items=items)
