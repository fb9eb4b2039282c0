from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from paperfeed.api.deps import bearer_token
from paperfeed.api.openapi import documented
from paperfeed.api.papers import Limit
from paperfeed.core import Core
from paperfeed.errors import Unauthorized
from paperfeed.recsys.feed import SearchResults

Query = Annotated[
    str,
    QueryParameter(
        min_length=1,
        max_length=300,
        # Something to look for, and no control characters but white space (a pasted
        # title may hold line breaks).
        pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
        description="Words, an arXiv id or URL, a title or an author's name (1-300 characters)",
    ),
]


async def provide_optional_reader(
    request: Request[Any, Any, Any], core: NamedDependency[Core]
) -> str | None:
    """The caller when a bearer token is sent (401 for a wrong one); None without."""
    token = bearer_token(request)
    if token is None:
        return None
    user_id = await core.users.authenticate(token)
    if user_id is None:
        raise Unauthorized("unknown or revoked token")
    return user_id


class SearchController(Controller):
    path = "/v1/search"
    tags = ["papers"]
    dependencies = {"user_id": Provide(provide_optional_reader)}

    @get(summary="Search the catalog", responses=documented(400, 401))
    async def search(
        self,
        core: NamedDependency[Core],
        user_id: NamedDependency[str | None],
        q: Query,
        limit: Limit = 20,
    ) -> SearchResults:
        """Papers matching the words of ``q`` in title, abstract and authors, by BM25; an
        arXiv id or URL finds that paper, a whole title puts that paper first, an
        author's name their papers. With a bearer token, the best matches are ranked for
        the caller too (their papers' text and vector) and by trending."""
        return await core.feeds.search(" ".join(q.split()), limit, user_id)
