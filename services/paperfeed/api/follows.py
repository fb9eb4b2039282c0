"""Follows (``/v1/me/follows``) and the catalog's topics one can follow (``/v1/topics``);
the logic is ``paperfeed.follows``."""

from __future__ import annotations

from litestar import Controller, delete, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from paperfeed.api.deps import provide_user_id
from paperfeed.api.openapi import INSTALL_AUTH, documented
from paperfeed.core import Core
from paperfeed.follows import FollowList, FollowRequest, TopicList


class FollowsController(Controller):
    path = "/v1/me/follows"
    tags = ["follows"]
    dependencies = {"user_id": Provide(provide_user_id)}
    security = INSTALL_AUTH

    @get(summary="The authors and topics the caller follows", responses=documented(401))
    async def read(self, core: NamedDependency[Core], user_id: NamedDependency[str]) -> FollowList:
        """Each followed topic says which of the catalog's topics it stands for now
        (``current``; null: none, after the topics were learned again)."""
        return await core.follows.read(user_id)

    @put(
        status_code=HTTP_200_OK,
        summary="Follow an author (by name) or a topic (by id)",
        responses=documented(400, 401, 404),
    )
    async def follow(
        self,
        data: JSONBody[FollowRequest],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> FollowList:
        """``{"author": "Yann LeCun"}`` or ``{"topic": "<id from GET /v1/topics>"}``.
        The author's new papers (matched after normalisation: case, accents, initials)
        and the topic's come into the caller's feed, with the reason "new from <author>"
        or "new in <topic>". At most 100 follows (400 past them, naming the field); an
        unknown topic is a 404 naming ``topic``. Following again changes nothing."""
        return await core.follows.follow(user_id, data)

    @delete(
        status_code=HTTP_200_OK,
        summary="Unfollow an author or a topic",
        responses=documented(400, 401),
    )
    async def unfollow(
        self,
        data: JSONBody[FollowRequest],
        core: NamedDependency[Core],
        user_id: NamedDependency[str],
    ) -> FollowList:
        """The same body as ``PUT`` (an author by any spelling that normalises alike);
        what was not followed is left as it is. Answers the follows left."""
        return await core.follows.unfollow(user_id, data)


class TopicsController(Controller):
    path = "/v1/topics"
    tags = ["follows"]

    @get(summary="The catalog's topics, with example titles", responses=documented())
    async def topics(self, core: NamedDependency[Core]) -> TopicList:
        """Learned from the catalog's text (``docs/recommender.md``, "Topics"), largest
        first, each named by its heaviest terms with the titles of the papers nearest its
        centre: what a client offers a new reader to follow."""
        return await core.follows.topics()
