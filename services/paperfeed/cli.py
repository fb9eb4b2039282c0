"""The ``paperfeed`` command and its subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from paperfeed import logs
from paperfeed.settings import Settings, SettingsError, env_name, load_settings
from paperfeed.store import client, embedded

log = logging.getLogger("paperfeed")


@contextlib.contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Settings whose ``redis_url`` is usable; the embedded server is released after."""
    if settings.redis_url:
        yield settings
        return
    url = client.resolve_redis_url(settings)
    try:
        yield msgspec.structs.replace(settings, redis_url=url)
    finally:
        if embedded.release_server(settings.data_path):
            log.info("stopped the embedded redis-server", extra={"data_dir": settings.data_dir})


class Stopped(Exception):
    """SIGTERM or SIGINT reached the process."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from paperfeed.api.app import create_app

    # uvicorn shuts down gracefully, then re-raises the signal it caught; these handlers
    # turn that into an exception so the embedded Redis is released before exiting.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with contextlib.suppress(Stopped), redis_for(settings) as ready:
        log.info(
            "paperfeed listening",
            extra={
                "url": f"http://{ready.host}:{ready.port}",
                "redis": client.redact(ready.redis_url or ""),
            },
        )
        if ready.workers > 1:
            # Each worker builds its app from the environment; they share the embedded
            # server, already started above.
            uvicorn.run(
                "paperfeed.api.app:app_from_env",
                factory=True,
                host=ready.host,
                port=ready.port,
                workers=ready.workers,
                log_config=None,
                proxy_headers=True,
                forwarded_allow_ips=ready.forwarded_allow_ips,
            )
        else:
            uvicorn.run(
                create_app(ready),
                host=ready.host,
                port=ready.port,
                log_config=None,
                proxy_headers=True,
                forwarded_allow_ips=ready.forwarded_allow_ips,
            )
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from paperfeed.catalog import importers
    from paperfeed.core import Core

    path = Path(args.file)
    try:
        papers = importers.parse_file(path, args.format)
    except (OSError, importers.ImportFormatError, UnicodeDecodeError) as exc:
        print(f"paperfeed import: {path}: {exc}", file=sys.stderr)
        return 2
    print(f"read {len(papers)} papers from {path}", file=sys.stderr)

    async def run(ready: Settings) -> None:
        core = Core.connect(ready)
        try:
            result = await core.catalog.upsert(papers, time.time())
        finally:
            await core.close()
        print(msgspec.json.encode(result).decode())

    with redis_for(settings) as ready:
        asyncio.run(run(ready))
    return 0


def cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    for field in Settings.__struct_fields__:
        value = getattr(settings, field)
        if field in ("admin_token", "smtp_password", "secret_key") and value:
            value = "<set>"
        elif field == "redis_url" and value:
            value = client.redact(value)
        print(f"{env_name(field)}={value}")
    return 0


async def forget_inactive(settings: Settings, dry_run: bool = False) -> int:
    """Erase the installs inactive for ``forget_inactive_days`` (or count them)."""
    from paperfeed.core import Core

    core = Core.connect(settings)
    try:
        days = settings.forget_inactive_days
        if dry_run:
            return await core.users.count_inactive(days)
        return await core.users.forget_inactive(days)
    finally:
        await core.close()


def cmd_forget_inactive(settings: Settings, args: argparse.Namespace) -> int:
    with redis_for(settings) as ready:
        count = asyncio.run(forget_inactive(ready, dry_run=args.dry_run))
    verb = "would erase" if args.dry_run else "erased"
    print(f"{verb} {count} installs inactive for {settings.forget_inactive_days:g} days")
    return 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "import": cmd_import,
    "settings": cmd_settings,
    "forget-inactive": cmd_forget_inactive,
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="paperfeed", description="Personalized trending research papers."
    )
    sub = root.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the api (PAPERFEED_HOST:PAPERFEED_PORT)")
    imp = sub.add_parser("import", help="load papers into the catalog")
    imp.add_argument("file", help="trending page text, daily_papers JSON or JSON lines")
    imp.add_argument("--format", choices=["page", "daily_papers", "jsonl"], default=None)
    sub.add_parser("settings", help="print the settings in force")
    forget = sub.add_parser(
        "forget-inactive", help="erase installs inactive for PAPERFEED_FORGET_INACTIVE_DAYS"
    )
    forget.add_argument("--dry-run", action="store_true", help="count them, erase nothing")
    from paperfeed.recsys import cli as recsys_cli

    recsys_cli.add_commands(sub, COMMANDS)
    from paperfeed.digest import cli as digest_cli

    digest_cli.add_commands(sub, COMMANDS)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"paperfeed: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_json)
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
