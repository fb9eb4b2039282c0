"""Signed links in mails: confirm a subscription, unsubscribe in one click.

A signature binds the purpose, the user and the address: a link stops working when the
reader changes the address, and one reader's link cannot act on another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlencode

from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient


class LinkSigner:
    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.public_url = settings.public_url.rstrip("/")
        self._key = settings.secret_key.encode() if settings.secret_key else None

    async def key(self) -> bytes:
        """The configured key, else the one generated once and shared through Redis."""
        if self._key is None:
            await self.redis.set(keys.LINK_SECRET, secrets.token_hex(32), nx=True)
            self._key = str(await self.redis.get(keys.LINK_SECRET)).encode()
        return self._key

    async def sign(self, purpose: str, user_id: str, email: str) -> str:
        message = f"{purpose}\x00{user_id}\x00{email}".encode()
        return hmac.new(await self.key(), message, hashlib.sha256).hexdigest()[:40]

    async def verify(self, purpose: str, user_id: str, email: str, signature: str) -> bool:
        return hmac.compare_digest(await self.sign(purpose, user_id, email), signature)

    async def link(self, purpose: str, user_id: str, email: str) -> str:
        query = urlencode({"user": user_id, "sig": await self.sign(purpose, user_id, email)})
        return f"{self.public_url}/v1/digest/{purpose}?{query}"
