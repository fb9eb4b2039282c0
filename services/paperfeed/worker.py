"""``paperfeed worker``: the scheduled jobs, each under its own guard.

Jobs (each its own asyncio task; one failing never stops another):

- ``train``: a first model as soon as there is data for one (tried again
  ``first_train_delay_s`` after new events until one is published), then retraining
  every ``train_interval_s`` when events arrived, as soon as ``train_min_new_events``
  arrived, or when the admin api asks (``pf:train:requested``). Training runs in a child
  ``paperfeed train`` process: its memory is returned after each run, a crash in it is
  the job's failure, and stopping the worker stops it. Only a training that finished
  (published or not: the decision is recorded) answers the request and counts the
  events it saw; a failed one leaves both, and is retried after its backoff.
- ``digests``: every ``digest_check_s`` when SMTP is configured.
- ``retention``: erase inactive installs, daily.
- ``artifact``: the serving artifact (``recsys.artifact``): the catalog index of the
  current model and catalog version, built once here and published in Redis for every
  api process to load, whenever either version moves (checked every
  ``artifact.CHECK_S``; a burst of imports during a build is built once, after it); a
  replaced one is deleted at the first check ``artifact.GRACE_S`` after its replacement.
- ``sync``: the catalog from Hugging Face and arXiv (``catalog.sync``), each source (each
  arXiv category) every ``sync_interval_s``, a failing one after its own backoff; and
  every ``candidate_lookup_interval_s`` the lookup of the arXiv ids readers reported
  (``catalog.lookup``: only a source's metadata admits a reported paper).

A job that raises is logged with its traceback and retried with exponential backoff
(``BACKOFF_S`` doubling up to ``BACKOFF_CAP_S``). Job state lives in Redis
(``pf:worker:state``), so a restarted worker does not retrain at once, and the
worker's heartbeat (``pf:worker:heartbeat``) tells the api that a worker is there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from redis.exceptions import RedisClusterException, RedisError

from paperfeed.logs import json_wanted
from paperfeed.recsys import artifact
from paperfeed.recsys.index import CatalogIndex
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.repository import ModelRepository
from paperfeed.runtime import redis_for
from paperfeed.settings import Settings, settings_env
from paperfeed.store import client, keys
from paperfeed.store.client import RedisClient
from paperfeed.training.cli import TRAINER_BUSY

if TYPE_CHECKING:
    from paperfeed.catalog.sources import SourceResult

log = logging.getLogger("paperfeed.worker")

BACKOFF_S = 5.0
BACKOFF_CAP_S = 900.0
HEARTBEAT_TTL_S = 60.0
ALIVE_FILE = "worker.alive"
ALIVE_MAX_AGE_S = 90.0
STUCK_AFTER_S = {
    "train": 6 * 3600.0,
    "digests": 3600.0,
    "retention": 3600.0,
    "sync": 3600.0,
    "repairs": 3600.0,
    "artifact": 3600.0,
}
"""A job running longer than this is stuck (a hung Redis call, a deadlock): the
liveness check fails and the orchestrator restarts the worker."""


REPAIRS_EVERY_S = 60.0
"""How often the worker finishes erasures and links left unfinished (a retry of
``DELETE /v1/me`` usually has already)."""


class JobFailed(RuntimeError):
    """A job could not do its work this time (retried with backoff)."""


@dataclass
class Job:
    name: str
    due: Callable[[float], Awaitable[bool]]
    run: Callable[[], Awaitable[str]]
    """Does the work; returns a one-line summary for the log."""
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    runs: int = field(default=0)
    started_at: float = 0.0
    """When the running call of ``run`` started (0: not running)."""
    every_s: float | None = None
    """Seconds between checks of ``due`` (None: the worker's ``poll_s``)."""


_DELETE_IF_SAME = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
"""Delete a key only while it holds the value given (a training request answered)."""


class Worker:
    def __init__(self, settings: Settings, redis: RedisClient, poll_s: float) -> None:
        self.settings = settings
        self.redis = redis
        self.poll_s = poll_s
        self.stopping = asyncio.Event()
        self.trainer: asyncio.subprocess.Process | None = None
        self._answered = redis.register_script(_DELETE_IF_SAME)
        self.jobs = [
            Job("train", self.train_due, self.train),
            Job("digests", self.digests_due, self.digests),
            Job("retention", self.retention_due, self.retention),
            Job("sync", self.sync_due, self.sync),
            Job("repairs", self.repairs_due, self.repairs),
            Job("artifact", self.artifact_due, self.artifact, every_s=artifact.CHECK_S),
        ]
        self.artifacts = artifact.ArtifactStore(redis)
        self.models = ModelRepository(redis, settings.models_kept)
        self._artifact_index: CatalogIndex | None = None
        """The index of the last artifact built here: the next build reuses its rows."""

    # --- the loop -------------------------------------------------------------------

    async def run(self, once: bool = False) -> None:
        """Run every job until ``stopping`` (``once``: each due job once, then return)."""
        if once:
            for job in self.jobs:
                await self.step(job)
            return
        tasks = [asyncio.create_task(self.loop(job), name=f"job {job.name}") for job in self.jobs]
        tasks.append(asyncio.create_task(self.heartbeat(), name="heartbeat"))
        await self.stopping.wait()
        if self.trainer is not None and self.trainer.returncode is None:
            log.info("stopping the trainer")
            with contextlib.suppress(ProcessLookupError):
                self.trainer.terminate()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Api processes stop waiting for artifacts at once, not when the mark expires.
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            await self.redis.delete(keys.ARTIFACT_BUILDER)
        self.write_alive(stopped=True)

    async def loop(self, job: Job) -> None:
        while not self.stopping.is_set():
            await self.step(job)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), job.every_s or self.poll_s)

    async def step(self, job: Job) -> None:
        """Run ``job`` if it is due, under its guard."""
        now = time.time()
        if now < job.retry_at:
            return
        try:
            if not await job.due(now):
                return
            job.started_at = time.time()
            try:
                summary = await job.run()
            finally:
                job.started_at = 0.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            job.failures += 1
            delay = min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (job.failures - 1))
            job.retry_at = time.time() + delay
            job.last_error = f"{type(exc).__name__}: {exc}"
            expected = isinstance(exc, JobFailed | RedisError | RedisClusterException | OSError)
            log.error(
                "job failed; retrying later",
                exc_info=not expected,
                extra={"job": job.name, "error": job.last_error, "retry_in_s": round(delay, 1)},
            )
            await self.save_state(job)
            return
        job.runs += 1
        if job.failures:
            log.info("job recovered", extra={"job": job.name, "after_failures": job.failures})
        job.failures, job.retry_at, job.last_error = 0, 0.0, ""
        log.info("job done", extra={"job": job.name, "summary": summary})
        await self.save_state(job)

    async def heartbeat(self) -> None:
        while not self.stopping.is_set():
            self.write_alive()
            with contextlib.suppress(RedisError, RedisClusterException):
                await self.redis.set(
                    keys.WORKER_HEARTBEAT, f"{time.time():.3f}", ex=int(HEARTBEAT_TTL_S)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), min(self.poll_s, HEARTBEAT_TTL_S / 3))

    def write_alive(self, stopped: bool = False) -> None:
        """The local liveness record ``paperfeed worker-alive`` reads: the loop is
        turning, and since when each running job runs; ``stopped``: it stopped cleanly
        (the probe fails at once rather than when the record grows old)."""
        running = {job.name: job.started_at for job in self.jobs if job.started_at}
        fields = {"at": time.time(), "pid": os.getpid(), "running": running}
        record = msgspec.json.encode({**fields, "stopped": True} if stopped else fields)
        path = self.settings.data_path / ALIVE_FILE
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(record)
            temporary.replace(path)

    async def save_state(self, job: Job) -> None:
        with contextlib.suppress(RedisError, RedisClusterException):
            await self.redis.hset(
                keys.WORKER_STATE,
                mapping={
                    f"{job.name}:failures": job.failures,
                    f"{job.name}:retry_at": job.retry_at,
                    f"{job.name}:last_error": job.last_error,
                    f"{job.name}:last_run": time.time(),
                },
            )

    async def state(self, name: str, default: float = 0.0) -> float:
        value = await self.redis.hget(keys.WORKER_STATE, name)
        return float(value) if value else default

    # --- train ----------------------------------------------------------------------

    async def train_due(self, now: float) -> bool:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.STATS, "events")
            pipe.exists(keys.TRAIN_REQUESTED)
            pipe.exists(keys.MODEL_CURRENT)
            pipe.hmget(keys.WORKER_STATE, ["train:events", "train:at"])
            events_raw, requested, has_model, (last_events, last_at) = await pipe.execute()
        events = int(events_raw or 0)
        if requested:
            return True
        if last_at is None:
            if has_model:
                # A worker new to a deployment that has a model (an upgrade, a restart
                # after its state was lost): the model is current, go on from now.
                await self.redis.hset(
                    keys.WORKER_STATE, mapping={"train:events": events, "train:at": now}
                )
                return False
            return events > 0
        new_events = events - int(last_events or 0)
        since = now - float(last_at)
        if new_events <= 0:
            return False
        if not has_model:
            return since >= self.settings.first_train_delay_s
        return (
            new_events >= self.settings.train_min_new_events
            or since >= self.settings.train_interval_s
        )

    async def _mark_trained(self, events: int, at: float) -> None:
        await self.redis.hset(keys.WORKER_STATE, mapping={"train:events": events, "train:at": at})

    async def train(self) -> str:
        # Counted before training: events that arrive while it runs count for the next.
        # Both are recorded only when the training finished (a failed one is retried).
        started = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.STATS, "events")
            pipe.get(keys.TRAIN_REQUESTED)
            events_raw, request = await pipe.execute()
        summary = await self._run_trainer()
        await self._mark_trained(int(events_raw or 0), started)
        if request is not None:
            # The request this training answered (one made since stays: another follows).
            await self._answered(keys=[keys.TRAIN_REQUESTED], args=[request])
        return summary

    async def _run_trainer(self) -> str:
        """``paperfeed train`` in a child process; its summary, or JobFailed."""
        env = {
            **os.environ,
            **settings_env(self.settings),
            "PAPERFEED_LOG_JSON": str(json_wanted(self.settings.log_json)).lower(),
        }
        # A session of its own: Ctrl-C in the terminal of `paperfeed run` signals its whole
        # process group, and a trainer in it would die of the SIGINT mid-import or
        # mid-asyncio.run with a KeyboardInterrupt (CancelledError) traceback. The worker
        # stops it itself when it stops (``run``: terminate).
        self.trainer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "paperfeed.cli", "train", "--quiet", "--log-progress",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=None, start_new_session=True,
        )  # fmt: skip
        try:
            out, _ = await self.trainer.communicate()
        finally:
            if self.trainer.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.trainer.kill()
                await self.trainer.wait()
        status = self.trainer.returncode
        if status == TRAINER_BUSY:
            return "another trainer is running; skipped"
        if status != 0:
            raise JobFailed(f"the trainer exited with status {status}")
        try:
            decision = msgspec.json.decode(out.strip().splitlines()[-1])
        except (msgspec.DecodeError, IndexError) as exc:
            raise JobFailed("the trainer printed no decision") from exc
        verdict = "published" if decision.get("published") else "not published"
        return f"{verdict} {decision.get('version')}: {decision.get('reason')}"

    # --- the serving artifact -------------------------------------------------------------

    async def _wanted(self) -> tuple[str | None, str]:
        """The (model version, catalog version) api processes serve now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.MODEL_CURRENT)
            pipe.get(keys.PAPERS_VERSION)
            model, catalog = await pipe.execute()
        return (str(model) if model else None), str(catalog or "0")

    async def artifact_due(self, now: float) -> bool:
        # Renewed at every check: api processes wait for the artifact only while it is.
        await self.artifacts.mark_builder()
        # A replaced artifact leaves Redis once its grace is over, not at the next
        # publication (which may be hours later: an artifact is up to hundreds of MiB).
        retired = await self.artifacts.prune(now)
        if retired:
            log.info("serving artifacts retired", extra={"artifacts": retired})
        header = await self.artifacts.current()
        have = (header.model_version, header.catalog_version) if header else None
        return have != await self._wanted()

    async def artifact(self) -> str:
        """Build the catalog index of the current versions and publish it. Versions that
        move during a build are built next (the job is due again at once)."""
        model_version, catalog_version = await self._wanted()
        previous = self._artifact_index
        model: RecModel | None = None
        if model_version is not None:
            if previous is not None and previous.model_version == model_version:
                model = previous.model
            else:
                try:
                    model = await self.models.load(model_version, asyncio.to_thread)
                except (LookupError, ValueError) as exc:
                    raise JobFailed(f"model {model_version} cannot be loaded: {exc}") from exc
        if previous is None:
            previous = await self._published_index(model)
        papers, aliases = await artifact.read_catalog(self.redis, asyncio.to_thread)
        # In a thread: the heartbeat and the other jobs go on while it builds.
        index, header, chunks = await asyncio.to_thread(
            artifact.build, papers, model, catalog_version, previous, aliases
        )
        await self.artifacts.publish(header, chunks)
        self._artifact_index = index
        return (
            f"artifact {header.id}: {header.papers} papers, "
            f"{header.size / 2**20:.1f} MiB in {header.chunks} chunks, "
            f"built in {header.build_seconds:.2f} s"
        )

    async def _published_index(self, model: RecModel | None) -> CatalogIndex | None:
        """The published artifact's index, when it is of ``model`` (a restarted worker
        reuses its rows as it would its own)."""
        header = await self.artifacts.current()
        if header is None or header.model_version != (model.version if model else None):
            return None
        try:
            return await self.artifacts.load(header, model, asyncio.to_thread)
        except (LookupError, ValueError, msgspec.DecodeError) as exc:
            log.warning("published artifact unusable", extra={"error": repr(exc)})
            return None

    # --- digests and retention ---------------------------------------------------------

    async def digests_due(self, now: float) -> bool:
        if not self.settings.smtp_host:
            return False
        return now - await self.state("digests:last_run") >= self.settings.digest_check_s

    async def digests(self) -> str:
        from paperfeed.core import DigestsBusy, run_digests

        try:
            report = await run_digests(self.settings)
        except DigestsBusy:
            return "another process is sending digests; skipped"
        return msgspec.json.encode(report).decode()

    async def retention_due(self, now: float) -> bool:
        return now - await self.state("retention:last_run") >= 86_400

    async def retention(self) -> str:
        from paperfeed.core import forget_inactive

        forgotten = await forget_inactive(self.settings)
        return (
            f"erased {forgotten} installs inactive for {self.settings.forget_inactive_days:g} days"
        )

    async def repairs_due(self, now: float) -> bool:
        return now - await self.state("repairs:last_run") >= REPAIRS_EVERY_S

    async def repairs(self) -> str:
        return await finish_erasures(self.settings)

    async def sync_due(self, now: float) -> bool:
        from paperfeed.catalog.sync import sync_due

        return await sync_due(self.redis, self.settings, now)

    async def sync(self) -> str:
        from paperfeed.catalog.sync import SyncBusy, parse_sources, run_sync

        try:
            results = await run_sync(
                self.settings, parse_sources(self.settings.sync_sources), lookup=True
            )
        except SyncBusy:
            return "another process is syncing the catalog; skipped"
        return "; ".join(sync_summary(r) for r in results)


async def finish_erasures(settings: Settings, now: float | None = None) -> str:
    """The worker's ``repairs`` job: finish every erasure and every link left unfinished,
    and take erased readers out of the trainer's cache of training data."""
    from paperfeed.core import Core
    from paperfeed.training.data import CACHE_FILE, deployment_id, forget_cached_readers

    now = time.time() if now is None else now
    core = Core.connect(settings)
    try:
        finished = await core.users.finish_erasures(now=now)
        linked = await core.pairing.finish_links(now=now)
        scored = await core.redis.zrange(keys.ERASED, 0, -1, withscores=True)
        erased = [(str(user), float(at)) for user, at in scored]  # type: ignore[str-unpack]
        if not erased:
            return f"finished {finished} erasures, {linked} links"
        cache_dir = settings.data_path / "trainer"
        last = float(await core.redis.hget(keys.WORKER_STATE, "erasures:cache_pass") or 0)
        try:
            written = (cache_dir / CACHE_FILE).stat().st_mtime
        except OSError:
            written = 0.0
        # The cache is read (it can be large) only when a reader was erased, or a
        # training wrote it (perhaps with readers it read before their erasure), since
        # the last pass.
        if max(at for _, at in erased) < last and written < last:
            return f"finished {finished} erasures, {linked} links"
        gone = {user for user, _ in erased}
        read_at = forget_cached_readers(cache_dir, await deployment_id(core.redis), gone)
        await core.redis.hset(keys.WORKER_STATE, "erasures:cache_pass", f"{now:.3f}")
        # A cache read after an erasure never held that reader (erased readers are no
        # longer listed): those are done with. The others stay until then, in case a
        # training that read them before their erasure writes its cache.
        done = [user for user, at in erased if read_at is None or at < read_at]
        if done:
            await core.redis.zrem(keys.ERASED, *done)
        return (
            f"finished {finished} erasures, {linked} links; "
            f"{len(gone)} erased readers out of the cache"
        )
    finally:
        await core.close()


