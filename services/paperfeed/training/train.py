"""Training from Redis: read interactions, learn, judge fairly, publish if better.

The gate compares the candidate, the current model and popularity on interactions
that neither model was trained on:

- With a current model: each reader's papers liked since the current model's cut-off
  (``data_until``: the newest like it learned from), by the time the service *received*
  the like (``Interactions.received_at``), never the time the client gave it: an offline
  queue or an imported history sends events dated days back, after the model was
  trained, and the model never saw them. Readers who also liked papers before it keep
  those as their history; readers new since then keep their older ``1 - GATE_SHARE``
  (by their own times) as history. At most ``GATE_MAX_READERS`` readers.
- The random hold-out: ``GATE_SHARE`` of the papers of readers with at least 3, picked
  at random. The current model was trained on those, so it is not compared; popularity
  is. It is judged on without a current model, with fewer than ``GATE_MIN_READERS``
  readers with new interactions, or when the new interactions cannot tell models apart:
  fewer than ``GATE_MIN_INFORMATIVE`` of their readers have a judged paper in the top
  ``GATE_K`` of the current model or of popularity (a reader nobody hits scores 0 for
  every model; a judgement of zeros refused every candidate, and kept a model of a few
  readers serving everyone). That is known before training (the judged model must not
  see the cells it is judged on); the candidate's own hits could only matter where the
  current model scores about 0, and there it cannot fall below it.

The candidate that is judged is trained on everything but the judged cells; the one
published learns from every interaction (``learn.learn``). Rules (``gate``):

- the candidate must beat popularity clearly: by more than ``GATE_SIGNIFICANCE``
  standard errors of the per-reader paired difference of nDCG@20. When it learned from
  at least ``GATE_GROWTH`` times the readers the current model did, a tie is enough
  (not below popularity by that margin): the data, not the judgement, says it is the
  better model of today's readers;
- judged on new interactions, it must not fall below the current model by more than
  ``PAPERFEED_GATE_TOLERANCE`` (relative) and by a margin the choice of judged readers
  would rarely make (``GATE_SIGNIFICANCE`` standard errors);
- with fewer than ``GATE_MIN_READERS`` judged readers there is too little to judge: the
  candidate is published (a small deployment needs its model to follow new readers and
  papers), and the decision says so. That includes none at all: no reader liked enough
  papers to hold some out (a few readers of two papers each) is a decision like the
  others, never an error.

Every decision, published or not, is kept (``ModelRepository.decisions``), with the rule
that decided it (``Decision.rule``) and why new interactions were not judged on when
they were not (``Decision.fallback``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.affinity import Affinity
from paperfeed.recsys.content import Tokens, tokenize
from paperfeed.recsys.matrix import drop_cells, positives
from paperfeed.recsys.model import AlsParams, Choices, RecModel
from paperfeed.recsys.repository import ModelRepository
from paperfeed.settings import Settings
from paperfeed.store.client import RedisClient
from paperfeed.training import evaluate, learn
from paperfeed.training.data import Interactions, read_interactions

log = logging.getLogger(__name__)

GATE_K = 20
GATE_SHARE = 0.2
GATE_MAX_READERS = 500
GATE_MIN_READERS = 20
GATE_MIN_INFORMATIVE = 20
"""New interactions are judged on only when the current model or popularity ranks a
judged paper in its top ``GATE_K`` for at least this many of their readers."""
GATE_GROWTH = 2.0
"""A candidate that learned from this many times the current model's readers passes
the popularity rule on a tie."""
GATE_SIGNIFICANCE = 2.0
USERS_CHUNK = 500

Progress = Callable[[str, int, int], None]
FloatArray64 = npt.NDArray[np.float64]
JudgedOn = Literal["new", "random", "none"]
Rule = Literal[
    "not_enough_data",
    "nothing_to_judge",
    "too_few_readers",
    "not_finite",
    "below_popularity",
    "worse_than_current",
    "beats_popularity",
    "ties_popularity_grown",
]
"""Which rule decided (``gate``): the first three publish nothing or publish unjudged;
``below_popularity`` and ``worse_than_current`` refuse; ``beats_popularity`` and
``ties_popularity_grown`` (a tie, from ``GATE_GROWTH`` times the readers) publish, and
judged on new interactions the candidate also held up against the current model."""


class Decision(msgspec.Struct, kw_only=True):
    """One training run's outcome: what was judged, how, and what was published."""

    at: float
    published: bool
    version: str | None
    """The candidate's version (the published one when ``published``)."""
    reason: str
    judged_on: JudgedOn = "none"
    """``new``: interactions received after the current model's cut-off; ``random``: a
    random hold-out (no current model, or new interactions too few or uninformative:
    ``fallback`` says which); ``none``: nothing."""
    rule: Rule | None = None
    """The rule that decided (``Rule``)."""
    fallback: str | None = None
    """With a current model, why the random hold-out was judged on instead of new
    interactions (too few readers with new interactions, or too few of them hit by the
    current model or popularity)."""
    judged_readers: int = 0
    new_readers: int = 0
    """Readers with interactions received after the current model's cut-off (up to
    ``GATE_MAX_READERS``), judged on or not."""
    informative_readers: int | None = None
    """Of the readers judged on new interactions, those with a judged paper in the top
    ``GATE_K`` of the current model or popularity (``GATE_MIN_INFORMATIVE`` needed)."""
    growth: float | None = None
    """Readers the candidate learned from over the current model's."""
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
    """Seconds spent in each stage (read, prepare, learn, gate, publish), and within
    learn in each of its own (``learn.<name>``, the names of ``learn.STAGES``)."""
    searched: bool = False
    """Whether this run searched the ALS hyperparameters."""
    choices: Choices | None = None


