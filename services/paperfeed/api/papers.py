from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.config.response_cache import default_cache_key_builder
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from paperfeed.api.deps import bearer_token, provide_optional_reader
from paperfeed.api.openapi import documented
from paperfeed.catalog.papers import Paper, no_such_paper, normalize_paper_id
from paperfeed.core import Core
from paperfeed.errors import PAGE_NEXT, described
from paperfeed.paper_state import PaperState, paper_states
from paperfeed.serving.feed import Similar
from paperfeed.trending import Window


class PaperPage(msgspec.Struct):
    items: list[Paper]
    next: str | None
    """Pass as ``cursor`` for the next page; null on the last page."""


class TrendingItem(msgspec.Struct, kw_only=True):
    paper: Paper
    score: float
    """The paper's time-decayed interaction score in the window."""
    rank: int
    """Its place in the window (1: the hottest)."""
    state: PaperState | None = None
    """The caller's own state of the paper (with a bearer token; null without)."""


class TrendingPage(msgspec.Struct, kw_only=True):
    window: Window
    items: list[TrendingItem]
    next: str | None = None
    """Pass as ``cursor`` for the next page; null on the last page."""


Limit = Annotated[int, QueryParameter(ge=1, le=200, description="How many items (1-200)")]
Cursor = Annotated[
    str | None,
    QueryParameter(
        pattern=described(r"^[0-9]{1,9}$", PAGE_NEXT),
        description="The ``next`` of the previous page",
    ),
]
TrendingCursor = Annotated[
    str | None,
    QueryParameter(
        pattern=described(r"^[0-9]{1,6}$", PAGE_NEXT),
        description="The ``next`` of the previous page (papers ranked before it: skipped)",
    ),
]


def trending_cache_key(request: Request[Any, Any, Any]) -> str:
    """The response cache's key: an answer for a reader (with their papers' state) is
    never another caller's (``create_app`` keeps only anonymous answers)."""
    key = default_cache_key_builder(request)
    return f"{key}|reader" if bearer_token(request) is not None else key


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
            raise no_such_paper(paper_id)
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
    dependencies = {"user_id": Provide(provide_optional_reader)}

    @get(
        summary="Globally trending papers",
        cache=True,
        cache_key_builder=trending_cache_key,
        responses=documented(400, 401),
    )
    async def trending(
        self,
        core: NamedDependency[Core],
        user_id: NamedDependency[str | None],
        window: FromQuery[Window] = "week",
        limit: Limit = 50,
        cursor: TrendingCursor = None,
    ) -> TrendingPage:
        """Papers by time-decayed interaction score (half-life per window), ``limit`` at a
        time (``next`` reads on: the ranking moves as readers act, so a page may repeat
        a paper that rose since the previous one).

        The same for everyone, answered from a short response cache
        (``PAPERFEED_TRENDING_CACHE_S``); with a bearer token, each item carries the
        caller's ``state`` of the paper (never cached).
        """
        offset = int(cursor) if cursor else 0
        ranked = await core.trending.top(window, limit + 1, time.time(), offset)
        more = len(ranked) > limit
        ranked = ranked[:limit]
        papers = await core.catalog.get_many([pid for pid, _ in ranked])
        items = [
            TrendingItem(paper=papers[pid], score=score, rank=offset + n + 1)
            for n, (pid, score) in enumerate(ranked)
            if pid in papers
        ]
        if user_id is not None and items:
            states = await paper_states(
                core.redis, core.catalog, user_id, [i.paper.id for i in items]
            )
            for item in items:
                item.state = states[item.paper.id]
        return TrendingPage(window=window, items=items, next=str(offset + limit) if more else None)
