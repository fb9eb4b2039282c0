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

import msgspec

from paperfeed.errors import Conflict, NotFound, PaperfeedError
from paperfeed.events import decode_user_paper
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
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


class TooManyAttempts(PaperfeedError):
    """Too many pairing codes asked for or tried this hour."""


class PairingCode(msgspec.Struct):
    code: str
    """Type it in the other browser's extension (options page), within ``expires_in``."""
    expires_in: int
    """Seconds the code stays valid."""


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
        """Link the install of ``token`` (now reader ``user_id``) to the code's reader."""
        now = time.time() if now is None else now
        token_hash = hash_token(token)
        await self._spend(keys.pairing_tries(token_hash), TRIES_PER_HOUR, "pairing codes tried")
        # An install already linked to its reader only moves (its reader keeps its other
        # browsers); a reader's first install whose reader has others linked would leave
        # them behind: refused before the code is used.
        linked_here = bool(await self.redis.sismember(keys.user_installs(user_id), token_hash))
        if not linked_here and await self.redis.scard(keys.user_installs(user_id)):
            raise Conflict(
                "other browsers are linked to this one: enter their reader's codes the other "
                "way round, or unlink them first"
            )
        owner = None
        if len(normal_code(code)) == CODE_LENGTH:
            owner = await self._redeem(keys=[keys.pairing_code(hash_code(code))], args=[user_id])
        if not owner:
            raise NotFound(WRONG_CODE)
        owner = str(owner)
        if owner == "=":
            raise Conflict("this code was made by this browser: enter it in another")
        if not await self.redis.exists(keys.user_profile(owner)):
            raise NotFound(WRONG_CODE)  # the reader was erased since
        # The token stands for the reader first (from now on this install's events are
        # the reader's), then what it did before joins them; the reader knows the token
        # for erasure.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.token(token_hash), owner)
            pipe.sadd(keys.user_installs(owner), token_hash)
            if linked_here:
                pipe.srem(keys.user_installs(user_id), token_hash)
            await pipe.execute()
        self.users.forget_cached(token_hash)
        if linked_here:
            return Linked(user_id=owner, papers_merged=0)
        merged = await self._absorb(user_id, owner, now)
        return Linked(user_id=owner, papers_merged=merged)

    async def _absorb(self, old: str, reader: str, now: float) -> int:
        """What install ``old`` did joins ``reader``: its records of papers the reader has
        none of; for papers both have, the reader's record stays and the install's
        trending weight is taken back. Then ``old``'s keys go (its token does not)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.user_papers(old))
            pipe.hgetall(keys.user_page_titles(old))
            pipe.hget(keys.user_profile(old), "events")
            mine, titles, events = await pipe.execute()
        theirs = set(await self.redis.hkeys(keys.user_papers(reader))) if mine else set()
        joining = {pid: raw for pid, raw in mine.items() if pid not in theirs}
        doubled = [pid for pid in mine if pid in theirs]
        joining_titles = {pid: title for pid, title in titles.items() if pid in joining}
        async with self.redis.pipeline(transaction=False) as pipe:
            if joining:
                pipe.hset(keys.user_papers(reader), mapping=joining)
            if joining_titles:
                pipe.hset(keys.user_page_titles(reader), mapping=joining_titles)
            if events:
                pipe.hincrby(keys.user_profile(reader), "events", int(events))
            pipe.delete(keys.user_feed(reader), keys.user_vector(reader))  # ranked again
            await pipe.execute()
        taken_back = [
            Contribution(c.paper_id, -c.weight, c.at)
            for pid in doubled
            for c in decode_user_paper(mine[pid]).trending_contributions(pid)
        ]
        await self.trending.add(taken_back, now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.user_profile(old), "token_hash")
            pipe.delete(*keys.user_keys(old))
            pipe.zrem(keys.USERS, old)
            pipe.zrem(keys.SILENT_INSTALLS, old)
            pipe.srem(keys.DIGEST_SUBSCRIBERS, old)
            await pipe.execute()
        return len(joining)

    async def unlink(self, token: str, user_id: str) -> None:
        """Revoke a linked install's token (the reader's first install cannot be
        unlinked: ``DELETE /v1/me`` erases the reader)."""
        token_hash = hash_token(token)
        removed = await self.redis.srem(keys.user_installs(user_id), token_hash)
        if not removed:
            raise Conflict("this install is the reader's own; DELETE /v1/me erases the reader")
        await self.redis.delete(keys.token(token_hash))
        self.users.forget_cached(token_hash)
