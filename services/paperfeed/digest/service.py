"""Subscribing, confirming, unsubscribing, and sending every due digest exactly once."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Literal

import msgspec

from paperfeed.digest import compose
from paperfeed.digest.links import LinkSigner
from paperfeed.digest.mailer import DeliveryFailed, Mailer
from paperfeed.digest.subscriptions import (
    DigestRequest,
    Outbox,
    Subscription,
    Subscriptions,
    is_due,
    mask_email,
    period_of,
)
from paperfeed.errors import NotOffered, Unauthorized
from paperfeed.serving.feed import FeedService
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)
CONFIRMATIONS_A_DAY = 3
CONFIRMATION_GRACE_S = 120.0
"""A run leaves a fresh subscription to the api's own confirmation mail this long."""
FEED_DEPTH = 100
"""Feed items looked at per digest: enough to fill it after removing what was sent."""


NO_DIGESTS = "this service does not send e-mail digests (no SMTP server is configured)"


class RunReport(msgspec.Struct):
    subscribers: int = 0
    due: int = 0
    sent: int = 0
    empty: int = 0
    failed: int = 0
    confirmations: int = 0


class Digests:
    def __init__(self, redis: RedisClient, settings: Settings, feeds: FeedService) -> None:
        self.redis = redis
        self.settings = settings
        self.feeds = feeds
        self.subscriptions = Subscriptions(redis)
        self.links = LinkSigner(redis, settings)
        self._mailer: Mailer | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    @property
    def mailer(self) -> Mailer:
        if self._mailer is None:
            if not self.enabled:
                raise NotOffered(NO_DIGESTS)
            self._mailer = Mailer(self.settings, self.redis)
        return self._mailer

    # --- subscribing --------------------------------------------------------------

    async def subscribe(self, user_id: str, request: DigestRequest) -> bool:
        """Store the choice; True when a confirmation mail must go out."""
        if not self.enabled:
            raise NotOffered(NO_DIGESTS)
        return await self.subscriptions.put(user_id, request)

    async def send_confirmation(self, user_id: str) -> bool:
        sub = await self.subscriptions.get(user_id)
        if sub is None or sub.confirmed:
            return False
        if not await self._may_ask(sub.email):
            log.warning("confirmation limit of the address reached", extra={"user_id": user_id})
            return False
        link = await self.links.link("confirm", user_id, sub.email)
        message = compose.confirmation_message(
            self.settings.smtp_from, sub.email, link, self.settings.public_url
        )
        await self.mailer.send(message)
        current = await self.subscriptions.get(user_id)
        if current is not None and current.email == sub.email:
            await self.subscriptions.save(
                user_id, msgspec.structs.replace(current, confirmation_sent_at=time.time())
            )
        await self.redis.hincrby(keys.STATS, "digest_confirmations", 1)
        log.info("confirmation sent", extra={"user_id": user_id})
        return True

    async def _may_ask(self, email: str) -> bool:
        """At most ``CONFIRMATIONS_A_DAY`` confirmation mails to one address a day, however
        many installs ask: nobody can use paperfeed to flood a stranger's inbox."""
        key = keys.digest_confirmations(hashlib.sha256(email.lower().encode()).hexdigest())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=86_400, nx=True)  # the day starts at the first mail
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count) <= CONFIRMATIONS_A_DAY

    async def send_confirmation_quietly(self, user_id: str) -> None:
        """After the api answered: a failure is logged, and the next run sends it."""
        try:
            await self.send_confirmation(user_id)
        except Exception as exc:
            log.warning("confirmation not sent yet", extra={"error": type(exc).__name__})

    async def confirmation_state(
        self, user_id: str, signature: str
    ) -> Literal["invalid", "pending", "confirmed"]:
        """What a confirmation link stands for now (nothing is changed)."""
        sub = await self.subscriptions.get(user_id)
        if sub is None or not await self.links.verify("confirm", user_id, sub.email, signature):
            return "invalid"
        return "confirmed" if sub.confirmed else "pending"

    async def confirm(self, user_id: str, signature: str) -> bool:
        sub = await self.subscriptions.get(user_id)
        if sub is None or not await self.links.verify("confirm", user_id, sub.email, signature):
            return False
        if not sub.confirmed:
            await self.subscriptions.save(
                user_id, msgspec.structs.replace(sub, confirmed=True, confirmed_at=time.time())
            )
            log.info("digest confirmed", extra={"user_id": user_id})
        return True

    async def unsubscribe(self, user_id: str, signature: str) -> bool:
        sub = await self.subscriptions.get(user_id)
        if sub is None:
            return True  # already gone: the link did its job
        if not await self.links.verify("unsubscribe", user_id, sub.email, signature):
            return False
        await self.subscriptions.delete(user_id)
        log.info("digest unsubscribed", extra={"user_id": user_id})
        return True

    # --- sending ------------------------------------------------------------------

    async def next_digest(self, user_id: str, sub: Subscription, now: float) -> Outbox | None:
        """The digest due now: a resend of an unfinished one, else the feed minus what
        earlier digests sent. None when nothing new is left."""
        period = period_of(sub.frequency, now)
        pending = await self.subscriptions.outbox(user_id)
        if pending is not None and pending.period == period:
            return pending
        sent = await self.subscriptions.sent_papers(user_id)
        try:
            feed = await self.feeds.feed(user_id, FEED_DEPTH, now)
        except Unauthorized:
            return None  # erased since the run listed them
        fresh = [item for item in feed.items if item.paper.id not in sent][: sub.size]
        if not fresh:
            return None
        return Outbox(
            period=period,
            message_id=compose.digest_message_id(user_id, period, self.settings.public_url),
            items=compose.items_of(fresh),
        )

    async def message(self, user_id: str, sub: Subscription, outbox: Outbox) -> EmailMessage:
        return compose.digest_message(
            sender=self.settings.smtp_from,
            to=sub.email,
            message_id=outbox.message_id,
            period=outbox.period,
            items=outbox.items,
            unsubscribe_link=await self.links.link("unsubscribe", user_id, sub.email),
        )

    async def run(
        self,
        now: float | None = None,
        dry_run: bool = False,
        show: Callable[[str], None] | None = None,
    ) -> RunReport:
        """Send every due digest (and confirmations still owed). Safe to rerun: a reader
        whose digest of this period was recorded is skipped; one whose send was cut off
        gets the same message (same Message-ID) again."""
        now = time.time() if now is None else now
        report = RunReport()
        for user_id in await self.subscriptions.subscribers():
            report.subscribers += 1
            sub = await self.subscriptions.get(user_id)
            if sub is None:
                await self.redis.srem(keys.DIGEST_SUBSCRIBERS, user_id)
                continue
            if not sub.confirmed:
                # A confirmation the api's background task could not send (SMTP down).
                asked = sub.confirmation_asked_at or 0.0
                owed = sub.confirmation_sent_at is None and now - asked > CONFIRMATION_GRACE_S
                if owed and not dry_run:
                    try:
                        report.confirmations += await self.send_confirmation(user_id)
                    except DeliveryFailed:
                        report.failed += 1
                continue
            if not is_due(sub, now, self.settings.digest_hour_utc):
                continue
            report.due += 1
            outbox = await self.next_digest(user_id, sub, now)
            if outbox is None:
                report.empty += 1
                if not dry_run:
                    empty = Outbox(period=period_of(sub.frequency, now), message_id="", items=[])
                    await self.subscriptions.record_sent(user_id, sub, empty, now)
                continue
            message = await self.message(user_id, sub, outbox)
            if dry_run:
                if show:
                    message.replace_header("To", mask_email(sub.email))  # shown, not sent
                    show(f"--- to {mask_email(sub.email)} (user {user_id})\n{message}")
                continue
            await self.subscriptions.start_sending(user_id, outbox)
            try:
                await self.mailer.send(message)
            except DeliveryFailed:
                report.failed += 1
                await self.redis.hincrby(keys.STATS, "digest_failed", 1)
                continue  # the outbox stays: the next run sends this very digest
            await self.subscriptions.record_sent(user_id, sub, outbox, time.time())
            await self.redis.hincrby(keys.STATS, "digest_sent", 1)
            report.sent += 1
            log.info("digest sent", extra={"user_id": user_id, "papers": len(outbox.items)})
        return report
