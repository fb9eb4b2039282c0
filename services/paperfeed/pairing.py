"""The same reader on every browser: pairing codes link installs to one reader.

A reader asks for a code (``create_code``: short, valid ``PAIRING_CODE_TTL_S``, stored
hashed, at most ``CODES_PER_HOUR`` an hour). Another install redeems it (``link``): the
code is deleted by that one use (``GETDEL``), the install's token now stands for the
reader (one history, one feed, one library), what that install had done before joins
the reader's records, and its own reader is dissolved. Each install keeps its own token;
``unlink`` revokes a linked install's token (the extension registers afresh); erasing
the reader revokes every linked install (``Users.erase``).

A wrong, expired or used code gets the same answer (nothing says whether a code
exists), and an install may try ``TRIES_PER_HOUR`` codes an hour: with 32^8 codes alive
for five minutes, guessing one is hopeless.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import NamedTuple

import msgspec

from paperfeed.errors import Conflict, NotFound, PaperfeedError, Unauthorized
from paperfeed.events import decode_user_paper
from paperfeed.follows import FOLLOWS_CAP
from paperfeed.store import keys
from paperfeed.store.client import RedisClient, storage_failed
from paperfeed.store.scripts import lua
from paperfeed.trending import Contribution, Trending
from paperfeed.users import Users, hash_token

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""No 0/O, 1/I: codes are read on one screen and typed on another."""
CODE_LENGTH = 8
PAIRING_CODE_TTL_S = 300
CODES_PER_HOUR = 10
TRIES_PER_HOUR = 10
HOUR_MS = 3_600_000
WRONG_CODE = "no such pairing code: a typo, or it expired, or it was used"
LEAVING_HOLDS_S = 600
"""How long a reader marked as leaving (for another) refuses installs linking to them: a
link finishes in well under a second, and one that died before it was recorded must not
close the reader to links for good."""


class TooManyAttempts(PaperfeedError):
    """Too many pairing codes asked for or tried this hour."""


class PairingCode(msgspec.Struct):
    code: str
    """Type it in the other browser's extension (options page), within ``expires_in``."""
    expires_in: int
    """Seconds the code stays valid."""


class PendingLink(NamedTuple):
    """A link under way, as ``pf:links`` records it until it is done."""

    token_hash: str
    old: str
    """The install's reader before the link."""
    owner: str
    """The code's reader."""
    moving: bool
    """A linked install moving alone (its reader stays); else its reader is absorbed."""

    @property
    def member(self) -> str:
        return f"{self.token_hash} {self.old} {self.owner} {'moving' if self.moving else 'leaving'}"

    @classmethod
    def parse(cls, member: str) -> PendingLink:
        token_hash, old, owner, how = member.split(" ")
        return cls(token_hash, old, owner, how == "moving")


class Linked(msgspec.Struct):
    user_id: str
    """The reader this install now belongs to."""
    papers_merged: int
    """Papers this install had a record of that joined the reader's."""


