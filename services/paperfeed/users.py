"""Anonymous installs: registration, bearer tokens, export and erasure.

An install is a random id and a random token; nothing personal is asked or kept. Only
the SHA-256 of the token is stored, so a copy of the database cannot act as a user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any

import msgspec

from paperfeed.catalog.repository import Catalog
from paperfeed.events import SHARED, LoggedEvent, UserPaper, decode_user_paper, parse_log
from paperfeed.follows import StoredFollows, decode_follows, no_follows
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.trending import Contribution, Trending


class Install(msgspec.Struct):
    user_id: str
    token: str


class PaperRecord(msgspec.Struct):
    """What the reader did with one paper, as exported (storage keeps it compact)."""

    upvoted: bool
    saved: bool
    dismissed: bool
    shared: bool
    views: int
    clicks: int
    impressions: int
    """Times the paper was shown to the reader in a feed or list."""
    dwell_ms: float
    """Reading time reported by paper pages, in milliseconds."""
    confidence: float
    """How much the recommender counts this paper for the reader (-1: dismissed)."""
    last_event_at: float
    first_viewed_at: float | None
    first_clicked_at: float | None
    upvoted_at: float | None
    saved_at: float | None
    shared_at: float | None
    liked_received_at: float | None = None
    """When the service received the event that made the reader like the paper (the
    times above are the ones the client gave); null for a paper not liked."""

    @classmethod
    def of(cls, record: UserPaper) -> PaperRecord:
        return cls(
            upvoted=record.upvoted,
            saved=record.saved,
            dismissed=record.dismissed,
            shared=bool(record.f & SHARED),
            views=record.v,
            clicks=record.c,
            impressions=record.i,
            dwell_ms=record.dw,
            confidence=record.w,
            last_event_at=record.t,
            first_viewed_at=record.vt,
            first_clicked_at=record.ct,
            upvoted_at=record.ut,
            saved_at=record.st,
            shared_at=record.sh,
            liked_received_at=record.rt,
        )


class UserExport(msgspec.Struct):
    user_id: str
    created_at: float
    last_event_at: float | None
    events_total: int
    papers: dict[str, PaperRecord]
    """What the user did with each paper, by paper id."""
    events: list[LoggedEvent]
    """The accepted events kept, newest first (the newest ``event_log_bytes`` of them;
    ``papers`` holds what they added up to)."""
    vector: dict[str, Any] | None
    """The user's factor vector, if one was computed."""
    page_titles: dict[str, str] = msgspec.field(default_factory=dict)
    """Titles the reader's pages showed for papers the catalog lacked, by paper id."""
    digest: dict[str, Any] | None = None
    """The e-mail digest subscription (address, frequency, confirmation), if any."""
    feed: dict[str, Any] | None = None
    """The caller's feed as kept for them (``papers``: ids, ``scores``, ``reasons``)."""
    requested: dict[str, float] = msgspec.field(default_factory=dict)
    """The arXiv ids the caller asked the catalog for (``POST /v1/catalog/requests``)
    in the last 30 days, with when."""
    follows: StoredFollows = msgspec.field(default_factory=no_follows)
    """The authors (as the caller wrote them) and topics (id -> name) they follow."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


MARK_ERASING = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'erasing', ARGV[1]) end"
)
"""The reader's profile says they are being erased (never recreating a profile)."""

TOKEN_CACHE_S = 30.0
TOKEN_CACHE_SIZE = 100_000

TOKEN_PREFIX = "pf_"
TOKEN_SEPARATOR = "."
"""An install's token is ``pf_<reader id>.<secret>``: the reader's id in the clear, so
that the script serving a feed or an event batch finds the reader's keys without a
lookup first, and checks there that the token's hash is one of the reader's installs
(``reader_budget.lua``'s ``installed``). Tokens made before (``pf_<secret>``, no
separator: token_urlsafe has none) are looked up as before."""
_READER_ID = re.compile(r"[0-9a-z]{8,40}")
"""What a reader id in a token may be (``register`` makes 24 hex digits): nothing that
would change the keys it names (no hash tag braces, no separators)."""


