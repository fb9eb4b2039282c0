"""Training from Redis: read interactions, train, evaluate against baselines, publish.

The evaluation gate holds out ``GATE_FRACTION`` of the papers of every reader with at
least 5 and trains the candidate on the rest; the published model is exactly the model
that was evaluated (readers' vectors are folded in from *all* their interactions at
serving time, so nothing a reader did is lost to the hold-out). It is published only if
its nDCG@k beats the popularity baseline and is not worse than the current model's on
the same hold-out by more than ``gate_tolerance`` (relative).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.catalog.papers import Paper
from paperfeed.recsys import evaluate
from paperfeed.recsys.content import FloatArray, paper_text
from paperfeed.recsys.matrix import Indexer, build_matrix, cell_weight, confidence
from paperfeed.recsys.model import AlsParams, RecModel, build_model
from paperfeed.recsys.ranker import BlendParams
from paperfeed.recsys.repository import ModelRepository
from paperfeed.settings import Settings
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)

GATE_FRACTION = 0.1
GATE_K = 20
GATE_MAX_USERS = 1_000
USERS_CHUNK = 500

Progress = Callable[[str, int, int], None]


class Cell(msgspec.Struct):
    """The two fields of a reader's per-paper record that training reads."""

    w: float = 0.0
    f: int = 0


decode_cell = msgspec.json.Decoder(Cell).decode


class Interactions(msgspec.Struct):
    user_ids: list[str]
    item_ids: list[str]
    item_texts: list[str]
    weights: sparse.csr_matrix
    """(n_users, n_items) float32: event confidence, -1 for dismissed papers."""


class TrainReport(msgspec.Struct, kw_only=True):
    published: bool
    version: str | None
    reason: str
    metrics: dict[str, dict[str, float]]
    users: int
    papers: int
    interactions: int
    seconds: float
    stages: dict[str, float] = msgspec.field(default_factory=dict)
    """Seconds spent in each stage (read, train, gate, fold-in, publish)."""


def als_params(settings: Settings) -> AlsParams:
    return AlsParams(
        factors=settings.als_factors,
        regularization=settings.als_regularization,
        alpha=settings.als_alpha,
        iterations=settings.als_iterations,
    )


