"""Training from Redis: read interactions, learn, judge fairly, publish if better.

The gate compares the candidate, the current model and popularity on interactions
that neither model was trained on:

- With a current model: each reader's papers first liked after the current model's
  cut-off (``data_until``: the newest interaction it learned from). Readers who also
  liked papers before it keep those as their history; readers new since then keep
  their older ``1 - GATE_SHARE`` as history. At most ``GATE_MAX_READERS`` readers.
- Without one, or with fewer than ``GATE_MIN_READERS`` readers with new interactions:
  ``GATE_SHARE`` of the papers of readers with at least 3, picked at random. The
  current model was trained on those, so it is not compared; popularity is.

The candidate that is judged is trained on everything but the judged cells; the one
published learns from every interaction (``learn.learn``). Rules (``gate``):

- the candidate must beat popularity clearly: by more than ``GATE_SIGNIFICANCE``
  standard errors of the per-reader paired difference of nDCG@20;
- judged on new interactions, it must not fall below the current model by more than
  ``PAPERFEED_GATE_TOLERANCE`` (relative) and by a margin the choice of judged readers
  would rarely make (``GATE_SIGNIFICANCE`` standard errors);
- with fewer than ``GATE_MIN_READERS`` judged readers there is too little to judge: the
  candidate is published (a small deployment needs its model to follow new readers and
  papers), and the decision says so. That includes none at all: no reader liked enough
  papers to hold some out (a few readers of two papers each) is a decision like the
  others, never an error.

Every decision, published or not, is kept (``ModelRepository.decisions``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys import evaluate, learn
from paperfeed.recsys.content import Tokens, tokenize
from paperfeed.recsys.data import Interactions, read_interactions
from paperfeed.recsys.matrix import drop_cells, positives
from paperfeed.recsys.model import AlsParams, Choices, RecModel
from paperfeed.recsys.repository import ModelRepository
from paperfeed.settings import Settings
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)

GATE_K = 20
GATE_SHARE = 0.2
GATE_MAX_READERS = 500
GATE_MIN_READERS = 20
GATE_SIGNIFICANCE = 2.0
USERS_CHUNK = 500

Progress = Callable[[str, int, int], None]
FloatArray64 = npt.NDArray[np.float64]
JudgedOn = Literal["new", "random", "none"]


class Decision(msgspec.Struct, kw_only=True):
    """One training run's outcome: what was judged, how, and what was published."""

    at: float
    published: bool
    version: str | None
    """The candidate's version (the published one when ``published``)."""
    reason: str
    judged_on: JudgedOn = "none"
    """``new``: interactions after the current model's cut-off; ``random``: a random
    hold-out (no current model, or too few new interactions); ``none``: nothing."""
    judged_readers: int = 0
    since: float | None = None
    """The current model's cut-off (``judged_on`` = ``new``)."""
    current_version: str | None = None
    metrics: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """nDCG@20 and recall@20 on the judged interactions: candidate, popularity, current."""
    users: int = 0
    papers: int = 0
    interactions: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = msgspec.field(default_factory=dict)
    """Seconds spent in each stage (read, learn, gate, publish)."""
    searched: bool = False
    """Whether this run searched the ALS hyperparameters."""
    choices: Choices | None = None


def judge_cells(
    data: Interactions, since: float | None, seed: int
) -> tuple[sparse.csr_matrix, JudgedOn]:
    """The cells the gate judges on (see the module doc), and how they were chosen."""
    rng = np.random.default_rng(seed)
    liked, first, received = _liked_cells(data)
    n_users = liked.shape[0]
    if since is not None:
        mask = np.zeros(liked.nnz, dtype=bool)
        readers = rng.permutation(n_users)
        judged = 0
        for reader in readers:
            start, end = liked.indptr[reader], liked.indptr[reader + 1]
            if end - start < 2:
                continue
            # New to the current model: received after its cut-off (a client's own
            # time may be days back: an offline queue, an imported history).
            new = received[start:end] > since
            if not new.any():
                continue
            if new.all():
                # A reader new since the cut-off: their latest papers, the rest as history.
                take = max(1, round(GATE_SHARE * (end - start)))
                newest = np.argsort(first[start:end])[-take:]
                new = np.zeros(end - start, dtype=bool)
                new[newest] = True
            mask[start:end] = new
            judged += 1
            if judged >= GATE_MAX_READERS:
                break
        if judged >= GATE_MIN_READERS:
            return _cells(liked, mask), "new"
    mask = np.zeros(liked.nnz, dtype=bool)
    eligible = np.flatnonzero(np.diff(liked.indptr) >= 3)
    for reader in rng.permutation(eligible)[:GATE_MAX_READERS]:
        start, end = liked.indptr[reader], liked.indptr[reader + 1]
        take = max(1, round(GATE_SHARE * (end - start)))
        mask[start + rng.choice(end - start, size=take, replace=False)] = True
    return _cells(liked, mask), ("random" if mask.any() else "none")


