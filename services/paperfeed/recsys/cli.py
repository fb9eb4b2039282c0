"""``paperfeed train``, ``paperfeed worker`` and ``paperfeed eval``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import numpy as np
from redis.exceptions import RedisError
from tqdm import tqdm

from paperfeed.recsys import evaluate
from paperfeed.recsys.content import ContentEncoder
from paperfeed.recsys.matrix import confidence
from paperfeed.recsys.model import AlsParams, build_model, fit_als
from paperfeed.recsys.ranker import BlendParams
from paperfeed.recsys.train import TrainReport, als_params, production_scorer, train_and_publish
from paperfeed.settings import Settings
from paperfeed.store import client, keys
from paperfeed.store.lease import Lease

log = logging.getLogger("paperfeed.train")

Command = Callable[[Settings, argparse.Namespace], int]


@contextlib.contextmanager
def bars() -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback drawing one tqdm bar per stage on stderr."""
    open_bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = open_bars.get(stage)
        if bar is None:
            bar = open_bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=True)
        bar.n = done
        bar.refresh()

    try:
        yield progress
    finally:
        for bar in open_bars.values():
            bar.close()


async def train_once(settings: Settings, show_progress: bool) -> TrainReport:
    with Lease(settings, keys.TRAIN_LOCK, settings.lock_ttl_s) as lease:
        if not lease.acquire():
            raise RuntimeError("another trainer holds pf:train:lock")
        redis = client.connect(settings)
        try:
            with bars() as progress:
                report = await train_and_publish(
                    redis, settings, progress if show_progress else None
                )
            await redis.delete(keys.TRAIN_REQUESTED)
            return report
        finally:
            await redis.aclose()


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from paperfeed.cli import redis_for

    with redis_for(settings) as ready:
        report = asyncio.run(train_once(ready, show_progress=not args.quiet))
    print(msgspec.json.encode(report).decode())
    return 0 if report.published or not args.strict else 1


