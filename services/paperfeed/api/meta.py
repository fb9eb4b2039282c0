"""``GET /v1/meta``: what this deployment offers, for clients to adapt before asking."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from paperfeed import __version__
from paperfeed.core import Core


class Meta(msgspec.Struct):
    version: str
    """The service's version."""
    digests: bool
    """E-mail digests can be subscribed to (an SMTP server is configured)."""
    rate_limit_per_minute: int
    """Requests a minute an install may make."""


class MetaController(Controller):
    path = "/v1/meta"
    tags = ["service"]

    @get(summary="What this service offers (public)", cache=60)
    async def meta(self, core: NamedDependency[Core]) -> Meta:
        return Meta(
            version=__version__,
            digests=core.digests.enabled,
            rate_limit_per_minute=core.settings.rate_limit_per_minute,
        )