def _liked_cells(data: Interactions) -> tuple[sparse.csr_matrix, FloatArray64, FloatArray64]:
    """The liked cells (CSR, sorted) and, aligned with them, each one's first time as the
    client said and the time it was received (the three matrices share one structure)."""
    weights = sparse.csr_matrix(data.weights)
    weights.sort_indices()
    keep = weights.data > 0
    rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
    liked = sparse.csr_matrix(
        (weights.data[keep], (rows[keep], weights.indices[keep])),
        shape=weights.shape,
        dtype=np.float32,
    )
    liked.sort_indices()
    times = []
    for matrix in (data.first_at, data.received_at):
        matrix = sparse.csr_matrix(matrix)
        matrix.sort_indices()
        same = np.array_equal(matrix.indptr, weights.indptr) and np.array_equal(
            matrix.indices, weights.indices
        )
        assert same, "times and weights share one structure (data.read_interactions)"
        times.append(np.asarray(matrix.data, dtype=np.float64)[keep])
    return liked, times[0], times[1]


def _cells(liked: sparse.csr_matrix, mask: npt.NDArray[np.bool_]) -> sparse.csr_matrix:
    rows = np.repeat(np.arange(liked.shape[0]), np.diff(liked.indptr))
    return sparse.csr_matrix(
        (liked.data[mask], (rows[mask], liked.indices[mask])), shape=liked.shape, dtype=np.float32
    )


def gate(
    metrics: dict[str, evaluate.Metrics], judged_on: JudgedOn, readers: int, tolerance: float
) -> tuple[bool, str]:
    """(publish?, why). No ``candidate`` metrics: nothing could be judged."""
    if "candidate" not in metrics:
        return True, (
            f"too few readers to judge (none of the {GATE_MIN_READERS} needed: no reader "
            "liked enough papers to hold some out): published as the model of everything "
            "read so far"
        )
    candidate = metrics["candidate"].ndcg
    if not np.isfinite(candidate):
        return False, "candidate metrics are not finite"
    if readers < GATE_MIN_READERS:
        return True, (
            f"too few readers to judge ({readers} < {GATE_MIN_READERS}): published as the "
            "model of everything read so far"
        )
    popularity = metrics["popularity"].ndcg
    if not significantly_worse(metrics["popularity"], metrics["candidate"]):
        return False, (
            f"candidate nDCG@{GATE_K} {candidate:.4f} does not beat popularity {popularity:.4f} "
            f"clearly (on {readers} readers)"
        )
    if "current" in metrics and judged_on == "new":
        current = metrics["current"].ndcg
        if candidate < current * (1 - tolerance) and significantly_worse(
            metrics["candidate"], metrics["current"]
        ):
            return False, (
                f"candidate nDCG@{GATE_K} {candidate:.4f} is worse than the current model's "
                f"{current:.4f} beyond the tolerance {tolerance:.0%} (on {readers} readers' "
                "new interactions)"
            )
        return True, (
            f"beats popularity and holds up against the current model on {readers} readers' "
            "new interactions"
        )
    if judged_on == "random" and "current" in metrics:
        return True, (
            f"beats popularity on a random hold-out of {readers} readers (too few new "
            "interactions to judge against the current model)"
        )
    return True, f"beats popularity on a random hold-out of {readers} readers"


def significantly_worse(worse: evaluate.Metrics, better: evaluate.Metrics) -> bool:
    """``worse``'s per-reader nDCG is below ``better``'s by more than
    ``GATE_SIGNIFICANCE`` standard errors of the paired difference: a difference that
    the choice of judged readers alone would rarely make."""
    a, b = np.array(worse.per_user_ndcg), np.array(better.per_user_ndcg)
    if len(a) != len(b) or len(a) < 2:
        return False
    difference = a - b
    error = float(difference.std(ddof=1)) / float(np.sqrt(len(difference)))
    return float(difference.mean()) < -GATE_SIGNIFICANCE * max(error, 1e-12)


Learner = Callable[..., learn.Learned]


