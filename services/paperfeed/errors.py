"""One error tree for the whole service; ``api.errors`` maps it to HTTP."""

from __future__ import annotations

import re

PATTERN_MEANINGS: dict[str, str] = {}
"""What a client is told a field's pattern means, by the pattern's repr (as msgspec's
message quotes it: "Expected `str` matching regex '^[0-9]{1,3}$'")."""
PAGE_NEXT = "the `next` of the previous page, as it was"
OTHER_FORM = "a string of another form (the API schema, /schema, gives it)"
_MATCHING = re.compile(r"`str` matching regex ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")


def described(pattern: str, meaning: str) -> str:
    """``pattern``, registered with what it means to a person (a 400 says that, not the
    regex: a search of spaces was told a 60-character regex)."""
    PATTERN_MEANINGS[repr(pattern)] = meaning
    return pattern


MESSAGE_CHARS = 300
"""A 400's message is cut to this many characters: msgspec's repeat what the client sent
(an unknown field's whole name), which must not come back a megabyte long."""


def readable(message: str) -> str:
    """msgspec's message with each quoted regex replaced by what it means, cut to
    ``MESSAGE_CHARS``."""
    message = _MATCHING.sub(lambda found: PATTERN_MEANINGS.get(found[1], OTHER_FORM), message)
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"


class PaperfeedError(Exception):
    """Base of every error paperfeed raises on purpose."""


class InvalidInput(PaperfeedError):
    """The client sent something wrong; ``field`` names where (``events[3].ts``)."""

    def __init__(self, field: str, message: str) -> None:
        message = readable(message)
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
