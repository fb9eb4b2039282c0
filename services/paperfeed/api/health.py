from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.core import Core


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
        return Response(Health("ok"), status_code=HTTP_200_OK)