async def train_and_publish(
    redis: RedisClient,
    settings: Settings,
    progress: Progress | None = None,
    seed: int = 0,
    search: bool | None = None,
    learner: Learner = learn.learn,
) -> Decision:
    """Read, learn, judge, publish if better; the decision is recorded either way.

    ``search``: True searches the ALS hyperparameters, False reuses the last search (or
    the settings), None searches when the last search is ``search_interval_s`` old.
    ``learner`` is ``learn.learn`` (tests pass a broken one to see the gate refuse it).
    """
    started = time.perf_counter()
    stages: dict[str, float] = {}
    mark = started

    def stage(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = round(now - mark, 3)
        mark = now

    repository = ModelRepository(redis, settings.models_kept)
    data = await read_interactions(redis, progress, settings.data_path / "trainer")
    stage("read")
    n_users, n_items = data.weights.shape
    summary = {"users": n_users, "papers": n_items, "interactions": int(data.weights.nnz)}
    liked = positives(data.weights)
    readers_with_data = int((np.diff(liked.indptr) > 0).sum())
    if readers_with_data < settings.train_min_readers or liked.nnz < 2:
        decision = Decision(
            at=time.time(),
            published=False,
            version=None,
            reason=(
                f"not enough interactions to train a model ({readers_with_data} readers "
                f"with a liked paper; {settings.train_min_readers} needed)"
            ),
            seconds=round(time.perf_counter() - started, 3),
            stages=stages,
            **summary,
        )
        await repository.record_decision(decision)
        return decision

    current_version = await repository.current_version()
    current: RecModel | None = None
    if current_version:
        try:
            current = await repository.load(current_version)
        except (LookupError, ValueError, OSError):
            log.warning("current model is gone or broken; judging against popularity only")
    since = current.meta.data_until if current is not None and current.meta.data_until else None
    judged, judged_on = judge_cells(data, since, seed)
    judged_readers = int((np.diff(judged.indptr) > 0).sum())

    configured = als_params(settings)
    last_search = await repository.last_search()
    if last_search is not None and not same_start(last_search.start, configured):
        last_search = None  # the settings changed since: search from them
    due = (
        search
        if search is not None
        else (last_search is None or time.time() - last_search.at >= settings.search_interval_s)
    )
    start = configured
    if last_search is not None:
        start = msgspec.structs.replace(last_search.best, iterations=configured.iterations)
    tokens = await asyncio.to_thread(tokenize, data.item_texts)
    stage("prepare")
    learned = await asyncio.to_thread(
        learner,
        data.weights,
        data.item_ids,
        tokens,
        start,
        search_trials=settings.search_trials if due else 0,
        search=last_search,
        judged=judged if judged.nnz else None,
        seed=seed,
        progress=progress,
        blend_start=current.meta.blend if current is not None else None,
    )
    stage("learn")
    stages.update({f"learn.{step}": seconds for step, seconds in learned.seconds.items()})
    if due and learned.model.meta.choices.search is not None:
        await repository.record_search(learned.model.meta.choices.search)

    history = drop_cells(data.weights, judged)
    metrics: dict[str, evaluate.Metrics] = {}
    if judged.nnz:
        metrics = await asyncio.to_thread(_judge, learned, current, data, tokens, history, judged)
    stage("gate")
    publish, reason = gate(metrics, judged_on, judged_readers, settings.gate_tolerance)
    model = learned.model
    model.meta.data_until = data.data_until
    model.meta.metrics = {
        name: {"recall": round(m.recall, 5), "ndcg": round(m.ndcg, 5), "users": float(m.users)}
        for name, m in metrics.items()
    }
    decision = Decision(
        at=time.time(),
        published=publish,
        version=model.version,
        reason=reason,
        judged_on=judged_on if judged.nnz else "none",
        judged_readers=judged_readers,
        since=since if judged_on == "new" else None,
        current_version=current.version if current is not None else None,
        metrics=model.meta.metrics,
        searched=bool(due),
        choices=model.meta.choices,
        **summary,
    )
    if publish:
        model.meta.train_seconds = round(time.perf_counter() - started, 3)
        await repository.publish(
            model,
            data.user_ids,
            learned.user_factors,
            progress,
            read_at=data.read_at,
            user_events=data.user_events,
        )
        stage("publish")
    else:
        log.warning("model not published", extra={"reason": reason})
    decision.seconds = round(time.perf_counter() - started, 3)
    decision.stages = stages
    await repository.record_decision(decision)
    return decision


def _judge(
    learned: learn.Learned,
    current: RecModel | None,
    data: Interactions,
    tokens: Tokens,
    history: sparse.csr_matrix,
    judged: sparse.csr_matrix,
) -> dict[str, evaluate.Metrics]:
    """Candidate, popularity and current model on the judged cells (same history, same
    trending proxy: the popularity the candidate was trained with)."""
    judged = evaluate.sample_users(judged, GATE_MAX_READERS, 0)
    popularity = np.bincount(positives(history).indices, minlength=history.shape[1]).astype(
        np.float64
    )
    candidate = learned.judge_model
    assert candidate is not None, "learn() judges when given judged cells"
    views = {"candidate": learn.column_view(candidate, data.item_ids, learned.text)}
    if current is not None:
        # A catalog that did not change gives the same features: no need to encode again.
        same = current.text.same_as(candidate.text)
        current_text = learned.text if same else current.text.vectors(tokens)
        views["current"] = learn.column_view(current, data.item_ids, current_text)
    metrics = {
        name: evaluate.ranking_metrics(
            learn.production_scorer(view, popularity), history, judged, GATE_K
        )
        for name, view in views.items()
    }
    metrics["popularity"] = evaluate.ranking_metrics(
        evaluate.popularity_scorer(history), history, judged, GATE_K
    )
    return metrics


def same_start(searched: AlsParams, configured: AlsParams) -> bool:
    """The search started from these settings (the sweeps are always the settings')."""
    return msgspec.structs.replace(searched, iterations=configured.iterations) == configured


def als_params(settings: Settings) -> AlsParams:
    """The hyperparameters a deployment starts from (and keeps when it never searches)."""
    return AlsParams(
        factors=settings.als_factors,
        regularization=settings.als_regularization,
        alpha=settings.als_alpha,
        iterations=settings.als_iterations,
        scaling=settings.als_scaling,
    )