def claimed_reader(token: str) -> str | None:
    """The reader id a token names (``TOKEN_PREFIX``), unchecked; None for a token of the
    earlier kind or anything else. Only a script that checks the token's hash against
    the reader's installs may act on it."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    user_id, separator, secret = token[len(TOKEN_PREFIX) :].partition(TOKEN_SEPARATOR)
    if not separator or not secret or not _READER_ID.fullmatch(user_id):
        return None
    return user_id


class Users:
    def __init__(self, redis: RedisClient, catalog: Catalog, trending: Trending) -> None:
        self.redis = redis
        self.catalog = catalog
        self.trending = trending
        # token hash -> (valid until, user id): most requests of a reader come in bursts
        # (popup, badge, list page); a token erased in another process is refused by
        # every write (the reader's profile is gone) and by reads after TOKEN_CACHE_S.
        self._tokens: dict[str, tuple[float, str]] = {}
        self._mark_erasing = redis.register_script(MARK_ERASING)

    async def register(self, now: float | None = None) -> Install:
        now = time.time() if now is None else now
        user_id = secrets.token_hex(12)
        token = f"{TOKEN_PREFIX}{user_id}{TOKEN_SEPARATOR}{secrets.token_urlsafe(32)}"
        token_hash = hash_token(token)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                keys.user_profile(user_id),
                mapping={"created_at": f"{now:.3f}", "token_hash": token_hash, "events": 0},
            )
            pipe.set(keys.token(token_hash), user_id)
            pipe.zadd(keys.USERS, {user_id: now})
            pipe.zadd(keys.SILENT_INSTALLS, {user_id: now})  # until their first event
            pipe.hincrby(keys.STATS, "installs", 1)
            await pipe.execute()
        return Install(user_id=user_id, token=token)

    async def authenticate(self, token: str, cached: bool = True) -> str | None:
        """The user id a bearer token belongs to, or None; ``cached``: as this process
        saw it up to ``TOKEN_CACHE_S`` ago (an erasure elsewhere shows after that)."""
        if not token or len(token) > 200:
            return None
        token_hash = hash_token(token)
        known = self.remembered(token_hash) if cached else None
        if known is not None:
            return known
        user_id = await self.redis.get(keys.token(token_hash))
        if not user_id:
            return None
        if len(self._tokens) >= TOKEN_CACHE_SIZE:
            self._tokens.clear()
        self._tokens[token_hash] = (time.monotonic() + TOKEN_CACHE_S, str(user_id))
        return str(user_id)

    def remembered(self, token_hash: str) -> str | None:
        """Whom this process saw the token of ``token_hash`` belong to less than
        ``TOKEN_CACHE_S`` ago, or None: no round trip."""
        known = self._tokens.get(token_hash)
        return known[1] if known is not None and known[0] > time.monotonic() else None

    def forget_cached(self, token_hash: str) -> None:
        """This process forgets whom a token belonged to (it was revoked or relinked)."""
        self._tokens.pop(token_hash, None)

    async def papers(self, user_id: str) -> dict[str, UserPaper]:
        raw = await self.redis.hgetall(keys.user_papers(user_id))
        return {str(pid): decode_user_paper(value) for pid, value in raw.items()}

    async def last_event_at(self, user_id: str) -> float | None:
        value = await self.redis.hget(keys.user_profile(user_id), "last_event_at")
        return float(value) if value else None

    async def export(self, user_id: str) -> UserExport:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.user_profile(user_id))
            pipe.hgetall(keys.user_papers(user_id))
            pipe.get(keys.user_events(user_id))
            pipe.lrange(keys.legacy_user_log(user_id), 0, -1)
            pipe.hgetall(keys.user_page_titles(user_id))
            pipe.get(keys.user_vector(user_id))
            pipe.get(keys.user_digest(user_id))
            pipe.get(keys.user_feed(user_id))
            pipe.zrange(keys.user_requests(user_id), 0, -1, withscores=True)
            pipe.hgetall(keys.user_follows(user_id))
            answers = await pipe.execute()
        (profile, papers, log, legacy_log, titles, vector, digest, feed, requested, follows) = (
            answers
        )
        return UserExport(
            user_id=user_id,
            created_at=float(profile.get("created_at", 0)),
            last_event_at=float(profile["last_event_at"]) if "last_event_at" in profile else None,
            events_total=int(profile.get("events", 0)),
            papers={pid: PaperRecord.of(decode_user_paper(v)) for pid, v in papers.items()},
            events=parse_log(log) + [_legacy_event(line) for line in legacy_log],
            page_titles=dict(titles),
            vector=msgspec.json.decode(vector) if vector else None,
            digest=msgspec.json.decode(digest) if digest else None,
            feed=_feed_export(feed),
            requested={str(pid): float(at) for pid, at in requested},
            follows=decode_follows(follows),
        )

    async def erase(self, user_id: str, now: float | None = None) -> None:
        """Forget the user everywhere: their keys, tokens, trending weight, reports.

        An erasure always finishes. It is recorded first (``pf:erasures``) and the
        reader marked as being erased (every write of theirs is refused from then on);
        each step can run again without harm (the trending weight is taken back once,
        whatever retries it); the tokens go last, so a retry with the same token (a 503
        answered, the client asks again) finishes the job, and the worker's ``erasures``
        job finishes any erasure left behind (``finish_erasures``).
        """
        now = time.time() if now is None else now
        await self.redis.zadd(keys.ERASURES, {user_id: now}, nx=True)
        await self.refuse_writes(user_id, now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.user_profile(user_id), "token_hash")
            pipe.smembers(keys.user_installs(user_id))
            pipe.hgetall(keys.user_papers(user_id))
            pipe.zrange(keys.user_requests(user_id), 0, -1)
            token_hash, linked, raw_records, requested = await pipe.execute()
        records = {str(pid): decode_user_paper(raw) for pid, raw in raw_records.items()}
        # A paper merged since the reader met it holds its weight under its new id.
        resolved = await self.catalog.identity.resolve(list(records))
        contributions = [
            Contribution(c.paper_id, -c.weight, c.at)
            for new_id, record in zip(resolved, records.values(), strict=True)
            for c in record.trending_contributions(new_id)
        ]
        await self.trending.add(contributions, now, once=f"erase:{user_id}")
        # Out of the reporters of the papers they met and the requesters of those they
        # asked for (a paper nobody else asked for waits for reporters again).
        await self.catalog.reports.forget_reporter(user_id, [*records, *map(str, requested)])
        kept = {keys.user_profile(user_id), keys.user_installs(user_id)}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*[k for k in keys.user_keys(user_id) if k not in kept])
            pipe.zrem(keys.USERS, user_id)
            pipe.zrem(keys.SILENT_INSTALLS, user_id)
            pipe.srem(keys.DIGEST_SUBSCRIBERS, user_id)
            pipe.zadd(keys.ERASED, {user_id: now})  # for the trainer's cache
            await pipe.execute()
        # The tokens last: the linked installs', then the reader's own.
        tokens = [str(h) for h in linked] + [str(token_hash)] * bool(token_hash)
        for hashed in tokens:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.token(hashed))
                pipe.delete(keys.install_rate_limit(hashed))  # another slot
                await pipe.execute()
            self.forget_cached(hashed)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(keys.user_profile(user_id), keys.user_installs(user_id))
            pipe.zrem(keys.ERASURES, user_id)
            await pipe.execute()
        # Done: nothing runs this erasure again, its markers go too.
        async with self.redis.pipeline(transaction=False) as pipe:
            self.trending.queue_forget_once(pipe, f"erase:{user_id}")
            await pipe.execute()

    async def refuse_writes(self, user_id: str, now: float) -> None:
        """From now on every write of the reader's is refused (an erasure, or the reader
        being absorbed into another: a request remembered for the old reader is then
        sent to the new one, ``relinked_reader``)."""
        await self._mark_erasing(keys=[keys.user_profile(user_id)], args=[f"{now:.3f}"])

    async def finish_erasures(self, older_than_s: float = 60.0, now: float | None = None) -> int:
        """Finish the erasures asked for more than ``older_than_s`` ago and left
        unfinished (a Redis failure part-way, a process that died); returns how many."""
        now = time.time() if now is None else now
        pending = await self.redis.zrangebyscore(keys.ERASURES, "-inf", now - older_than_s)
        for user_id in pending:
            await self.erase(str(user_id), now)
        return len(pending)

    async def count_inactive(self, days: float, now: float | None = None) -> int:
        """Installs whose last activity (registration, event, digest) is ``days`` old."""
        cutoff = (time.time() if now is None else now) - days * 86_400
        return int(await self.redis.zcount(keys.USERS, "-inf", cutoff))

    async def forget_inactive(self, days: float, now: float | None = None) -> int:
        """Erase every install inactive for ``days``; returns how many."""
        now = time.time() if now is None else now
        cutoff = now - days * 86_400
        forgotten = 0
        # Erasing removes an install from pf:users, so each round reads the next ones.
        while batch := await self.redis.zrangebyscore(keys.USERS, "-inf", cutoff, 0, 1_000):
            for user_id in batch:
                await self.erase(str(user_id), now)
            forgotten += len(batch)
        return forgotten

    async def forget_silent(self, days: float, now: float | None = None) -> int:
        """Erase the installs that never sent an event (nor subscribed to a digest) in
        the ``days`` since they were created; returns how many."""
        now = time.time() if now is None else now
        cutoff = now - days * 86_400
        forgotten = 0
        while batch := await self.redis.zrangebyscore(
            keys.SILENT_INSTALLS, "-inf", cutoff, 0, 1_000
        ):
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in batch:
                    pipe.hget(keys.user_profile(str(user_id)), "events")
                    pipe.exists(keys.user_digest(str(user_id)))
                replies = await pipe.execute()
            for n, user_id in enumerate(batch):
                events, digest = replies[2 * n], replies[2 * n + 1]
                if int(events or 0) == 0 and not digest:
                    await self.erase(str(user_id), now)
                    forgotten += 1
                else:
                    await self.redis.zrem(keys.SILENT_INSTALLS, str(user_id))
        return forgotten


def _legacy_event(line: str) -> LoggedEvent:
    """An event of the log's earlier layout (a JSON object a line), not converted yet."""
    raw = msgspec.json.decode(line)
    return LoggedEvent(
        type=str(raw.get("type")),
        paper_id=str(raw.get("paper_id")),
        ts=float(raw.get("ts", 0)),
        dwell_ms=int(raw.get("dwell_ms", 0)),
        source=raw.get("source"),
    )


def _feed_export(raw: str | None) -> dict[str, Any] | None:
    """The cached feed (an array: stamp, model, ids, scores, reasons, depth) with names."""
    if not raw:
        return None
    _stamp, model, ids, scores, reasons, *_ = msgspec.json.decode(raw)
    return {"model_version": model, "papers": ids, "scores": scores, "reasons": reasons}
