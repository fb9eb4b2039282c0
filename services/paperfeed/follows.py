"""Follows: the authors and topics a reader chose, and the recent papers they bring.

A reader follows an author by name (matched after normalisation, ``recsys.authors``)
or a topic of the catalog by its id (``GET /v1/topics``; the catalog's topics are
learned from its text, ``recsys.topics``). Kept per reader in ``pf:{u:<id>}:follows``
(a HASH): ``a:<hash of the normalised name>`` -> the name as the reader wrote it,
``t:<topic id>`` -> the topic's name when it was followed. At most ``FOLLOWS_CAP`` of
them, names at most ``MAX_NAME`` characters. Every change counts in the reader's
profile (``follows``), which the cached feed's stamp carries: the next feed is ranked
with the change.

The feed (``serving.feed``) takes the followed authors' and topics' papers of the last
days (``followed_papers``) as candidates, lifts them, and says why: "new from
<author>", "new in <topic>". The digest and the extension's badge count them.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt
from msgspec import UNSET, Meta, UnsetType

from paperfeed.errors import InvalidInput, NotFound, Unauthorized
from paperfeed.offload import Offload
from paperfeed.recsys.authors import MAX_NAME, AuthorName, author_name, fold
from paperfeed.recsys.index import CatalogIndex
from paperfeed.recsys.ranker import IntArray
from paperfeed.store import keys
from paperfeed.store.activity import queue_active
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

FOLLOWS_CAP = 100
"""Follows a reader may keep (authors and topics together)."""
MAX_TOPIC_ID = 200
FOLLOWED_CANDIDATES = 200
"""Most papers the follows add to a reader's candidates, authors' first, newest first."""
TOPIC_CANDIDATES = 50
"""Most papers one followed topic adds (a broad topic has hundreds a week)."""
TOPIC_EXAMPLES = 3
AUTHOR_PREFIX, TOPIC_PREFIX = "a:", "t:"


class FollowRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One of the two: an author's name, or a topic's id (``GET /v1/topics``)."""

    __exactly_one_field__ = True
    """The OpenAPI document says so (``api.openapi.ClosedStructSchemaPlugin``)."""

    author: Annotated[str, Meta(min_length=1, max_length=MAX_NAME)] | UnsetType = UNSET
    topic: Annotated[str, Meta(min_length=1, max_length=MAX_TOPIC_ID)] | UnsetType = UNSET


class StoredFollows(msgspec.Struct):
    """A reader's follows as kept (the export lists them)."""

    authors: list[str]
    """Names as the reader wrote them."""
    topics: dict[str, str]
    """Topic id -> its name when followed."""


def no_follows() -> StoredFollows:
    return StoredFollows(authors=[], topics={})


class FollowedTopic(msgspec.Struct):
    id: str
    name: str
    current: str | None
    """The catalog's topic it stands for now (its id): the same id, or after the topics
    were learned again, the topic whose name shares most words with it; null when none
    does (it brings no paper until one does)."""


class FollowList(msgspec.Struct):
    authors: list[str]
    topics: list[FollowedTopic]


class TopicExample(msgspec.Struct):
    id: str
    title: str


class TopicInfo(msgspec.Struct):
    id: str
    """What ``PUT /v1/me/follows`` takes as ``topic``."""
    name: str
    """Its two heaviest terms ("diffusion · video")."""
    papers: int
    examples: list[TopicExample]
    """The papers nearest its centre: what it is about, for a person choosing."""


class TopicList(msgspec.Struct):
    topics: list[TopicInfo]
    """Largest first."""


def decode_follows(raw: Mapping[Any, Any]) -> StoredFollows:
    """The follows hash as read from Redis (fields in order: a stable result)."""
    authors = [str(raw[f]) for f in sorted(raw) if str(f).startswith(AUTHOR_PREFIX)]
    topics = {
        str(f)[len(TOPIC_PREFIX) :]: str(raw[f])
        for f in sorted(raw)
        if str(f).startswith(TOPIC_PREFIX)
    }
    return StoredFollows(authors=authors, topics=topics)


def author_field(name: AuthorName) -> str:
    """The hash field of a followed author: one per normalised name ("Yann LeCun" and
    "yann lecun" are one follow; "Y. LeCun", which matches more people, another)."""
    digest = hashlib.blake2b(f"{name.key}|{name.given}".encode(), digest_size=8).hexdigest()
    return AUTHOR_PREFIX + digest


def clean_name(text: str) -> str:
    return " ".join(text.split())


