from __future__ import annotations

import re
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from paperfeed.api.deps import provide_optional_reader
from paperfeed.api.openapi import documented
from paperfeed.api.papers import Limit
from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.errors import InvalidInput, described
from paperfeed.paper_state import PaperState, paper_states
from paperfeed.recsys.search import is_url, paper_reference

QUERY_CHARS = 300
"""A query is cut to this many characters (after white space is collapsed): a longer one
is searched for its beginning, never refused (nor echoed back whole in an error)."""
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

Query = Annotated[
    str,
    QueryParameter(
        min_length=1,
        # Something to look for, and no control characters but white space (a pasted
        # title may hold line breaks). No maximum: a long query is cut, not refused. Its
        # parts cannot match the same character (white space, then the first other
        # character): a regex whose first and last parts overlapped backtracked in
        # quadratic time, seconds of the event loop for a 16,000-character query.
        pattern=described(
            r"^[^\S\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
            "something to look for (not only spaces), without control characters",
        ),
        description=(
            "Words, an arXiv id, an arXiv or Hugging Face paper URL, a title or an author's "
            f"name (cut to its first {QUERY_CHARS} characters)"
        ),
    ),
]


class SearchItem(msgspec.Struct, kw_only=True):
    paper: Paper
    score: float
    state: PaperState | None = None
    """The caller's own state of the paper (with a bearer token; null without)."""


class SearchAnswer(msgspec.Struct, kw_only=True):
    query: str
    """The query as searched (white space collapsed, cut to 300 characters)."""
    items: list[SearchItem]
    personal: bool
    """Ranked for the caller too (a token was sent), not by text and trending alone."""
    named: str | None = None
    """The arXiv id the query names (an id, or an arXiv or Hugging Face paper URL),
    whether or not the catalog has it: no items then means the paper is not in the
    catalog (yet)."""
    cut: bool = False
    """The query was longer than 300 characters and was cut."""


def clean_query(raw: str) -> tuple[str, bool]:
    """The query as searched, and whether it was cut; 400 naming ``q`` when nothing is
    left to look for or it holds control characters (never echoing it)."""
    if CONTROL.search(raw):
        raise InvalidInput("q", "control characters are not allowed")
    query = " ".join(raw.split())
    if not query:
        raise InvalidInput("q", "nothing to look for (only white space)")
    if len(query) <= QUERY_CHARS:
        return query, False
    return query[:QUERY_CHARS].rstrip(), True


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
    ) -> SearchAnswer:
        """Papers matching the words of ``q`` in title, abstract and authors, by BM25. An
        arXiv id, or an arXiv or Hugging Face paper URL, finds that paper alone (``named``
        says which; no items: not in the catalog yet); another URL finds nothing. A whole
        title puts that paper first, an author's name their papers. With a bearer token,
        the best matches are ranked for the caller too (their papers' text and vector)
        and by trending, and each item carries the caller's ``state`` of the paper."""
        query, cut = clean_query(q)
        named = paper_reference(query)
        items: list[SearchItem]
        if named is not None:
            # Read from the catalog itself, not this process's index: a paper imported a
            # moment ago is found at once.
            paper = await core.catalog.get(named)
            items = [SearchItem(paper=paper, score=1.0)] if paper is not None else []
            personal = False
        elif is_url(query):
            items, personal = [], False
        else:
            found = await core.feeds.search(query, limit, user_id)
            items = [SearchItem(paper=i.paper, score=i.score) for i in found.items]
            personal = found.personal
        if user_id is not None and items:
            states = await paper_states(
                core.redis, core.catalog, user_id, [i.paper.id for i in items]
            )
            for item in items:
                item.state = states[item.paper.id]
        return SearchAnswer(query=query, items=items, personal=personal, named=named, cut=cut)
