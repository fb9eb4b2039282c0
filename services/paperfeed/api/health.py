from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.core import Core
from paperfeed.store.pressure import refused_recently


class Health(msgspec.Struct):
    status: str
    detail: str | None = None


class HealthController(Controller):
    tags = ["operations"]
    include_in_schema = False

    @get("/healthz", summary="The process is up")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get("/readyz", summary="Redis is reachable")
    async def readyz(self, core: NamedDependency[Core]) -> Response[Health]:
        try:
            await core.redis.ping()
        except (RedisError, RedisClusterException, OSError) as exc:
            return Response(
                Health("unavailable", repr(exc)), status_code=HTTP_503_SERVICE_UNAVAILABLE
            )
        if refused_recently():
            # Still ready: reads are served; writes are answered 503 until memory is back.
            full = "redis refuses writes (maxmemory): reads are served, writes answered 503"
            return Response(Health("ok", full), status_code=HTTP_200_OK)
        return Response(Health("ok"), status_code=HTTP_200_OK)
