"""The ``paperfeed`` command and its subcommands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from paperfeed import logs
from paperfeed.runtime import redis_for
from paperfeed.settings import Settings, SettingsError, env_name, load_settings, settings_env
from paperfeed.store import client

log = logging.getLogger("paperfeed")


class Stopped(Exception):
    """SIGTERM or SIGINT reached the process."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


# uvicorn's fast paths (both in the runtime lock): the uvloop event loop and the httptools
# parser; "auto" would fall back silently to asyncio and h11, several times slower.
UVICORN_LOOP = "uvloop" if sys.platform != "win32" else "asyncio"
UVICORN_HTTP = "httptools"
WORKER_NICENESS = 10
"""``paperfeed run`` starts the worker this much nicer than the api: training and
catalog syncs take what the api leaves of the cores, never the other way round."""


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from paperfeed.api.app import create_app

    # uvicorn shuts down gracefully, then re-raises the signal it caught; these handlers
    # turn that into an exception so the embedded Redis is released before exiting.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if getattr(args, "workers", None):
        settings = msgspec.structs.replace(settings, workers=args.workers)
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
            # server, already started above, and write their metrics to one directory
            # that every scrape sums (else each scrape would read one random process).
            own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if own_metrics_dir:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="pf-metrics-")
            try:
                uvicorn.run(
                    "paperfeed.api.app:app_from_env",
                    factory=True,
                    host=ready.host,
                    port=ready.port,
                    workers=ready.workers,
                    loop=UVICORN_LOOP,
                    http=UVICORN_HTTP,
                    log_config=None,
                    proxy_headers=True,
                    forwarded_allow_ips=ready.forwarded_allow_ips,
                    timeout_keep_alive=ready.keep_alive_s,
                )
            finally:
                if own_metrics_dir:
                    shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
        else:
            uvicorn.run(
                create_app(ready),
                host=ready.host,
                port=ready.port,
                loop=UVICORN_LOOP,
                http=UVICORN_HTTP,
                log_config=None,
                proxy_headers=True,
                forwarded_allow_ips=ready.forwarded_allow_ips,
                timeout_keep_alive=ready.keep_alive_s,
            )
    return 0


RESTART_CAP_S = 30.0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """The whole product on one machine: ``paperfeed serve`` and ``paperfeed worker`` as
    child processes over one Redis (the embedded one when ``REDIS_URL`` is unset). A
    child that dies is restarted (with backoff); Ctrl-C or SIGTERM stops both."""
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    children: dict[str, subprocess.Popen[bytes]] = {}
    with contextlib.suppress(Stopped), redis_for(settings) as ready:
        env = {**os.environ, **settings_env(ready)}
        commands = {"api": "serve", "worker": "worker"}
        failures = dict.fromkeys(commands, 0)
        restart_at = dict.fromkeys(commands, 0.0)
        log.info(
            "paperfeed running: api and worker",
            extra={
                "url": f"http://{ready.host}:{ready.port}",
                "redis": client.redact(ready.redis_url or ""),
            },
        )
        try:
            while True:
                now = time.monotonic()
                for name, command in commands.items():
                    child = children.get(name)
                    if child is not None and child.poll() is None:
                        continue
                    if child is not None:
                        failures[name] += 1
                        delay = min(RESTART_CAP_S, 2.0 ** failures[name])
                        log.error(
                            "child process exited; restarting",
                            extra={"process": name, "status": child.returncode, "in_s": delay},
                        )
                        children.pop(name)
                        restart_at[name] = now + delay
                    if now >= restart_at[name]:
                        children[name] = subprocess.Popen(
                            [sys.executable, "-m", "paperfeed.cli", command], env=env
                        )
                        if name == "worker":
                            _lower_priority(children[name].pid)
                time.sleep(0.5)
        finally:
            _stop_children(children)
    return 0


def _lower_priority(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)


def _stop_children(children: dict[str, subprocess.Popen[bytes]]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


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


def cmd_forget_inactive(settings: Settings, args: argparse.Namespace) -> int:
    from paperfeed.core import forget_inactive

    with redis_for(settings) as ready:
        count = asyncio.run(forget_inactive(ready, dry_run=args.dry_run))
    verb = "would erase" if args.dry_run else "erased"
    print(f"{verb} {count} installs inactive for {settings.forget_inactive_days:g} days")
    return 0


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    """``paperfeed digest``: send every due digest now (``--dry-run``: print them)."""
    from paperfeed.core import run_digests

    if not settings.smtp_host and not args.dry_run:
        # Not an error: a scheduled run on a service without e-mail has nothing to do.
        print("paperfeed: digests are off (PAPERFEED_SMTP_HOST is not set)", file=sys.stderr)
        return 0
    with redis_for(settings) as ready:
        report = asyncio.run(run_digests(ready, dry_run=args.dry_run))
    print(msgspec.json.encode(report).decode())
    return 1 if report.failed else 0


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": cmd_serve,
    "run": cmd_run,
    "import": cmd_import,
    "settings": cmd_settings,
    "forget-inactive": cmd_forget_inactive,
    "digest": cmd_digest,
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="paperfeed", description="Personalized trending research papers."
    )
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the api (PAPERFEED_HOST:PAPERFEED_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="api processes sharing the port, one a core (default: PAPERFEED_WORKERS, 1)",
    )
    sub.add_parser("run", help="run the api and the worker together (what `make run` does)")
    imp = sub.add_parser("import", help="load papers into the catalog")
    imp.add_argument("file", help="trending page text, daily_papers JSON or JSON lines")
    imp.add_argument("--format", choices=["page", "daily_papers", "jsonl"], default=None)
    sub.add_parser("settings", help="print the settings in force")
    forget = sub.add_parser(
        "forget-inactive", help="erase installs inactive for PAPERFEED_FORGET_INACTIVE_DAYS"
    )
    forget.add_argument("--dry-run", action="store_true", help="count them, erase nothing")
    from paperfeed.training import cli as training_cli

    training_cli.add_commands(sub, COMMANDS)
    digest = sub.add_parser("digest", help="send every due e-mail digest now")
    digest.add_argument("--dry-run", action="store_true", help="print them, send nothing")
    from paperfeed import worker

    worker.add_commands(sub, COMMANDS)
    from paperfeed.catalog import sync

    sync.add_commands(sub, COMMANDS)
    return root


INTERRUPTED = 130
"""A command stopped by Ctrl-C (SIGINT) where it has no handler of its own: 128 + 2."""


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(f"paperfeed: {exc}", file=sys.stderr)
            return 2
        logs.configure(settings.log_level, logs.json_wanted(settings.log_json))
        return COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the terminal's group: a command without a
        # handler of its own (a training, an import, a worker still starting) stops with
        # one line, not a traceback (asyncio.run's is a CancelledError, then this).
        print("paperfeed: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
