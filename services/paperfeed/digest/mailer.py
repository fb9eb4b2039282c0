"""Sending mail over SMTP, with retries and backoff; failures are counted in Redis.

Log lines name the error class and SMTP code only: an SMTP error's text can carry the
recipient's address, which is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage

from paperfeed.errors import Unavailable
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)


class DeliveryFailed(Unavailable):
    """The SMTP server did not take the message after every retry."""


def smtp_code(error: BaseException) -> int | None:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        # every recipient was refused: the lowest code says whether a retry could help
        codes = [code for code, _ in error.recipients.values()]
        return min(codes) if codes else None
    code = getattr(error, "smtp_code", None)
    return int(code) if isinstance(code, int) else None


class Mailer:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        attempts: int = 4,
        first_delay_s: float = 1.0,
    ) -> None:
        if not settings.smtp_host:
            raise ValueError("PAPERFEED_SMTP_HOST is not set")
        self.settings = settings
        self.redis = redis
        self.attempts = attempts
        self.first_delay_s = first_delay_s

    def _send_once(self, message: EmailMessage) -> None:
        s = self.settings
        assert s.smtp_host
        context = ssl.create_default_context()
        server: smtplib.SMTP
        if s.smtp_tls == "tls":
            server = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=30, context=context)
        else:
            server = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
        with server:
            if s.smtp_tls == "starttls":
                server.starttls(context=context)
            if s.smtp_user:
                server.login(s.smtp_user, s.smtp_password or "")
            server.send_message(message)

    async def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` or raise ``DeliveryFailed`` after ``attempts`` tries."""
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.to_thread(self._send_once, message)
                return
            except (smtplib.SMTPException, OSError) as exc:
                await self.redis.hincrby(keys.STATS, "digest_smtp_failures", 1)
                permanent = (smtp_code(exc) or 0) >= 500
                log.warning(
                    "smtp attempt failed",
                    extra={
                        "attempt": attempt,
                        "error": type(exc).__name__,
                        "smtp_code": smtp_code(exc),
                        "permanent": permanent,
                    },
                )
                if permanent or attempt == self.attempts:
                    raise DeliveryFailed(f"smtp: {type(exc).__name__}") from None
                await asyncio.sleep(self.first_delay_s * 2 ** (attempt - 1))
