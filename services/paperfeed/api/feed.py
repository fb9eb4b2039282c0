from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide

from paperfeed.api.deps import provide_reader_id, relinked_reader
from paperfeed.api.metrics import FEEDS_SERVED
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.api.papers import Limit
from paperfeed.core import Core
from paperfeed.errors import Unauthorized
from paperfeed.recsys.feed import Feed


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
    ) -> Feed:
        """Today's papers ranked for the caller, each with its score and the reasons.

        A new install gets trending papers; every interaction changes the next answer.
        """
        try:
            feed = await core.feeds.feed(user_id, limit)
        except Unauthorized:
            relinked = await relinked_reader(request, core, user_id)
            if relinked is None:
                raise
            feed = await core.feeds.feed(relinked, limit)
        FEEDS_SERVED.labels(kind="personal" if feed.model_version else "trending").inc()
        return feed