def counted(n: int, thing: str) -> str:
    """``n`` things, in words ("1 reader", "2 readers")."""
    return f"{n} {thing}" + ("" if n == 1 else "s")


def new_cells(data: Interactions, since: float, seed: int) -> sparse.csr_matrix:
    """Each reader's liked papers received after ``since`` (for a reader new since then,
    their latest ``GATE_SHARE`` by their own times), at most ``GATE_MAX_READERS``
    readers picked at random."""
    rng = np.random.default_rng(seed)
    liked, first, received = _liked_cells(data)
    mask = np.zeros(liked.nnz, dtype=bool)
    judged = 0
    for reader in rng.permutation(liked.shape[0]):
        start, end = liked.indptr[reader], liked.indptr[reader + 1]
        if end - start < 2:
            continue
        # New to the current model: received after its cut-off (a client's own time
        # may be days back: an offline queue, an imported history).
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
    return _cells(liked, mask)


def random_cells(data: Interactions, seed: int) -> sparse.csr_matrix:
    """``GATE_SHARE`` of the liked papers of up to ``GATE_MAX_READERS`` readers with at
    least 3, picked at random."""
    rng = np.random.default_rng(seed + 1)
    liked = positives(data.weights)
    liked.sort_indices()
    mask = np.zeros(liked.nnz, dtype=bool)
    eligible = np.flatnonzero(np.diff(liked.indptr) >= 3)
    for reader in rng.permutation(eligible)[:GATE_MAX_READERS]:
        start, end = liked.indptr[reader], liked.indptr[reader + 1]
        take = max(1, round(GATE_SHARE * (end - start)))
        mask[start + rng.choice(end - start, size=take, replace=False)] = True
    return _cells(liked, mask)


