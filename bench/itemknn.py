"""The item-kNN build at the recommender bench's scale, against a bare ``implicit`` fit.

The matrix is made in memory the way ``bench.recommender`` loads it into Redis
(default: 100,000 readers, 50,000 papers on 50 topics, 50 papers a reader, 60% from
their first topic, most of the rest from their second; weights a view, a view and a
click, an upvote or a save). Then, in one run, alternating: ``itemknn.build`` (the
lists a training builds: ``PAPERFEED_ITEMKNN_NEIGHBOURS`` per paper) and a bare
``implicit`` fit with the default parameters (256 factors, 15 iterations), each
``--rounds`` times; and the two things the signal adds to a retraining's other stages,
timed on the same matrix: the item-kNN scores of 1,000 readers (the blend's validation
pools and the gate's rankings) and the lists' size in a model blob. Last, what the
signal adds to one feed's ranking, stage by stage (``--readers`` readers of the matrix,
each stage timed alone, compiled and reference): the sum of the reader's liked papers'
lists (``feed.Ops.rows_sum``), the pool's ``POOL`` newest scored and their best
``PERSONAL_CANDIDATES`` picked, the candidates' values gathered, and the reasons'
look-up of 50 returned papers in the lists of the reader's (up to 100) papers.

Run: ``OPENBLAS_NUM_THREADS=1 python -m bench.itemknn [--users N --papers N
--per-user N --rounds N --json OUT]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from bench.recommender import TOPICS, bare_fit_seconds
from paperfeed.events import SAVED, UPVOTED, confidence
from paperfeed.recsys import itemknn
from paperfeed.recsys.index import POOL
from paperfeed.recsys.matrix import build_matrix
from paperfeed.recsys.model import AlsParams
from paperfeed.serving import feed


def bench_matrix(users: int, papers: int, per_user: int, seed: int = 0) -> sparse.csr_matrix:
    """The interactions ``bench.recommender.load`` writes, as the trainer's matrix."""
    rng = random.Random(seed)
    by_topic = [list(range(t, papers, TOPICS)) for t in range(TOPICS)]
    kinds = [{"v": 1}, {"v": 1, "c": 1}, {"v": 1, "f": UPVOTED}, {"v": 1, "c": 1, "f": SAVED}]
    weight_of = [float(confidence(k.get("f", 0), k["v"], k.get("c", 0), 0.0)) for k in kinds]
    rows, cols, vals = [], [], []
    for u in range(users):
        favourite = rng.sample(range(TOPICS), 2)
        chosen: dict[int, float] = {}
        while len(chosen) < per_user:
            topic = (
                favourite[0]
                if rng.random() < 0.6
                else (favourite[1] if rng.random() < 0.7 else rng.randrange(TOPICS))
            )
            chosen[rng.choice(by_topic[topic])] = weight_of[rng.choice((0, 0, 1, 2, 3))]
        for paper, weight in chosen.items():
            rows.append(u)
            cols.append(paper)
            vals.append(weight)
    return build_matrix(rows, cols, vals, (users, papers))


def feed_stages(
    weights: sparse.csr_matrix, lists: sparse.csr_matrix, readers: int
) -> dict[str, dict[str, float]]:
    """Milliseconds a reader (mean) of each stage the signal adds to a ranking."""
    rng = np.random.default_rng(1)
    n = lists.shape[0]
    pool = rng.permutation(n)[:POOL].astype(np.int64)  # the newest, here any 10,000
    out: dict[str, dict[str, float]] = {}
    for name, ops in (("compiled", feed.COMPILED), ("reference", feed.REFERENCE)):
        stages = ("sum of lists", "pool best", "candidates' values", "reasons' look-up")
        took: dict[str, list[float]] = {stage: [] for stage in stages}
        for reader in rng.choice(weights.shape[0], readers, replace=False).tolist():
            history = itemknn.history_rows(weights[reader].indices.astype(np.int64))
            clock = time.perf_counter()
            knn = ops.rows_sum(lists, history)
            took["sum of lists"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            by_pool = knn[pool]
            picked = feed.best(by_pool, feed.PERSONAL_CANDIDATES)
            picked = pool[picked[by_pool[picked] > 0]]
            took["pool best"].append(time.perf_counter() - clock)
            candidates = np.unique(np.concatenate([picked, rng.choice(n, 700)]))
            clock = time.perf_counter()
            knn[candidates].astype(np.float32)
            took["candidates' values"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            itemknn.pair_similarity(lists, candidates[:50], history[:100])
            took["reasons' look-up"].append(time.perf_counter() - clock)
        out[name] = {k: round(float(np.mean(v)) * 1000, 3) for k, v in took.items()}
        out[name]["total"] = round(sum(out[name].values()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--papers", type=int, default=50_000)
    parser.add_argument("--per-user", type=int, default=50)
    parser.add_argument("--neighbours", type=int, default=itemknn.NEIGHBOURS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--readers", type=int, default=300)
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    started = time.perf_counter()
    weights = bench_matrix(args.users, args.papers, args.per_user)
    print(f"matrix {weights.shape}, {weights.nnz} cells, {time.perf_counter() - started:.1f} s")
    itemknn.build(weights[:2_000], args.neighbours)  # compile (or load) the kernel first
    params = AlsParams()
    builds, fits = [], []
    lists = None
    for _ in range(args.rounds):
        begun = time.perf_counter()
        lists = itemknn.build(weights, args.neighbours)
        builds.append(time.perf_counter() - begun)
        fits.append(bare_fit_seconds(weights, params))
        print(f"build {builds[-1]:.1f} s, bare fit {fits[-1]:.1f} s", flush=True)
    assert lists is not None
    rows = weights[np.random.default_rng(0).choice(weights.shape[0], 1_000, replace=False)]
    begun = time.perf_counter()
    itemknn.scores(rows, lists)
    scores_s = time.perf_counter() - begun
    feed.COMPILED.rows_sum(lists, np.arange(3, dtype=np.int64))  # compile first
    stages = feed_stages(weights, lists, args.readers)
    blob = io.BytesIO()
    np.savez(blob, indptr=lists.indptr, indices=lists.indices, data=lists.data)
    report: dict[str, Any] = {
        "users": args.users,
        "papers": args.papers,
        "interactions": int(weights.nnz),
        "neighbours": args.neighbours,
        "cores": os.cpu_count(),
        "build_seconds": [round(s, 2) for s in builds],
        "bare_fit_seconds": [round(s, 2) for s in fits],
        "build_over_fit": round(float(np.sum(builds) / np.sum(fits)), 4),
        "scores_of_1000_readers_seconds": round(scores_s, 2),
        "lists_mbytes": round(len(blob.getvalue()) / 2**20, 1),
        "lists_entries": int(lists.nnz),
        "feed_stages_ms": stages,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