async def read_interactions(redis: RedisClient, progress: Progress | None = None) -> Interactions:
    """Every reader's per-paper records, over the catalog's papers."""
    item_index = Indexer()
    texts: list[str] = []
    cursor = 0
    decode = msgspec.json.Decoder(Paper).decode
    while True:
        cursor, chunk = await redis.hscan(keys.PAPERS, cursor, count=5_000)
        assert isinstance(chunk, dict)
        for paper_id, raw in chunk.items():
            paper = decode(raw)
            item_index.add(str(paper_id))
            texts.append(paper_text(paper.title, paper.abstract))
        if cursor == 0:
            break
    user_ids = [str(u) for u in await redis.zrange(keys.USERS, 0, -1)]
    users = Indexer()
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for start in range(0, len(user_ids), USERS_CHUNK):
        chunk_ids = user_ids[start : start + USERS_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for user_id in chunk_ids:
                pipe.hgetall(keys.user_papers(user_id))
            records = await pipe.execute()
        for user_id, papers in zip(chunk_ids, records, strict=True):
            for paper_id, raw in papers.items():
                item = item_index.index.get(str(paper_id))
                if item is None:
                    continue
                record = decode_cell(raw)
                weight = cell_weight(record.w, record.f)
                if weight == 0:
                    continue  # impressions alone say nothing yet
                rows.append(users.add(user_id))
                cols.append(item)
                values.append(weight)
        if progress:
            progress("read users", min(start + USERS_CHUNK, len(user_ids)), len(user_ids))
    weights = build_matrix(rows, cols, values, (len(users), len(item_index)))
    return Interactions(users.ids, item_index.ids, texts, weights)


def production_scorer(
    model: RecModel, alpha: float, column_map: npt.NDArray[np.int64] | None = None
) -> evaluate.Scorer:
    """The feed's ranking as an evaluation scorer (trending = training popularity).

    ``column_map`` maps evaluation columns to the model's items (-1: unknown to it),
    for scoring a model trained on another item set (the current model).
    """
    popularity = model.item_counts.astype(np.float32)

    def score(users: npt.NDArray[np.int64], rows: sparse.csr_matrix) -> FloatArray:
        conf = confidence(rows, alpha)
        if column_map is None:
            scores, _ = model.rank(conf, model.item_factors, model.item_content, popularity)
            return scores
        known = column_map >= 0
        coo = conf.tocoo()
        keep = known[coo.col]  # papers newer than the model have no column in it
        remapped = sparse.csr_matrix(
            (coo.data[keep], (coo.row[keep], column_map[coo.col[keep]])),
            shape=(conf.shape[0], len(model.item_ids)),
        )
        mapped = column_map[known]
        ranked, _ = model.rank(
            remapped, model.item_factors[mapped], model.item_content[mapped], popularity[mapped]
        )
        full = np.full((rows.shape[0], len(column_map)), -np.inf, dtype=np.float32)
        full[:, known] = ranked
        return full

    return score


def gate_users(test: sparse.csr_matrix, seed: int) -> sparse.csr_matrix:
    """At most GATE_MAX_USERS readers of the hold-out (the gate must stay cheap)."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if len(users) <= GATE_MAX_USERS:
        return test
    keep = np.random.default_rng(seed).choice(users, GATE_MAX_USERS, replace=False)
    mask = np.zeros(test.shape[0], dtype=bool)
    mask[keep] = True
    return sparse.diags(mask.astype(np.float32)).dot(test).tocsr()


async def train_and_publish(
    redis: RedisClient,
    settings: Settings,
    progress: Progress | None = None,
    blend: BlendParams | None = None,
    seed: int = 0,
) -> TrainReport:
    started = time.perf_counter()
    stages: dict[str, float] = {}
    mark = started

    def stage(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = round(now - mark, 3)
        mark = now

    repository = ModelRepository(redis, settings.models_kept)
    data = await read_interactions(redis, progress)
    stage("read")
    n_users, n_items = data.weights.shape
    summary = {"users": n_users, "papers": n_items, "interactions": int(data.weights.nnz)}
    positives = data.weights.copy()
    positives.data = np.maximum(positives.data, 0)
    positives.eliminate_zeros()
    train_weights, test = evaluate.warm_split(data.weights, seed=seed, fraction=GATE_FRACTION)
    test.data = np.maximum(test.data, 0)  # a dismissed paper is no hit to find
    test.eliminate_zeros()
    test = gate_users(test, seed)
    if n_users < 2 or test.nnz == 0:
        return TrainReport(
            published=False,
            version=None,
            reason="not enough interactions to train and evaluate a model",
            metrics={},
            seconds=time.perf_counter() - started,
            **summary,
        )
    params = als_params(settings)
    model, user_factors = build_model(
        confidence(train_weights, params.alpha),
        data.item_ids,
        data.item_texts,
        params,
        blend or BlendParams(),
        progress=(lambda stage, step: progress(stage, step, params.iterations))
        if progress
        else None,
    )
    stage("train")
    metrics = {
        "candidate": evaluate.ranking_metrics(
            production_scorer(model, params.alpha), train_weights, test, GATE_K
        ),
        "popularity": evaluate.ranking_metrics(
            evaluate.popularity_scorer(train_weights), train_weights, test, GATE_K
        ),
    }
    current_version = await repository.current_version()
    if current_version:
        try:
            current = await repository.load(current_version)
            column_map = np.array([current.index.get(pid, -1) for pid in data.item_ids])
            metrics["current"] = evaluate.ranking_metrics(
                production_scorer(current, current.meta.als.alpha, column_map),
                train_weights,
                test,
                GATE_K,
            )
        except LookupError:
            log.warning("current model is gone; gating against popularity only")
    model.meta.metrics = {
        name: {"recall": float(m.recall), "ndcg": float(m.ndcg), "users": float(m.users)}
        for name, m in metrics.items()
    }
    stage("gate")
    reason = gate(metrics, settings.gate_tolerance)
    if reason:
        log.warning("model not published", extra={"reason": reason})
        return TrainReport(
            published=False,
            version=None,
            reason=reason,
            metrics=model.meta.metrics,
            seconds=time.perf_counter() - started,
            stages=stages,
            **summary,
        )
    # Readers' vectors from everything they did (the hold-out included), as the feed's
    # fold-in would compute them.
    user_vectors = model.refresh_users(confidence(data.weights, params.alpha), user_factors)
    stage("fold_in")
    model.meta.train_seconds = time.perf_counter() - started
    await repository.publish(model, data.user_ids, user_vectors)
    stage("publish")
    return TrainReport(
        published=True,
        version=model.version,
        reason="beats popularity"
        + (" and holds up against the current model" if current_version else ""),
        metrics=model.meta.metrics,
        seconds=time.perf_counter() - started,
        stages=stages,
        **summary,
    )


def gate(metrics: dict[str, evaluate.Metrics], tolerance: float) -> str | None:
    """Why the candidate must not be published, or None."""
    candidate = metrics["candidate"].ndcg
    if not np.isfinite(candidate):
        return "candidate metrics are not finite"
    if candidate <= metrics["popularity"].ndcg:
        return (
            f"candidate nDCG@{GATE_K} {candidate:.4f} does not beat popularity "
            f"{metrics['popularity'].ndcg:.4f}"
        )
    if "current" in metrics and candidate < metrics["current"].ndcg * (1 - tolerance):
        return (
            f"candidate nDCG@{GATE_K} {candidate:.4f} is worse than the current model's "
            f"{metrics['current'].ndcg:.4f} beyond the tolerance {tolerance:.0%}"
        )
    return None
