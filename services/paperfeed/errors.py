"""One error tree for the whole service; ``api.errors`` maps it to HTTP."""

from __future__ import annotations


class PaperfeedError(Exception):
    """Base of every error paperfeed raises on purpose."""


class InvalidInput(PaperfeedError):
    """The client sent something wrong; ``field`` names where (``events[3].ts``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ClientDisconnected(InvalidInput):
    """The client went away before its request's body was complete: a 400 nobody reads
    (not a server error), logged in one line."""

    def __init__(self) -> None:
        super().__init__("body", "the client went away before sending all of it")


class NotFound(PaperfeedError):
    """The thing asked for does not exist."""


class Conflict(PaperfeedError):
    """The request does not fit the state it meets (unlinking a reader's first install)."""


class Unauthorized(PaperfeedError):
    """No valid bearer token."""


class Forbidden(PaperfeedError):
    """A valid caller that may not do this (admin endpoints without the admin token)."""


class Unavailable(PaperfeedError):
    """A dependency (Redis, a model) cannot serve now; retrying later may work."""


class NotOffered(Forbidden):
    """A feature this deployment does not offer (e-mail digests without SMTP): a 403
    that says so; ``GET /v1/meta`` tells clients beforehand."""


class RequestsExhausted(PaperfeedError):
    """The reader spent their reports a day (``reports_per_day``: papers their pages
    reported and papers they asked the catalog for): a 429 until the next day (UTC)."""

    def __init__(self, per_day: int, now: float) -> None:
        super().__init__(
            f"paper_id: at most {per_day} papers a day reported or asked for; "
            "ask again tomorrow (UTC)"
        )
        self.retry_after_s = max(1, int(86_400 - now % 86_400))
