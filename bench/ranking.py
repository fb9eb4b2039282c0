"""One reader's exact ranking, stage by stage, in-process: the CPU a feed costs.

Against a Redis holding the recommender bench's data (``python -m bench.recommender``'s
loader and a published model; ``--load`` loads and trains first), this builds the
catalog index as an api process does, then ranks ``--readers`` readers: each stage of
the reference pipeline (``serving.feed``, numpy and scipy) timed alone, then the
compiled one (``recsys.kernels``) on the same readers, and checks that both return the
same papers in the same order with the same scores.

Run: ``python -m bench.ranking --redis-url redis://...`` (``--load`` the first time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
from scipy import sparse

from bench.recommender import load, training_seconds
from paperfeed.core import Core
from paperfeed.events import decode_user_paper
from paperfeed.recsys.index import CatalogIndex, TrendSnapshot
from paperfeed.serving import feed
from paperfeed.settings import load_settings
from paperfeed.store import keys


async def prepare(
    redis_url: str, readers: int
) -> tuple[CatalogIndex, TrendSnapshot, list[dict[str, str]]]:
    core = Core.connect(load_settings({}, redis_url=redis_url))
    await core.holder.refresh()
    index = core.holder.index
    assert index is not None
    assert index.model is not None, "no published model"
    trend = await core.holder.refresh_trend(time.time())
    records = []
    for u in range(readers):
        raw = await core.redis.hgetall(keys.user_papers(f"bench{u * 37:07d}"))
        records.append({str(k): str(v) for k, v in raw.items()})
    await core.close()
    return index, trend, records


def stages(
    index: CatalogIndex,
    trend: TrendSnapshot,
    raws: dict[str, str],
    now: float,
    limit: int,
    ops: feed.Ops,
) -> tuple[feed.Ranked, dict[str, float]]:
    """``feed.rank`` with ``ops``, each stage timed (the same calls, in the same order)."""
    took: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        at = time.perf_counter()
        took[name] = (at - clock) * 1000
        clock = at

    assert index.model is not None
    if ops is feed.REFERENCE:  # what the feed did before: an object a record, a sparse row
        records = {pid: decode_user_paper(raw) for pid, raw in raws.items()}
        reader = feed.reader_of(index, records)
        lap("decode records")
        rows = index.model_rows[reader.positions]
        keep = (rows >= 0) & (reader.weights != 0)
        row = sparse.csr_matrix(
            (reader.weights[keep], (np.zeros(int(keep.sum()), dtype=np.int64), rows[keep])),
            shape=(1, len(index.model.item_ids)),
        )
        vector = index.model.fold_in_reader(row) if reader.positives else None
    else:
        reader = feed.reader_of_stored(index, raws)
        lap("decode records")
        vector = feed.fold_in(index.model, index, reader) if reader.positives else None
    lap("fold-in")
    text_profile = feed.profile(index, reader, ops)
    lap("text profile")
    knn = feed.neighbour_scores(index, reader, ops) if vector is not None else None
    lap("item-kNN (when the model weighs it)")
    found = feed.candidates(index, trend, vector, text_profile, reader.hidden, ops, knn=knn)
    lap("candidates")
    table = feed.signals_of(index, trend, found, vector, text_profile, ops, knn)
    final, signals, ages = feed.scores(index, table, reader, now, ops=ops)
    lap("scores")
    chosen = np.argsort(-final, kind="stable")[:limit]
    lap("top-k")
    why = feed.reasons(index, reader, table, chosen, signals, ages, ops)
    lap("reasons")
    return feed.Ranked(found[chosen], final[chosen], why, vector, table), took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--readers", type=int, default=300)
    parser.add_argument("--limit", type=int, default=feed.CACHE_DEPTH)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--load",
        action="store_true",
        help="first load the recommender bench's data (100k readers, 50k papers, 5M "
        "interactions) into that Redis and publish a model (a few minutes)",
    )
    args = parser.parse_args()
    if args.load:
        started = time.perf_counter()
        asyncio.run(load(args.redis_url, 100_000, 50_000, 50, 0))
        print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)
        seconds, _ = asyncio.run(training_seconds(args.redis_url, search=False))
        print(f"model trained and published in {seconds:.0f} s", flush=True)
    index, trend, readers = asyncio.run(prepare(args.redis_url, args.readers))
    now = time.time()
    print(f"index of {len(index)} papers; {len(readers)} readers", flush=True)
    kinds = {"reference": feed.REFERENCE, "compiled": feed.COMPILED}
    for raws in readers[:5]:  # warm-up (and the kernels' compilation)
        for ops in kinds.values():
            stages(index, trend, raws, now, args.limit, ops)
    timings: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in kinds}
    results: dict[str, list[feed.Ranked]] = {k: [] for k in kinds}
    whole: dict[str, list[float]] = {k: [] for k in kinds}
    # Side by side: each reader ranked both ways, alternating which goes first.
    for n, raws in enumerate(readers):
        order = list(kinds) if n % 2 == 0 else list(kinds)[::-1]
        for kind in order:
            ranked, took = stages(index, trend, raws, now, args.limit, kinds[kind])
            results[kind].append(ranked)
            for name, ms in took.items():
                timings[kind][name].append(ms)
            whole[kind].append(sum(took.values()))
    # A feed after impressions: the kept table re-sorted (``finish``), per reader.
    resort_ms = []
    for raws, ranked in zip(readers, results["compiled"], strict=True):
        if ranked.table is None:
            continue
        started = time.perf_counter()
        reader = feed.reader_of_stored(index, raws)
        feed.finish(index, reader, ranked.table, args.limit, now)
        resort_ms.append((time.perf_counter() - started) * 1000)
    same = sum(
        a.positions.tolist() == b.positions.tolist()
        and np.allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        and a.reasons == b.reasons
        for a, b in zip(results["reference"], results["compiled"], strict=True)
    )
    report: dict[str, Any] = {
        "papers": len(index),
        "readers": len(readers),
        "same_ranking": f"{same} of {len(readers)}",
    }
    for kind in kinds:
        report[f"{kind}_stages_ms"] = {
            k: round(float(np.mean(v)), 3) for k, v in timings[kind].items()
        }
        report[f"{kind}_rank_ms"] = round(float(np.mean(whole[kind])), 3)
    report["resort_after_impressions_ms"] = round(float(np.mean(resort_ms)), 3)
    report["compiled_over_reference"] = round(
        report["compiled_rank_ms"] / report["reference_rank_ms"], 3
    )
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
