"""``create_app``: the one place that wires the Litestar application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Response, get
from litestar.config.cors import CORSConfig
from litestar.config.response_cache import ResponseCacheConfig
from litestar.di import NamedDependency, Provide
from litestar.logging.config import LoggingConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from threadpoolctl import threadpool_limits

from paperfeed import __version__
from paperfeed.api.admin import AdminController
from paperfeed.api.catalog import CatalogController
from paperfeed.api.deps import provide_core
from paperfeed.api.digest import DigestLinkController, MyDigestController
from paperfeed.api.errors import EXCEPTION_HANDLERS, EXPECTED_ERRORS, WatchDisconnects, log_uncaught
from paperfeed.api.events import EventController
from paperfeed.api.feed import FeedController
from paperfeed.api.follows import FollowsController, TopicsController
from paperfeed.api.health import HealthController
from paperfeed.api.installs import InstallController
from paperfeed.api.limits import RequestBudgets, bearer_from_scope
from paperfeed.api.link import LinkStateController
from paperfeed.api.me import MeController
from paperfeed.api.meta import MetaController
from paperfeed.api.metrics import mirror_store_metrics, observe_model, read_redis_memory
from paperfeed.api.openapi import (
    COMPONENTS,
    ClosedStructSchemaPlugin,
    assets_router,
    render_plugins,
)
from paperfeed.api.papers import PaperController, TrendingController
from paperfeed.api.search import SearchController
from paperfeed.core import Core
from paperfeed.logs import json_wanted, logging_config
from paperfeed.settings import Settings, load_settings
from paperfeed.store.client import storage_failed

log = logging.getLogger("paperfeed")

UNLIMITED_PATHS = ["/healthz", "/readyz", "/metrics", "/schema"]


class MetricsController(PrometheusController):
    """Litestar's Prometheus endpoint, with Redis's memory read just before each scrape
    (every process that answers one reads it itself: right with several processes)."""

    path = "/metrics"
    include_in_schema = False

    @get()
    async def get(self, core: NamedDependency[Core]) -> Response[bytes]:
        observe_model(core.holder)
        await read_redis_memory(core.redis)
        return await PrometheusController.get.fn(self)  # type: ignore[no-any-return]


def create_app(settings: Settings | None = None, core: Core | None = None) -> Litestar:
    """The api. ``core`` (tests, benchmarks) replaces the one built from ``settings``."""
    settings = settings or load_settings()
    core = core or Core.connect(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.core = core
        # Requests run small products in a bounded pool of threads: one BLAS thread
        # each (a threaded BLAS would oversubscribe the cores and spin).
        threadpool_limits(limits=1, user_api="blas")
        try:
            # The demo catalog first: the first index is then made of it, not of an
            # empty catalog replaced a moment later.
            if settings.demo_catalog:
                loaded = await core.load_demo_catalog_if_empty()
                if loaded:
                    log.info("loaded the demo catalog", extra={"papers": loaded.papers})
            await core.holder.refresh()
        except Exception as exc:
            if not storage_failed(exc):
                raise
            # Start anyway: /readyz says not ready until Redis answers.
            log.error("redis unavailable at start-up", extra={"error": repr(exc)})
        core.holder.start()
        stopping = asyncio.Event()
        mirror = asyncio.create_task(mirror_store_metrics(core.redis, stopping))
        try:
            yield
        finally:
            stopping.set()
            await mirror
            await core.holder.stop()
            await core.close()

    prometheus = PrometheusConfig(
        app_name="paperfeed", prefix="paperfeed", group_path=True, exclude=UNLIMITED_PATHS
    )
    logging_dict = logging_config(settings.log_level, json_wanted(settings.log_json))
    return Litestar(
        route_handlers=[
            InstallController,
            EventController,
            PaperController,
            TrendingController,
            CatalogController,
            MeController,
            FollowsController,
            TopicsController,
            LinkStateController,
            MyDigestController,
            DigestLinkController,
            AdminController,
            FeedController,
            HealthController,
            MetaController,
            SearchController,
            MetricsController,
            assets_router(),
        ],
        dependencies={"core": Provide(provide_core, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[
            prometheus.middleware,
            RequestBudgets(core, UNLIMITED_PATHS),
            WatchDisconnects(),
        ],
        cors_config=CORSConfig(
            allow_origins=[],
            allow_origin_regex=settings.cors_origin_regex,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=3600,
        ),
        openapi_config=OpenAPIConfig(
            title="paperfeed",
            version=__version__,
            description="Personalized trending research papers.",
            path="/schema",
            components=COMPONENTS,
            render_plugins=render_plugins(),
        ),
        plugins=[ClosedStructSchemaPlugin()],
        logging_config=LoggingConfig(
            formatters=logging_dict["formatters"],
            handlers=logging_dict["handlers"],
            root=logging_dict["root"],
            loggers=logging_dict["loggers"],
            log_exceptions="always",
            exception_logging_handler=log_uncaught,
            # Expected answers, not faults: no traceback in the logs (status codes match
            # Litestar's own exceptions, classes match paperfeed's by exact type).
            # 405: a GET of a POST-only path (curl /v1/installs) is the client's mistake.
            disable_stack_trace={404, 400, 401, 403, 405, 413, 429, *EXPECTED_ERRORS},
        ),
        request_max_body_size=settings.max_body_bytes,
        response_cache_config=ResponseCacheConfig(
            default_expiration=settings.trending_cache_s,
            # Only answers for everyone are kept: one for a reader carries their own
            # papers' state (its key differs too: ``trending_cache_key``).
            cache_response_filter=lambda scope, status: (
                settings.trending_cache_s > 0
                and 200 <= status < 300
                and bearer_from_scope(scope) is None
            ),
        ),
        debug=False,
    )


def app_from_env() -> Litestar:
    """uvicorn factory (``paperfeed.api.app:app_from_env``)."""
    return create_app()