def sync_summary(result: SourceResult) -> str:
    """One unit of a sync run in a line: ``arxiv: failed (3 new, ...) (cs.CL: ...)``."""
    if result.skipped:
        return f"{result.source}: skipped"
    counts = f"{result.new} new, {result.updated} updated, {result.merged} merged"
    if result.source == "reported":
        counts += f", {result.dropped} dropped"
    error = f" ({result.error})" if result.error else ""
    return f"{result.source}: {'ok' if result.ok else 'failed'} ({counts}){error}"


async def run_worker(settings: Settings, poll_s: float, once: bool) -> None:
    redis = client.connect(settings)
    worker = Worker(settings, redis, poll_s)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stopping.set)
    log.info("worker started", extra={"jobs": [job.name for job in worker.jobs]})
    try:
        await worker.run(once=once)
    finally:
        await redis.aclose()
        log.info("worker stopped")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    with redis_for(settings) as ready:
        asyncio.run(run_worker(ready, args.poll, args.once))
    return 0


def worker_alive(settings: Settings, now: float | None = None) -> str | None:
    """Why the worker on this machine is not alive, or None when it is."""
    now = time.time() if now is None else now
    path = settings.data_path / ALIVE_FILE
    try:
        record = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return f"no liveness record at {path}"
    age = now - float(record.get("at", 0))
    if record.get("stopped"):
        return f"the worker stopped {age:.0f} s ago"
    if age > ALIVE_MAX_AGE_S:
        return f"the worker's loop last turned {age:.0f} s ago"
    for name, started in dict(record.get("running", {})).items():
        limit = STUCK_AFTER_S.get(name, 3600.0)
        if now - float(started) > limit:
            return f"job {name} has been running for {now - float(started):.0f} s"
    return None


def cmd_worker_alive(settings: Settings, args: argparse.Namespace) -> int:
    problem = worker_alive(settings)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("alive")
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    commands: dict[str, Callable[[Settings, argparse.Namespace], int]],
) -> None:
    worker = sub.add_parser("worker", help="the scheduled jobs: training, digests, retention")
    worker.add_argument("--poll", type=float, default=5.0, help="seconds between checks")
    worker.add_argument("--once", action="store_true", help="run each due job once, then exit")
    commands["worker"] = cmd_worker
    sub.add_parser(
        "worker-alive",
        help="exit 0 if this machine's worker is alive (its loop turns, no job is stuck): "
        "the liveness probe",
    )
    commands["worker-alive"] = cmd_worker_alive