def informative_readers(metrics: dict[str, evaluate.Metrics]) -> int:
    """Judged readers with a judged paper in the top ``GATE_K`` of at least one of the
    rankings: the only ones whose scores can tell two models apart."""
    hit = [np.array(m.per_user_ndcg) > 0 for m in metrics.values() if m.per_user_ndcg]
    return int(np.logical_or.reduce(hit).sum()) if hit else 0


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
    metrics: dict[str, evaluate.Metrics],
    judged_on: JudgedOn,
    readers: int,
    tolerance: float,
    growth: float | None = None,
) -> tuple[bool, str, Rule]:
    """(publish?, why, the rule that decided). No ``candidate`` metrics: nothing could be
    judged. ``growth``: the readers the candidate learned from over the current model's
    (None without a current model)."""
    if "candidate" not in metrics:
        return (
            True,
            f"too few readers to judge (none of the {GATE_MIN_READERS} needed: no reader "
            "liked enough papers to hold some out): published as the model of everything "
            "read so far",
            "nothing_to_judge",
        )
    candidate = metrics["candidate"].ndcg
    if not np.isfinite(candidate):
        return False, "candidate metrics are not finite", "not_finite"
    if readers < GATE_MIN_READERS:
        return (
            True,
            f"too few readers to judge ({readers} < {GATE_MIN_READERS}): published as the "
            "model of everything read so far",
            "too_few_readers",
        )
    popularity = metrics["popularity"].ndcg
    grown = growth is not None and growth >= GATE_GROWTH
    rule: Rule = "beats_popularity"
    if not significantly_worse(metrics["popularity"], metrics["candidate"]):
        below = significantly_worse(metrics["candidate"], metrics["popularity"])
        if not grown or below:
            return (
                False,
                f"candidate nDCG@{GATE_K} {candidate:.4f} "
                + ("is below" if grown else "does not beat")
                + f" popularity {popularity:.4f} clearly (on {readers} readers"
                + (f"; learned from {growth:.1f}x the current model's readers" if grown else "")
                + ")",
                "below_popularity",
            )
        rule = "ties_popularity_grown"
    versus = (
        f"ties popularity ({candidate:.4f} against {popularity:.4f}) having learned from "
        f"{growth:.1f}x the current model's readers"
        if rule == "ties_popularity_grown"
        else "beats popularity"
    )
    if "current" in metrics and judged_on == "new":
        current = metrics["current"].ndcg
        if candidate < current * (1 - tolerance) and significantly_worse(
            metrics["candidate"], metrics["current"]
        ):
            return (
                False,
                f"candidate nDCG@{GATE_K} {candidate:.4f} is worse than the current model's "
                f"{current:.4f} beyond the tolerance {tolerance:.0%} (on {readers} readers' "
                "new interactions)",
                "worse_than_current",
            )
        return (
            True,
            f"{versus} and holds up against the current model on {readers} readers' "
            "new interactions",
            rule,
        )
    if judged_on == "random" and "current" in metrics:
        return (
            True,
            f"{versus} on a random hold-out of {readers} readers (new interactions could "
            "not judge it against the current model)",
            rule,
        )
    return True, f"{versus} on a random hold-out of {readers} readers", rule


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
                "not enough interactions to train a model "
                f"({counted(readers_with_data, 'reader')} with a liked paper; "
                f"{settings.train_min_readers} needed)"
            ),
            rule="not_enough_data",
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
    tokens = await asyncio.to_thread(tokenize, data.item_texts)
    choice = await asyncio.to_thread(_choose_judged, data, tokens, current, since, seed)
    judged, judged_on, judgement = choice.cells, choice.judged_on, choice.judgement
    judged_readers = int((np.diff(judged.indptr) > 0).sum())
    growth = (
        round(n_users / current.meta.n_users, 3)
        if current is not None and current.meta.n_users > 0
        else None
    )

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
        neighbours=settings.itemknn_neighbours,
        authors=data.item_authors,
    )
    stage("learn")
    stages.update({f"learn.{step}": seconds for step, seconds in learned.seconds.items()})
    if due and learned.model.meta.choices.search is not None:
        await repository.record_search(learned.model.meta.choices.search)

    metrics: dict[str, evaluate.Metrics] = {}
    if judged.nnz:
        metrics = await asyncio.to_thread(judgement.all, learned, current)
    stage("gate")
    publish, reason, rule = gate(
        metrics, judged_on, judged_readers, settings.gate_tolerance, growth
    )
    informative = choice.informative
    if judged_on == "new":
        informative = informative_readers(
            {name: m for name, m in metrics.items() if name in ("current", "popularity")}
        )
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
        rule=rule,
        fallback=choice.fallback,
        judged_readers=judged_readers,
        new_readers=choice.new_readers,
        informative_readers=informative,
        growth=growth,
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


