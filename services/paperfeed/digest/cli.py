"""``paperfeed digest``: send every due digest now (``--dry-run``: print them)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable

import msgspec

from paperfeed.core import Core
from paperfeed.digest.service import RunReport
from paperfeed.runtime import redis_for
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.lease import Lease

log = logging.getLogger("paperfeed.digest")


class DigestsBusy(RuntimeError):
    """Another process holds the digest lock."""


async def run_digests(settings: Settings, dry_run: bool = False) -> RunReport:
    """One run over every subscriber, under the digest lock (never two runs at once)."""
    with Lease(settings, keys.DIGEST_LOCK, settings.lock_ttl_s) as lease:
        if not dry_run and not lease.acquire():
            raise DigestsBusy("another process is sending digests (pf:digest:lock)")
        core = Core.connect(settings)
        try:
            await core.holder.refresh()  # the feed's model, as the api serves it
            return await core.digests.run(
                dry_run=dry_run, show=lambda text: print(text, flush=True)
            )
        finally:
            await core.close()


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.smtp_host and not args.dry_run:
        # Not an error: a scheduled run on a service without e-mail has nothing to do.
        print("paperfeed: digests are off (PAPERFEED_SMTP_HOST is not set)", file=sys.stderr)
        return 0
    with redis_for(settings) as ready:
        report = asyncio.run(run_digests(ready, dry_run=args.dry_run))
    print(msgspec.json.encode(report).decode())
    return 1 if report.failed else 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    commands: dict[str, Callable[[Settings, argparse.Namespace], int]],
) -> None:
    digest = sub.add_parser("digest", help="send every due e-mail digest now")
    digest.add_argument("--dry-run", action="store_true", help="print them, send nothing")
    commands["digest"] = cmd_digest