def resolve_topic(index: CatalogIndex, topic_id: str, name: str) -> int | None:
    """The catalog's topic a followed one stands for now: the one of that id, else the
    one whose name shares most words with the followed name (the centres were fitted
    again; the first such topic on a tie), else None."""
    number = index.topic_of_id.get(topic_id)
    if number is not None:
        return number
    wanted = _words(name)
    best, shared = None, 0
    for i, words in enumerate(_names_words(tuple(index.topics.names))):
        overlap = len(wanted & words)
        if overlap > shared:
            best, shared = i, overlap
    return best


def _words(name: str) -> frozenset[str]:
    return frozenset(fold(name).replace("·", " ").split())


@functools.lru_cache(maxsize=4)
def _names_words(names: tuple[str, ...]) -> list[frozenset[str]]:
    """The words of each topic name, once per set of topics (a reader following many
    topics renamed by a refit would fold every name for each, at every request)."""
    return [_words(name) for name in names]


class Followed(NamedTuple):
    """What the follows bring to one ranking."""

    positions: IntArray
    """Sorted positions of the followed authors' and topics' recent papers."""
    reasons: dict[int, str]
    """Each one's reason: "new from <author>" (an author first), else "new in <topic>"."""
    authors: tuple[AuthorName, ...] = ()
    """The followed authors (normalised) ..."""
    topics: tuple[int, ...] = ()
    """... and topics (the catalog's numbers): what the follow affinity counts
    (``recsys.affinity``), whether or not they have new papers."""
    by_author: IntArray = np.zeros(0, np.int64)
    """Sorted positions among ``positions`` that a followed author brought (a reader who
    follows an author is owed their new papers on the feed's first page)."""


NOTHING_FOLLOWED = Followed(np.zeros(0, np.int64), {})


ANCHOR_RANK = 10


def catalog_now(dates: npt.NDArray[np.float64], now: float) -> float:
    """The ``ANCHOR_RANK``-th newest of ``dates`` (0: unknown, left out), ``now`` when
    none is known."""
    known = dates[dates > 0]
    if not len(known):
        return now
    rank = min(len(known), ANCHOR_RANK)
    return float(np.partition(known, len(known) - rank)[len(known) - rank])


def followed_papers(
    index: CatalogIndex, follows: StoredFollows, now: float, days: float
) -> Followed:
    """The papers of the last ``days`` by the followed authors (``recsys.authors``:
    among the catalog's newest ``POOL``) and in the followed topics, at most
    ``FOLLOWED_CANDIDATES`` (authors' first, each follow's newest first; at most
    ``TOPIC_CANDIDATES`` a topic).

    The last ``days`` as of ``now`` while the catalog has papers of those days (the
    sync keeps it current); when it has fewer than ``ANCHOR_RANK`` (offline, the demo
    catalog, a source down for weeks), where those days would hold next to nothing and
    a follow would bring nothing, the ``days`` ending at its ``ANCHOR_RANK``-th newest
    dated paper (one fresh paper, a reader's catalog request in an outage, does not
    count as current)."""
    if not follows.authors and not follows.topics:
        return NOTHING_FOLLOWED
    dates = index.dates
    anchor = catalog_now(dates[index.pool], now)
    since = (now if anchor >= now - days * 86_400 else anchor) - days * 86_400
    reasons: dict[int, str] = {}
    authors: list[AuthorName] = []
    topics: list[int] = []
    for written in follows.authors:
        wanted = author_name(written)
        if wanted is None:
            continue
        authors.append(wanted)
        found = [p for p in index.authors.papers(wanted) if dates[p] >= since]
        for position in sorted(found, key=lambda p: (-dates[p], p)):
            reasons.setdefault(position, f"new from {written}")
    by_authors = set(reasons)
    if follows.topics and len(index.topics.of_paper):
        recent = index.pool[dates[index.pool] >= since]
        of_recent = index.topics.of_paper[recent]
        for topic_id, topic_name in follows.topics.items():
            number = resolve_topic(index, topic_id, topic_name)
            if number is None:
                continue
            topics.append(number)
            label = f"new in {index.topics.names[number]}"
            for position in recent[of_recent == number][:TOPIC_CANDIDATES].tolist():
                reasons.setdefault(position, label)
    kept = dict(list(reasons.items())[:FOLLOWED_CANDIDATES])
    by_author = sorted(p for p in kept if p in by_authors)
    return Followed(
        np.array(sorted(kept), dtype=np.int64),
        kept,
        tuple(authors),
        tuple(topics),
        np.array(by_author, dtype=np.int64),
    )