class Judgement:
    """Rankings of the judged cells (each reader's history: everything else they liked),
    kept by name: the current model and popularity may be ranked before the candidate is
    trained (to know whether new interactions can tell models apart) and are not ranked
    again. Every model gets the same history and the same trending proxy (the papers'
    counts in that history, what the candidate is trained with)."""

    def __init__(self, data: Interactions, tokens: Tokens, judged: sparse.csr_matrix) -> None:
        self.item_ids = data.item_ids
        self.tokens = tokens
        self.history = drop_cells(data.weights, judged)
        self.judged = evaluate.sample_users(judged, GATE_MAX_READERS, 0)
        self.trending = np.bincount(
            positives(self.history).indices, minlength=self.history.shape[1]
        ).astype(np.float64)
        self.metrics: dict[str, evaluate.Metrics] = {}

    def popularity(self) -> evaluate.Metrics:
        if "popularity" not in self.metrics:
            self.metrics["popularity"] = evaluate.ranking_metrics(
                evaluate.popularity_scorer(self.history), self.history, self.judged, GATE_K
            )
        return self.metrics["popularity"]

    def model(
        self, name: str, model: RecModel, text: sparse.csr_matrix,
        affinity: Affinity | None = None,
    ) -> evaluate.Metrics:  # fmt: skip
        """``model``'s production ranking (``affinity``: the papers' authors and topics,
        for a blend that weighs the follow affinity)."""
        if name not in self.metrics:
            view = learn.column_view(model, self.item_ids, text, affinity=affinity)
            self.metrics[name] = evaluate.ranking_metrics(
                learn.production_scorer(view, self.trending), self.history, self.judged, GATE_K
            )
        return self.metrics[name]

    def all(self, learned: learn.Learned, current: RecModel | None) -> dict[str, evaluate.Metrics]:
        """Candidate, current model (when there is one) and popularity."""
        candidate = learned.judge_model
        assert candidate is not None, "learn() judges when given judged cells"
        # The papers' authors and topics are the data's: the same for both models.
        affinity = learned.affinity
        out = {"candidate": self.model("candidate", candidate, learned.text, affinity)}
        if current is not None:
            # A catalog that did not change gives the same features: no need to encode again.
            same = current.text.same_as(candidate.text)
            text = learned.text if same else current.text.vectors(self.tokens)
            out["current"] = self.model("current", current, text, affinity)
        out["popularity"] = self.popularity()
        return out


@dataclass
class JudgedChoice:
    """The cells the gate judges on, how they were chosen, and why."""

    cells: sparse.csr_matrix
    judged_on: JudgedOn
    judgement: Judgement
    fallback: str | None = None
    new_readers: int = 0
    informative: int | None = None


def _choose_judged(
    data: Interactions, tokens: Tokens, current: RecModel | None, since: float | None, seed: int
) -> JudgedChoice:
    """New interactions when there are enough readers of them and they can tell models
    apart (``GATE_MIN_INFORMATIVE`` readers hit by the current model or popularity:
    popularity is ranked first, the current model only when popularity alone does not
    reach it), else the random hold-out (see the module doc)."""
    fallback: str | None = None
    new_readers = 0
    informative: int | None = None
    if current is not None and since is not None:
        new = new_cells(data, since, seed)
        new_readers = int((np.diff(new.indptr) > 0).sum())
        if new_readers < GATE_MIN_READERS:
            fallback = f"too few readers with new interactions ({new_readers} < {GATE_MIN_READERS})"
        else:
            judgement = Judgement(data, tokens, new)
            informative = informative_readers({"popularity": judgement.popularity()})
            if informative < GATE_MIN_INFORMATIVE:
                judgement.model("current", current, current.text.vectors(tokens))
                informative = informative_readers(judgement.metrics)
            if informative >= GATE_MIN_INFORMATIVE:
                return JudgedChoice(
                    cells=new, judged_on="new", judgement=judgement, new_readers=new_readers
                )
            fallback = (
                f"the new interactions of {counted(new_readers, 'reader')} cannot tell models "
                "apart: "
                f"the current model and popularity hit {informative} of them in their top "
                f"{GATE_K} ({GATE_MIN_INFORMATIVE} needed)"
            )
    cells = random_cells(data, seed)
    return JudgedChoice(
        cells=cells,
        judged_on="random" if cells.nnz else "none",
        judgement=Judgement(data, tokens, cells),
        fallback=fallback,
        new_readers=new_readers,
        informative=informative,
    )


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
