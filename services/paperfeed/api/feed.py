from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from paperfeed.api.deps import provide_reader_id, relinked_reader
from paperfeed.api.limits import spending
from paperfeed.api.metrics import FEEDS_SERVED
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.api.papers import Limit
from paperfeed.core import Core
from paperfeed.errors import PAGE_NEXT, Unauthorized, described
from paperfeed.serving.feed import Feed, FeedItem

FEED_DEPTH = 400
"""How far a reader may page into their feed (``cursor`` + ``limit``): past the papers
a feed ranks (its candidates are a few hundred) nothing is left to show."""

FeedCursor = Annotated[
    str | None,
    QueryParameter(
        pattern=described(r"^[0-9]{1,3}$", PAGE_NEXT),
        description="The ``next`` of the previous page (the papers ranked before it: skipped)",
    ),
]


class FeedPage(msgspec.Struct, kw_only=True):
    items: list[FeedItem]
    """No ``state``: the feed never lists a paper the caller opened, upvoted, saved,
    shared or dismissed."""
    model_version: str | None
    next: str | None = None
    """Pass as ``cursor`` for the next papers of this ranking; null: nothing more."""


class FeedController(Controller):
    path = "/v1/feed"
    tags = ["feed"]
    dependencies = {"user_id": Provide(provide_reader_id)}
    security = INSTALL_AUTH

    @get(summary="The caller's personalized trending feed", responses=documented(400, 401))
    async def feed(
        self,
        request: Request[Any, Any, Any],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
        limit: Limit = 30,
        cursor: FeedCursor = None,
    ) -> FeedPage:
        """Today's papers ranked for the caller, each with its score and the reasons,
        ``limit`` at a time (``next`` reads on, up to the feed's first 400 papers).

        A new install gets trending papers; every interaction changes the next answer
        (a page read after the caller acted is of the new ranking: a paper may repeat
        or be passed over, and a client drops the ones it shows already).
        """
        offset = int(cursor) if cursor else 0
        wanted = min(offset + limit, FEED_DEPTH)
        # One more than the page, to know whether there is a next one.
        depth = min(wanted + 1, FEED_DEPTH)
        with spending(request.scope.setdefault("state", {})) as budget:
            try:
                feed = await core.feeds.feed(user_id, depth, budget=budget)
            except Unauthorized:
                relinked = await relinked_reader(request, core, user_id)
                if relinked is None:
                    raise
                feed = await core.feeds.feed(relinked, depth, budget=budget)
        FEEDS_SERVED.labels(kind="personal" if feed.model_version else "trending").inc()
        return paged(feed, offset, wanted)


def paged(feed: Feed, offset: int, wanted: int) -> FeedPage:
    """Items ``offset`` to ``wanted`` of the ranking (``feed`` holds one more, when
    there is one)."""
    more = len(feed.items) > wanted and wanted < FEED_DEPTH
    return FeedPage(
        items=feed.items[offset:wanted],
        model_version=feed.model_version,
        next=str(wanted) if more else None,
    )
