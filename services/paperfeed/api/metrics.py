"""Application metrics beside Litestar's request metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_ACCEPTED = Counter("paperfeed_events_accepted_total", "Events applied")
EVENTS_DUPLICATE = Counter("paperfeed_events_duplicate_total", "Replayed events ignored")
FEEDS_SERVED = Counter("paperfeed_feeds_total", "Personalized feeds served", ["kind"])
