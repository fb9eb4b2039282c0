"""``GET /v1/catalog``: how many papers there are and whether new ones arrive (the catalog
sync's health, from ``pf:sync:state``), for a client to tell its reader when the sync
has been failing."""

from __future__ import annotations

import time
from typing import Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from paperfeed.api.openapi import documented
from paperfeed.catalog.sources import Source, parse_sources, read_state
from paperfeed.catalog.sync import arxiv_categories, arxiv_summary
from paperfeed.core import Core
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
