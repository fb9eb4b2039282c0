"""``paperfeed train`` and ``paperfeed eval``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

from paperfeed.recsys import itemknn
from paperfeed.recsys.content import TextFeatures, tokenize
from paperfeed.recsys.matrix import ConfidenceScale
from paperfeed.recsys.model import fit_als
from paperfeed.runtime import Progress, bars, redis_for
from paperfeed.settings import Settings
from paperfeed.store import client, keys
from paperfeed.store.lease import Lease
from paperfeed.training import evaluate, learn
from paperfeed.training.train import Decision, als_params, train_and_publish

log = logging.getLogger("paperfeed.train")

Command = Callable[[Settings, argparse.Namespace], int]


TRAINER_BUSY = 3
"""Exit status of ``paperfeed train`` when another trainer holds the lease."""
PROGRESS_LOG_S = 10.0


class TrainerBusy(RuntimeError):
    """Another process holds the trainer's lease."""


def progress_log() -> Progress:
    """Progress as log lines (at most one a stage every ``PROGRESS_LOG_S``), for the
    worker's child trainer whose stderr is the worker's log."""
    last: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last.get(stage, 0.0) < PROGRESS_LOG_S:
            return
        last[stage] = now
        log.info("training progress", extra={"stage": stage, "done": done, "total": total})

    return progress


async def train_once(
    settings: Settings, progress: Progress | None, search: bool | None = None
) -> Decision:
    """One training run under the trainer's lease (never two at once)."""
    with Lease(settings, keys.TRAIN_LOCK, settings.lock_ttl_s) as lease:
        if not lease.acquire():
            raise TrainerBusy("another trainer holds pf:train:lock")
        redis = client.connect(settings)
        try:
            return await train_and_publish(redis, settings, progress, search=search)
        finally:
            await redis.aclose()


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    search = True if args.search else (False if args.no_search else None)
    with redis_for(settings) as ready, bars() as progress_bars:
        progress = progress_log() if args.log_progress else None
        if progress is None and not args.quiet:
            progress = progress_bars
        try:
            decision = asyncio.run(train_once(ready, progress, search=search))
        except TrainerBusy as exc:
            print(f"paperfeed train: {exc}", file=sys.stderr)
            return TRAINER_BUSY
    print(msgspec.json.encode(decision).decode())
    return 0 if decision.published or not args.strict else 1


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    data = evaluate.load_dataset(Path(args.interactions), Path(args.items))
    n_users, n_items = data.weights.shape
    print(f"{n_users} users, {n_items} papers, {data.weights.nnz} interactions", file=sys.stderr)
    candidates = None
    if args.split == "warm":
        train, test = evaluate.warm_split(data.weights, seed=args.seed)
    else:
        train, test, candidates = evaluate.cold_split(data.weights, seed=args.seed)
    start = msgspec.structs.replace(als_params(settings), seed=args.seed)
    trials = settings.search_trials if args.trials is None else args.trials
    with bars() as progress:
        tokens = tokenize(data.item_texts)
        # production: exactly what a training run does, on the training part only.
        learned = learn.learn(
            train, data.item_ids, tokens, start, search_trials=trials, seed=args.seed,
            progress=lambda stage, done, total: progress(f"production {stage}", done, total),
            neighbours=settings.itemknn_neighbours,
        )  # fmt: skip
        model = learned.model
        chosen = model.meta.als
        # Plain ALS: the searched hyperparameters, its own user factors, nothing else.
        scale = ConfidenceScale.fit(train, chosen.alpha, chosen.scaling)
        plain_users, plain_items = fit_als(
            scale(train), chosen, lambda it: progress("plain als", it, chosen.iterations)
        )
        text = {kind: v for kind, (_, v) in TextFeatures.fit_vectors(tokens, args.seed).items()}
        popularity = np.asarray((train > 0).sum(axis=0), dtype=np.float64).ravel()
        view = learn.column_view(model, data.item_ids, model.text.vectors(tokens))
        scorers: dict[str, evaluate.Scorer] = {
            "popularity": evaluate.popularity_scorer(train),
            "content-lsa": evaluate.lsa_scorer(text["words"], seed=args.seed),
            "content-words": evaluate.content_scorer(text["words"]),
            "content-bigrams": evaluate.content_scorer(text["bigrams"]),
            "als": evaluate.factor_scorer(plain_users, plain_items),
            # Item-kNN alone: the training part's neighbour lists (the blend's signal).
            "itemknn": evaluate.itemknn_scorer(
                itemknn.build(train, settings.itemknn_neighbours or itemknn.NEIGHBOURS)
            ),
            "production": learn.production_scorer(view, popularity),
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
        "params": {
            "als": msgspec.to_builtins(chosen),
            "blend": msgspec.to_builtins(model.meta.blend),
            "itemknn_neighbours": model.meta.neighbours,
            "choices": msgspec.to_builtins(model.meta.choices),
        },
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
    print(f"{'model':<16} {'recall@' + str(k):>10} {'ndcg@' + str(k):>10}")
    models = report["models"]
    assert isinstance(models, dict)
    for name, metrics in models.items():
        print(f"{name:<16} {metrics['recall']:>10.4f} {metrics['ndcg']:>10.4f}")


def plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    assert isinstance(models, dict)
    names = list(models)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, metric in [(-0.2, "recall"), (0.2, "ndcg")]:
        ax.bar(x + offset, [models[n][metric] for n in names], width=0.4, label=f"{metric}@k")
    ax.set_xticks(x, names, rotation=15)
    ax.set_title(f"{report['split']} split, k={report['k']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], commands: dict[str, Command]
) -> None:
    train = sub.add_parser("train", help="train, judge and (if better) publish a model")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--strict", action="store_true", help="exit 1 if not published")
    train.add_argument("--log-progress", action="store_true", help="progress as log lines")
    how = train.add_mutually_exclusive_group()
    how.add_argument("--search", action="store_true", help="search the ALS hyperparameters")
    how.add_argument("--no-search", action="store_true", help="reuse the last search")
    ev = sub.add_parser("eval", help="offline evaluation on a data set (common layout)")
    ev.add_argument("--interactions", required=True)
    ev.add_argument("--items", required=True)
    ev.add_argument("--split", choices=["warm", "cold"], default="warm")
    ev.add_argument("--k", type=int, default=20)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--trials", type=int, help="search trials (default PAPERFEED_SEARCH_TRIALS)")
    ev.add_argument("--json", help="write the results here")
    ev.add_argument("--plot", help="write a bar chart (PNG) here")
    commands.update({"train": cmd_train, "eval": cmd_eval})
