"""Subscriptions in Redis: the address (the only personal data paperfeed holds), the
frequency and size, whether it was confirmed, and what was sent."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from paperfeed.digest.compose import DigestItem
from paperfeed.errors import described
from paperfeed.store import keys
from paperfeed.store.client import RedisClient
from paperfeed.store.scripts import lua

Frequency = Literal["daily", "weekly"]
# Explicit ranges, not \s: the regex dialects of Python and JSON Schema disagree on it.
_ATOM = r'[^@\x00-\x20\x7f<>()\[\],;:"]+'
EMAIL_PATTERN = described(rf"^{_ATOM}@{_ATOM}\.{_ATOM}$", "an e-mail address (name@example.org)")
Email = Annotated[str, Meta(min_length=6, max_length=254, pattern=EMAIL_PATTERN)]
SENT_KEPT = 2_000
RESEND_CONFIRMATION_S = 3_600


class DigestRequest(msgspec.Struct, forbid_unknown_fields=True):
    """What a reader asks for (``PUT /v1/me/digest``)."""

    email: Email
    frequency: Frequency = "daily"
    size: Annotated[int, Meta(ge=1, le=50)] = 10
    """Papers a digest holds at most."""


class Subscription(msgspec.Struct, kw_only=True, omit_defaults=True):
    email: str
    frequency: Frequency
    size: int
    created_at: float
    confirmed: bool = False
    confirmed_at: float | None = None
    confirmation_asked_at: float | None = None
    """When a confirmation mail was last asked for (``PUT``): resends are spaced by this."""
    confirmation_sent_at: float | None = None
    last_period: str | None = None
    """The period (``2026-11-29`` or ``2026-W48``) of the last digest done."""
    last_sent_at: float | None = None


class DigestStatus(msgspec.Struct):
    """What the extension shows: the address, the choice and the confirmation state."""

    email: str
    frequency: Frequency
    size: int
    confirmed: bool
    last_sent_at: float | None


class Outbox(msgspec.Struct):
    """A digest being sent: written before SMTP, deleted after (crash recovery)."""

    period: str
    message_id: str
    items: list[DigestItem]

    @property
    def papers(self) -> list[str]:
        return [item.paper_id for item in self.items]


def normalize_email(email: str) -> str:
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def mask_email(email: str) -> str:
    """``a***@example.org``: enough for an operator to tell two readers apart."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}"


def period_of(frequency: Frequency, now: float) -> str:
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if frequency == "daily":
        return day.isoformat()
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def is_due(sub: Subscription, now: float, hour_utc: int) -> bool:
    """Confirmed, and nothing sent for this period yet (from ``hour_utc`` on; a reader
    who never received a digest is due at once)."""
    if not sub.confirmed:
        return False
    if sub.last_period is None:
        return True
    if sub.last_period == period_of(sub.frequency, now):
        return False
    return dt.datetime.fromtimestamp(now, dt.UTC).hour >= hour_utc


_decode = msgspec.json.Decoder(Subscription).decode
_decode_outbox = msgspec.json.Decoder(Outbox).decode


class Subscriptions:
    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis
        self._set = redis.register_script(lua("reader_set"))
        self._sent = redis.register_script(lua("digest_sent"))

    async def get(self, user_id: str) -> Subscription | None:
        raw = await self.redis.get(keys.user_digest(user_id))
        return _decode(raw) if raw else None

    async def put(self, user_id: str, request: DigestRequest, now: float | None = None) -> bool:
        """Store the reader's choice; True when the address needs (re)confirming."""
        now = time.time() if now is None else now
        email = normalize_email(request.email)
        old = await self.get(user_id)
        if old is not None and old.email == email:
            sub = msgspec.structs.replace(old, frequency=request.frequency, size=request.size)
        else:
            sub = Subscription(
                email=email, frequency=request.frequency, size=request.size, created_at=now
            )
        # Asking again for the same address resends the link, at most once an hour.
        asked = sub.confirmation_asked_at
        resend = not sub.confirmed and (asked is None or now - asked > RESEND_CONFIRMATION_S)
        if resend:
            sub = msgspec.structs.replace(sub, confirmation_asked_at=now)
        if not await self.save(user_id, sub):
            return False  # erased meanwhile
        await self.redis.sadd(keys.DIGEST_SUBSCRIBERS, user_id)
        return resend

    async def save(self, user_id: str, sub: Subscription) -> bool:
        """Store the subscription while the reader exists; False when they are gone."""
        return await self._set_if_reader(
            user_id, keys.user_digest(user_id), msgspec.json.encode(sub)
        )

    async def _set_if_reader(self, user_id: str, key: str, value: bytes) -> bool:
        written = await self._set(keys=[keys.user_profile(user_id), key], args=[value])
        return bool(written)

    async def delete(self, user_id: str) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(
                keys.user_digest(user_id),
                keys.user_digest_sent(user_id),
                keys.user_digest_outbox(user_id),
            )
            pipe.srem(keys.DIGEST_SUBSCRIBERS, user_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def sent_papers(self, user_id: str) -> set[str]:
        return {str(p) for p in await self.redis.zrange(keys.user_digest_sent(user_id), 0, -1)}

    async def outbox(self, user_id: str) -> Outbox | None:
        raw = await self.redis.get(keys.user_digest_outbox(user_id))
        return _decode_outbox(raw) if raw else None

    async def start_sending(self, user_id: str, outbox: Outbox) -> None:
        await self._set_if_reader(
            user_id, keys.user_digest_outbox(user_id), msgspec.json.encode(outbox)
        )

    async def record_sent(
        self, user_id: str, sub: Subscription, outbox: Outbox, now: float
    ) -> None:
        """After SMTP accepted the digest: its papers, the period done, the outbox gone."""
        done = msgspec.structs.replace(sub, last_period=outbox.period, last_sent_at=now)
        recorded = await self._sent(
            keys=[
                keys.user_profile(user_id),
                keys.user_digest(user_id),
                keys.user_digest_sent(user_id),
                keys.user_digest_outbox(user_id),
            ],
            args=[msgspec.json.encode(done), now, SENT_KEPT, *outbox.papers],
        )
        if not recorded:
            return  # erased while the digest was being sent
        # A reader of digests is active, even without events (retention counts from here).
        await self.redis.zadd(keys.USERS, {user_id: now}, xx=True)

    async def subscribers(self) -> list[str]:
        return sorted(str(u) for u in await self.redis.smembers(keys.DIGEST_SUBSCRIBERS))


def status_of(sub: Subscription) -> DigestStatus:
    return DigestStatus(
        email=sub.email,
        frequency=sub.frequency,
        size=sub.size,
        confirmed=sub.confirmed,
        last_sent_at=sub.last_sent_at,
    )