def topic_catalog(index: CatalogIndex) -> list[TopicInfo]:
    """Every topic with its size and the titles nearest its centre (CPU: off the loop)."""
    topics = index.topics
    if not topics.names:
        return []
    ids = list(index.topic_of_id)
    out = []
    for number, name in enumerate(topics.names):
        members = np.flatnonzero(topics.of_paper == number)
        if len(members) == 0:
            continue
        closeness = np.asarray((index.text[members] @ topics.centres[number].T).todense()).ravel()
        nearest = members[np.argsort(-closeness, kind="stable")[:TOPIC_EXAMPLES]]
        out.append(
            TopicInfo(
                id=ids[number],
                name=name,
                papers=len(members),
                examples=[TopicExample(id=index.ids[p], title=index.titles[p]) for p in nearest],
            )
        )
    out.sort(key=lambda t: -t.papers)
    return out


class FollowService:
    """``/v1/me/follows`` and ``/v1/topics`` over Redis and this process's catalog index."""

    def __init__(
        self,
        redis: RedisClient,
        index: Callable[[str | None], Awaitable[CatalogIndex]],
        offload: Offload,
    ) -> None:
        self.redis = redis
        self._current = index
        self.offload = offload
        self._set = redis.register_script(lua("follow_set"))
        self._unset = redis.register_script(lua("follow_unset"))
        self._topics: tuple[CatalogIndex | None, list[TopicInfo]] = (None, [])

    async def _index(self) -> CatalogIndex:
        """This process's catalog index, rebuilt first if the catalog changed (a topic
        list or a follow right after an import sees it)."""
        version = await self.redis.get(keys.PAPERS_VERSION)
        return await self._current(None if version is None else str(version))

    async def stored(self, user_id: str) -> StoredFollows:
        return decode_follows(await self.redis.hgetall(keys.user_follows(user_id)))

    async def read(self, user_id: str) -> FollowList:
        follows = await self.stored(user_id)
        index = await self._index()
        topics = []
        ids = list(index.topic_of_id)
        for topic_id, name in follows.topics.items():
            number = resolve_topic(index, topic_id, name)
            current = None if number is None else ids[number]
            topics.append(FollowedTopic(id=topic_id, name=name, current=current))
        return FollowList(authors=follows.authors, topics=topics)

    async def follow(self, user_id: str, request: FollowRequest) -> FollowList:
        field, value, which = await self._target(request, adding=True)
        done = int(
            await self._set(
                keys=[keys.user_profile(user_id), keys.user_follows(user_id)],
                args=[field, value, FOLLOWS_CAP],
            )
        )
        if done == -1:
            raise Unauthorized("unknown or revoked token")
        if done == -2:
            raise InvalidInput(which, f"at most {FOLLOWS_CAP} follows; unfollow one first")
        await self._active(user_id)
        return await self.read(user_id)

    async def unfollow(self, user_id: str, request: FollowRequest) -> FollowList:
        field, _, _ = await self._target(request, adding=False)
        done = int(
            await self._unset(
                keys=[keys.user_profile(user_id), keys.user_follows(user_id)], args=[field]
            )
        )
        if done == -1:
            raise Unauthorized("unknown or revoked token")
        await self._active(user_id)
        return await self.read(user_id)

    async def _active(self, user_id: str) -> None:
        """A follow is the reader's activity, as an event is (``store.activity``)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            queue_active(pipe, {user_id: time.time()})
            await pipe.execute()

    async def _target(self, request: FollowRequest, adding: bool) -> tuple[str, str, str]:
        """(hash field, value kept, the request's field) of what the request names."""
        if isinstance(request.author, str) == isinstance(request.topic, str):
            raise InvalidInput("body", 'give one of "author" (a name) or "topic" (an id)')
        if isinstance(request.author, str):
            written = clean_name(request.author)
            name = author_name(written)
            if name is None:
                raise InvalidInput("author", "a name needs a letter or a digit")
            return author_field(name), written, "author"
        topic_id = str(request.topic).strip()
        if not adding:
            return TOPIC_PREFIX + topic_id, "", "topic"
        index = await self._index()
        number = index.topic_of_id.get(topic_id)
        if number is None:
            raise NotFound(f"topic: no topic {topic_id[:80]!r} (GET /v1/topics lists them)")
        return TOPIC_PREFIX + topic_id, index.topics.names[number], "topic"

    async def topics(self) -> TopicList:
        """The catalog's topics, computed once an index (off the event loop)."""
        index = await self._index()
        kept_for, listed = self._topics
        if kept_for is not index:
            listed = await self.offload(topic_catalog, index)
            self._topics = (index, listed)
        return TopicList(topics=listed)