def normal_code(code: str) -> str:
    """What was typed: case, spaces and dashes do not matter."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def hash_code(code: str) -> str:
    return hashlib.sha256(f"pairing:{normal_code(code)}".encode()).hexdigest()


class Pairing:
    def __init__(self, redis: RedisClient, users: Users, trending: Trending) -> None:
        self.redis = redis
        self.users = users
        self.trending = trending
        self._redeem = redis.register_script(lua("pairing_redeem"))
        self._leave = redis.register_script(lua("pairing_leave"))
        self._join = redis.register_script(lua("pairing_join"))
        self._absorb_script = redis.register_script(lua("pairing_absorb"))
        self._follow = redis.register_script(lua("follow_set"))
        self._count = redis.register_script(lua("rate_count"))

    async def _spend(self, key: str, limit: int, what: str) -> None:
        """One more of ``what`` this hour (the request budgets' atomic counter script)."""
        count, _ = await self._count(keys=[key], args=[HOUR_MS])
        if int(count) > limit:
            raise TooManyAttempts(f"at most {limit} {what} an hour")

    async def create_code(self, user_id: str) -> PairingCode:
        await self._spend(keys.user_pairing(user_id), CODES_PER_HOUR, "pairing codes")
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        await self.redis.set(keys.pairing_code(hash_code(code)), user_id, ex=PAIRING_CODE_TTL_S)
        pretty = f"{code[:4]}-{code[4:]}"
        return PairingCode(code=pretty, expires_in=PAIRING_CODE_TTL_S)

    async def link(self, token: str, user_id: str, code: str, now: float | None = None) -> Linked:
        """Link the install of ``token`` (now reader ``user_id``) to the code's reader.

        A sequence that a retry or the worker finishes (``finish_links``), each step
        guarded on its reader's slot: the install's reader is checked and marked as
        leaving in one script (no install can link to it meanwhile), then the code is
        redeemed, the link recorded (``pf:links``), the code's reader joined (only while
        they exist), the token moved, and what the install did absorbed once.
        """
        now = time.time() if now is None else now
        token_hash = hash_token(token)
        await self._spend(keys.pairing_tries(token_hash), TRIES_PER_HOUR, "pairing codes tried")
        if len(normal_code(code)) != CODE_LENGTH:
            raise NotFound(WRONG_CODE)
        how = await self._leave(
            keys=[keys.user_profile(user_id), keys.user_installs(user_id)],
            args=[token_hash, f"{now:.3f}"],
        )
        if how == "gone":
            raise Unauthorized("unknown or revoked token")
        if how == "conflict":
            raise Conflict(
                "other browsers are linked to this one: enter their reader's codes the other "
                "way round, or unlink them first"
            )
        try:
            owner = await self._redeem(keys=[keys.pairing_code(hash_code(code))], args=[user_id])
            if not owner or owner == "=":
                await self._stay(user_id, how)
                if owner == "=":
                    raise Conflict("this code was made by this browser: enter it in another")
                raise NotFound(WRONG_CODE)
            link = PendingLink(token_hash, str(user_id), str(owner), how == "moving")
            await self.redis.zadd(keys.LINKS, {link.member: now})
        except Exception as exc:
            if not storage_failed(exc):
                raise
            # Not recorded: the install stays (its "leaving" lapses by itself if even
            # this fails, LEAVING_HOLDS_S).
            try:
                await self._stay(user_id, how)
            except Exception as undo_failed:
                if not storage_failed(undo_failed):
                    raise
            raise
        merged = await self._finish(link, now)
        if merged is None:
            raise NotFound(WRONG_CODE)  # the code's reader was erased since
        return Linked(user_id=link.owner, papers_merged=merged)

    async def _stay(self, user_id: str, how: str) -> None:
        """The install stays with its reader (the code was wrong, or its reader gone)."""
        if how == "leaving":
            await self.redis.hdel(keys.user_profile(user_id), "leaving")

    async def _finish(self, link: PendingLink, now: float) -> int | None:
        """The rest of a link, from any point it stopped at (every step idempotent);
        returns the papers merged, or None when the code's reader is gone (the install
        then stays with its own reader)."""
        joined = await self._join(
            keys=[keys.user_profile(link.owner), keys.user_installs(link.owner)],
            args=[link.token_hash, f"{now:.3f}", LEAVING_HOLDS_S],
        )
        if not int(joined):
            await self._stay(link.old, "moving" if link.moving else "leaving")
            await self.redis.zrem(keys.LINKS, link.member)
            return None
        # The token stands for the reader from now on (this install's events are
        # theirs); the reader knows the token for erasure.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.token(link.token_hash), link.owner, xx=True)
            if link.moving:
                pipe.srem(keys.user_installs(link.old), link.token_hash)
            moved, *_ = await pipe.execute()
        self.users.forget_cached(link.token_hash)
        merged: int | None = 0
        if not link.moving:
            merged = await self._absorb(link.old, link.owner, now) if moved else None
            if merged is None:
                # The code's reader was erased after the install joined them, and with
                # them every install linked to them, this one too: what it did goes.
                await self.users.erase(link.old, now)
        await self.redis.zrem(keys.LINKS, link.member)
        return merged

    async def finish_links(self, older_than_s: float = 60.0, now: float | None = None) -> int:
        """Finish the links started more than ``older_than_s`` ago and left unfinished
        (a Redis failure part-way, a process that died); returns how many."""
        now = time.time() if now is None else now
        pending = await self.redis.zrangebyscore(keys.LINKS, "-inf", now - older_than_s)
        for member in pending:
            await self._finish(PendingLink.parse(str(member)), now)
        return len(pending)

    async def _absorb(self, old: str, reader: str, now: float) -> int | None:
        """What install ``old`` did joins ``reader``, once: its records of papers the
        reader has none of; for papers both have, the reader's record stays and the
        install's trending weight is taken back. Then ``old``'s keys go (its token does
        not). None when the reader is gone."""
        # Nothing more is written to ``old`` (a request of a process that remembers the
        # token as theirs goes to ``reader``): what is read here is all there is.
        await self.users.refuse_writes(old, now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.user_papers(old))
            pipe.hgetall(keys.user_page_titles(old))
            pipe.hget(keys.user_profile(old), "events")
            mine, titles, events = await pipe.execute()
        args: list[str | int] = [old, int(events or 0), len(mine)]
        for pid, raw in mine.items():
            args.extend((pid, raw))
        for pid, title in titles.items():
            args.extend((pid, title))
        result = await self._absorb_script(
            keys=[
                keys.user_profile(reader),
                keys.user_papers(reader),
                keys.user_page_titles(reader),
                keys.user_feed(reader),
                keys.user_vector(reader),
            ],
            args=args,
        )
        if int(result[0]) < 0:
            return None
        joined, doubled = int(result[0]), [str(pid) for pid in result[1:] if str(pid) in mine]
        # A paper merged since holds its weight under the id it has now.
        now_ids = await self.users.catalog.identity.resolve(doubled)
        taken_back = [
            Contribution(c.paper_id, -c.weight, c.at)
            for pid, now_id in zip(doubled, now_ids, strict=True)
            for c in decode_user_paper(mine[pid]).trending_contributions(now_id)
        ]
        await self.trending.add(taken_back, now, once=f"link:{old}")
        await self.users.catalog.reports.move_requests(old, reader)
        await self._move_follows(old, reader)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.user_profile(old), "token_hash")
            pipe.delete(*keys.user_keys(old))
            pipe.zrem(keys.USERS, old)
            pipe.zrem(keys.SILENT_INSTALLS, old)
            pipe.srem(keys.DIGEST_SUBSCRIBERS, old)
            await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.user_profile(reader), f"absorbed:{old}")
            self.trending.queue_forget_once(pipe, f"link:{old}")
            await pipe.execute()
        return joined

    async def _move_follows(self, old: str, reader: str) -> None:
        """The install's follows become the reader's (``follow_set.lua`` each: within the
        reader's cap, their own kept first; each counted, so the next feed ranks with
        them). Can run again: a follow the reader has already changes nothing."""
        for field, value in (await self.redis.hgetall(keys.user_follows(old))).items():
            done = await self._follow(
                keys=[keys.user_profile(reader), keys.user_follows(reader)],
                args=[field, value, FOLLOWS_CAP],
            )
            if int(done) < 0:  # the reader is gone, or at the cap
                break

    async def unlink(self, token: str, user_id: str) -> None:
        """Revoke a linked install's token (the reader's first install cannot be
        unlinked: ``DELETE /v1/me`` erases the reader)."""
        token_hash = hash_token(token)
        removed = await self.redis.srem(keys.user_installs(user_id), token_hash)
        if not removed:
            raise Conflict("this install is the reader's own; DELETE /v1/me erases the reader")
        await self.redis.delete(keys.token(token_hash))
        self.users.forget_cached(token_hash)
