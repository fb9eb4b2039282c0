"""A reader's activity, in the global keys: what makes an install a reader.

An event or a follow is activity: the reader's last activity becomes its time (the
retention erases readers inactive for ``forget_inactive_days`` by it), and they are no
longer a silent install (``Users.forget_silent`` erases installs that never did
anything after a few days). The reader's own keys are changed by their scripts; these
two global sorted sets are written beside them, in the caller's pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paperfeed.store import keys


def queue_active(pipe: Any, active: Mapping[str, float]) -> None:
    """Queue on ``pipe`` the activity of each reader of ``active`` (user id -> time).
    Only readers still registered are touched (``XX``: an erased one is not revived)."""
    if active:
        pipe.zadd(keys.USERS, dict(active), xx=True)
        pipe.zrem(keys.SILENT_INSTALLS, *active)