async def should_train(settings: Settings, last_events: int, last_run: float) -> tuple[bool, int]:
    redis = client.connect(settings)
    try:
        events = int(await redis.hget(keys.STATS, "events") or 0)
        requested = bool(await redis.exists(keys.TRAIN_REQUESTED))
    finally:
        await redis.aclose()
    due = time.time() - last_run >= settings.train_interval_s
    enough = events - last_events >= settings.train_min_new_events
    return requested or due or enough, events


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Retrain on a schedule, when enough new events arrived, or when asked to; send the
    e-mail digests that are due (every ``digest_check_s``, when SMTP is configured);
    once a day, erase the installs inactive for ``forget_inactive_days``."""
    from paperfeed.cli import forget_inactive, redis_for
    from paperfeed.digest.cli import run_digests

    with redis_for(settings) as ready:
        last_events, last_run, last_digests, last_forget = -sys.maxsize, 0.0, 0.0, 0.0
        while True:
            try:
                go, events = asyncio.run(should_train(ready, last_events, last_run))
            except RedisError as exc:  # Redis away for a while: keep waiting for it
                log.warning("worker cannot reach redis", extra={"error": repr(exc)})
                time.sleep(args.poll)
                continue
            if ready.smtp_host and time.time() - last_digests >= ready.digest_check_s:
                last_digests = time.time()
                try:
                    sent = asyncio.run(run_digests(ready))
                    log.info("digests", extra={"report": msgspec.to_builtins(sent)})
                except (RuntimeError, RedisError) as exc:
                    log.warning("digests skipped", extra={"error": str(exc)})
                except Exception:  # a digest fault must not stop training
                    log.exception("digest run failed")
            if time.time() - last_forget >= 86_400:
                last_forget = time.time()
                try:
                    forgotten = asyncio.run(forget_inactive(ready))
                    log.info("forgot inactive installs", extra={"installs": forgotten})
                except RedisError as exc:
                    log.warning("forgetting skipped", extra={"error": str(exc)})
            if go:
                try:
                    report = asyncio.run(train_once(ready, show_progress=False))
                    log.info("training done", extra={"report": msgspec.to_builtins(report)})
                except (RuntimeError, RedisError) as exc:
                    log.warning("training skipped", extra={"error": str(exc)})
                last_events, last_run = events, time.time()
                if args.once:
                    return 0
            time.sleep(args.poll)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    data = evaluate.load_dataset(Path(args.interactions), Path(args.items))
    n_users, n_items = data.weights.shape
    print(f"{n_users} users, {n_items} papers, {data.weights.nnz} interactions", file=sys.stderr)
    candidates = None
    if args.split == "warm":
        train, test = evaluate.warm_split(data.weights, seed=args.seed)
    else:
        train, test, candidates = evaluate.cold_split(data.weights, seed=args.seed)
    als = AlsParams(
        factors=args.factors or settings.als_factors,
        regularization=args.regularization or settings.als_regularization,
        alpha=args.alpha or settings.als_alpha,
        iterations=args.iterations or settings.als_iterations,
        seed=args.seed,
    )
    with bars() as progress:
        encoder = ContentEncoder.fit(data.item_texts, seed=args.seed)
        model, _ = build_model(
            confidence(train, als.alpha),
            data.item_ids,
            data.item_texts,
            als,
            BlendParams(),
            encoder=encoder,
            progress=lambda stage, step: progress(f"train {stage}", step, als.iterations),
        )
        # Plain ALS: the same hyperparameters, its own user factors, nothing else.
        plain_users, plain_items = fit_als(
            confidence(train, als.alpha),
            als,
            lambda step: progress("train plain als", step, als.iterations),
        )
        scorers = {
            "popularity": evaluate.popularity_scorer(train),
            "content": evaluate.content_scorer(model.item_content),
            "als": evaluate.factor_scorer(plain_users, plain_items),
            "production": production_scorer(model, als.alpha),
        }
        results: dict[str, dict[str, float]] = {}
        n_eval = int((np.diff(test.indptr) > 0).sum())
        for name, scorer in scorers.items():
            done = 0

            def step(n: int, name: str = name) -> None:
                nonlocal done
                done += n
                progress(f"rank {name}", done, n_eval)

            metrics = evaluate.ranking_metrics(
                scorer, train, test, args.k, candidates=candidates, progress=step
            )
            results[name] = {"recall": round(metrics.recall, 5), "ndcg": round(metrics.ndcg, 5)}
    report = {
        "split": args.split,
        "k": args.k,
        "seed": args.seed,
        "users": n_eval,
        "models": results,
        "params": {"als": msgspec.to_builtins(als), "blend": msgspec.to_builtins(BlendParams())},
    }
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        plot(report, Path(args.plot))
    return 0


def print_table(report: dict[str, object]) -> None:
    k = report["k"]
    print(f"{report['split']} split, k={k}, {report['users']} users")
    print(f"{'model':<12} {'recall@' + str(k):>10} {'ndcg@' + str(k):>10}")
    models = report["models"]
    assert isinstance(models, dict)
    for name, metrics in models.items():
        print(f"{name:<12} {metrics['recall']:>10.4f} {metrics['ndcg']:>10.4f}")


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    assert isinstance(models, dict)
    names = list(models)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, metric in [(-0.2, "recall"), (0.2, "ndcg")]:
        ax.bar(x + offset, [models[n][metric] for n in names], width=0.4, label=f"{metric}@k")
    ax.set_xticks(x, names)
    ax.set_title(f"{report['split']} split, k={report['k']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_commands(sub: argparse._SubParsersAction, commands: dict[str, Command]) -> None:  # type: ignore[type-arg]
    train = sub.add_parser("train", help="train, evaluate and (if better) publish a model")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--strict", action="store_true", help="exit 1 if not published")
    worker = sub.add_parser("worker", help="retrain on a schedule and on demand")
    worker.add_argument("--poll", type=float, default=10.0, help="seconds between checks")
    worker.add_argument("--once", action="store_true", help="train once when due, then exit")
    ev = sub.add_parser("eval", help="offline evaluation on a data set (common layout)")
    ev.add_argument("--interactions", required=True)
    ev.add_argument("--items", required=True)
    ev.add_argument("--split", choices=["warm", "cold"], default="warm")
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", help="write the results here")
    ev.add_argument("--plot", help="write a bar chart (PNG) here")
    ev.add_argument("--factors", type=int)
    ev.add_argument("--regularization", type=float)
    ev.add_argument("--alpha", type=float)
    ev.add_argument("--iterations", type=int)
    commands.update({"train": cmd_train, "worker": cmd_worker, "eval": cmd_eval})


__all__ = ["add_commands", "als_params"]
