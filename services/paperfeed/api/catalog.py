"""``GET /v1/catalog``: how many papers there are and whether new ones arrive (the catalog
sync's health, from ``pf:sync:state``), for a client to tell its reader when the sync
has been failing. ``POST /v1/catalog/requests``: a reader asks for a paper the catalog
lacks (``docs/catalog.md``, "Reported papers")."""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED

from paperfeed.api.deps import provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.catalog.lookup import possible_arxiv_id
from paperfeed.catalog.papers import Paper
from paperfeed.catalog.sources import Source, parse_sources, read_state
from paperfeed.catalog.sync import arxiv_categories, arxiv_summary
from paperfeed.core import Core
from paperfeed.errors import InvalidInput, NotFound, described
from paperfeed.recsys.search import paper_reference
from paperfeed.settings import Settings

SOURCE_NAMES = {"hf": "Hugging Face daily papers", "arxiv": "arXiv"}


class SourceStatus(msgspec.Struct, kw_only=True):
    source: Source
    name: str
    """What the source is, for people."""
    failing: bool
    """Its last runs failed and its last success is older than the sync interval (or
    it never succeeded): no new papers from it."""
    failures: int
    """Failed runs in a row (arXiv: the most of one of its categories)."""
    last_success: float | None
    """When it last synced (unix seconds; arXiv: its category synced longest ago)."""


class CatalogStatus(msgspec.Struct, kw_only=True):
    papers: int
    sync: Literal["ok", "failing", "off"]
    """``failing``: some source is; ``off``: no scheduled sync (the catalog grows by
    imports only)."""
    sources: list[SourceStatus]


def source_status(
    state: dict[str, str], source: Source, settings: Settings, now: float
) -> SourceStatus:
    if source == "hf":
        failures = int(float(state.get("hf:failures") or 0))
        last = float(state.get("hf:last_success") or 0)
    else:
        summary = arxiv_summary(state, arxiv_categories(settings))
        failures = int(summary["failures"]) if summary["failing"] else 0
        last = float(summary["last_success"])
    return SourceStatus(
        source=source,
        name=SOURCE_NAMES[source],
        failing=failures > 0 and now - last > settings.sync_interval_s,
        failures=failures,
        last_success=last or None,
    )


def catalog_status(state: dict[str, str], papers: int, settings: Settings) -> CatalogStatus:
    if settings.sync_interval_s <= 0:
        return CatalogStatus(papers=papers, sync="off", sources=[])
    now = time.time()
    sources = [
        source_status(state, source, settings, now)
        for source in parse_sources(settings.sync_sources)
    ]
    failing = any(s.failing for s in sources)
    return CatalogStatus(papers=papers, sync="failing" if failing else "ok", sources=sources)


_ID = r"[0-9]{4}\.[0-9]{4,5}(?:v[0-9]+)?"
PAPER_REFERENCE = described(
    rf"^\s*(?:(?:[aA][rR][xX][iI][vV]:\s*)?{_ID}"
    rf"|(?:https?://)?(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/{_ID}(?:\.pdf)?/?(?:[?#]\S*)?"
    rf"|(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/papers/{_ID}/?(?:[?#]\S*)?)\s*$",
    "an arXiv id (2401.01234) or the paper's arXiv or Hugging Face address",
)
"""What names an arXiv paper: its id (a version, an ``arXiv:`` prefix allowed), or its
arXiv or Hugging Face page (every text it admits names an id: ``paper_reference``)."""


class PaperRequest(msgspec.Struct, forbid_unknown_fields=True):
    paper_id: Annotated[str, msgspec.Meta(max_length=2_000, pattern=PAPER_REFERENCE)]
    """An arXiv id (``2401.01234``; a version is ignored), or an arXiv or Hugging Face
    paper URL (``https://arxiv.org/abs/2401.01234v2``, ``https://huggingface.co/papers/2401.01234``)."""


class PaperRequestState(msgspec.Struct, kw_only=True):
    paper_id: str
    """The arXiv id asked for (version-less)."""
    state: Literal["waiting", "catalogued"]
    """``waiting``: it enters the catalog once arXiv (or Hugging Face) describes it, at
    the worker's next lookup (``PAPERFEED_CANDIDATE_LOOKUP_INTERVAL_S``); an id no
    source knows never does. ``catalogued``: it is there already (``paper``)."""
    paper: Paper | None = None
    """The paper, when catalogued."""
    reports_left: int | None = None
    """Papers the caller may still report or ask for today (set when this request
    spent one; asking again for a paper still waiting spends nothing)."""


def requested_id(raw: str, now: float) -> str:
    """The arXiv id a request names (its text matched ``PAPER_REFERENCE``: a 400 naming
    ``paper_id`` otherwise); 404 naming ``paper_id`` when no arXiv paper can have it (a
    month that does not exist or has not begun, a number of the wrong length for its
    month)."""
    paper_id = paper_reference(" ".join(raw.split()))
    if paper_id is None:
        raise InvalidInput(
            "paper_id",
            "not an arXiv id or an arXiv or Hugging Face paper URL "
            "(2401.01234, https://arxiv.org/abs/2401.01234, https://huggingface.co/papers/2401.01234)",
        )
    if not possible_arxiv_id(paper_id, now):
        raise NotFound(
            f"paper_id: no arXiv paper can be {paper_id} (no such month yet, or a number of "
            "the wrong length for its month)"
        )
    return paper_id


class CatalogController(Controller):
    path = "/v1/catalog"
    tags = ["papers"]

    @get(summary="The catalog's size and whether its sync works (public)", responses=documented())
    async def status(self, core: NamedDependency[Core]) -> CatalogStatus:
        """``sync: failing`` when a source's last runs failed and it has not synced for
        longer than the sync interval (``PAPERFEED_SYNC_INTERVAL_S``): the papers shown
        are the catalog as it was. The reasons are in the worker's log and ``/metrics``,
        not here."""
        state = await read_state(core.redis)
        return catalog_status(state, await core.catalog.count(), core.settings)

    @post(
        "/requests",
        status_code=HTTP_202_ACCEPTED,
        summary="Ask for a paper the catalog lacks, by arXiv id or URL",
        responses=documented(400, 401, 404),
        dependencies={"user_id": Provide(provide_user_id)},
        security=INSTALL_AUTH,
    )
    async def request_paper(
        self,
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
        data: JSONBody[PaperRequest],
    ) -> PaperRequestState:
        """``catalogued`` when the catalog has the paper. Else the caller's request
        makes the id public by their choice: the worker looks it up at arXiv and
        Hugging Face at its next lookup without waiting for a second reader, and the
        paper enters with the source's title, abstract and authors, or not at all
        (``waiting``). Only the id is kept. Each new request spends one of the caller's
        reports a day (``PAPERFEED_REPORTS_PER_DAY``, shared with the papers their
        pages report): past it, 429 until the next day (UTC). Erasing the caller takes
        them out of their requests. A text that names no arXiv paper: 400 naming
        ``paper_id``; an id no arXiv paper can have (a month to come, no such month):
        404."""
        now = time.time()
        paper_id = requested_id(data.paper_id, now)
        paper = await core.catalog.get(paper_id)
        if paper is not None:
            return PaperRequestState(paper_id=paper.id, state="catalogued", paper=paper)
        outcome = await core.catalog.reports.request(user_id, paper_id, now)
        return PaperRequestState(
            paper_id=paper_id, state="waiting", reports_left=outcome.reports_left
        )
