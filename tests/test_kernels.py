"""The feed's compiled ranking (``recsys.kernels`` through ``feed.COMPILED``, records
decoded in one pass, the fold-in without a sparse row) returns what the reference
pipeline (scipy, one object a record, ``feed.REFERENCE``) returns: the same papers in
the same order, the same scores to float rounding and the same reasons; on real data
(a citeulike-t sample) and on the recommender bench's synthetic catalog. The model
carries item-kNN lists and its blend weighs them: the signal's candidates, scores and
reasons are compared too."""

from __future__ import annotations

import gzip
import json
import random
import struct
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from scipy import sparse

from paperfeed.events import DISMISSED, SAVED, UPVOTED, decode_user_paper
from paperfeed.recsys import itemknn, kernels
from paperfeed.recsys.content import TextFeatures, tokenize
from paperfeed.recsys.index import (
    HOT_TODAY,
    HOT_WEEK,
    CatalogIndex,
    CatalogPaper,
    build_index,
    trend_snapshot,
)
from paperfeed.recsys.matrix import ConfidenceScale, build_matrix
from paperfeed.recsys.model import AlsParams, ModelMeta, RecModel, fit_als
from paperfeed.recsys.ranker import BlendParams
from paperfeed.serving import feed

SAMPLE = Path(__file__).parent / "fixtures" / "citeulike-t-sample"
NOW = 1_800_000_000.0
BLEND = BlendParams(content=0.6, content_slope=-0.2, trending=0.3, trending_slope=-0.5,
                    itemknn=0.8, itemknn_slope=0.25, cold_cf=0.7,
                    median_history=8.0)  # fmt: skip
NEIGHBOURS = 50


def citeulike() -> tuple[list[CatalogPaper], dict[str, list[str]]]:
    with gzip.open(SAMPLE / "items.jsonl.gz", "rt") as items:
        rows = [json.loads(line) for line in items]
    papers = [
        CatalogPaper(
            id=row["id"],
            title=row["title"] or row["abstract"][:60],
            abstract=row["abstract"],
            added_at=NOW - 86_400 * (n % 30),
        )
        for n, row in enumerate(rows)
    ]
    libraries: dict[str, list[str]] = defaultdict(list)
    with gzip.open(SAMPLE / "interactions.tsv.gz", "rt") as pairs:
        next(pairs)
        for line in pairs:
            user, item = line.split()
            libraries[user].append(item)
    return papers, libraries


def synthetic(
    n_papers: int = 4_000, n_readers: int = 600
) -> tuple[list[CatalogPaper], dict[str, list[str]]]:
    """The bench's catalog (``bench.recommender``): 50 topics of 40 words, 60 common words."""
    from bench.recommender import TOPICS, topic_words

    rng = random.Random(0)
    words = topic_words(rng)
    common = [f"c{w}" for w in range(300)]
    papers = []
    for n in range(n_papers):
        topic = n % TOPICS
        text = rng.choices(words[topic], k=40) + rng.choices(common, k=60)
        title = " ".join(rng.choices(words[topic], k=8))
        papers.append(
            CatalogPaper(
                id=f"s{n}", title=title, abstract=" ".join(text), added_at=NOW - 3_600 * (n % 500)
            )
        )
    libraries = {}
    for u in range(n_readers):
        favourite = rng.sample(range(TOPICS), 2)
        libraries[f"r{u}"] = [
            f"s{rng.randrange(n_papers // TOPICS) * TOPICS + rng.choice(favourite)}"
            for _ in range(rng.randrange(3, 60))
        ]
    return papers, libraries


def model_and_index(
    papers: list[CatalogPaper], libraries: dict[str, list[str]], blend: BlendParams = BLEND
) -> CatalogIndex:
    """A model trained on most of the papers (the rest stay cold, as new papers are),
    with item-kNN lists."""
    column = {p.id: n for n, p in enumerate(papers[: len(papers) * 9 // 10])}
    rows, cols = [], []
    for u, library in enumerate(libraries.values()):
        for pid in library:
            if pid in column:
                rows.append(u)
                cols.append(column[pid])
    weights = build_matrix(rows, cols, [1.0] * len(rows), (len(libraries), len(column)))
    params = AlsParams(factors=32, iterations=4, regularization=1.0, alpha=10.0)
    scale = ConfidenceScale(params.alpha)
    _, items = fit_als(scale(weights), params)
    known = [p for p in papers if p.id in column]
    features = TextFeatures.fit(tokenize([p.abstract for p in known]), kinds=["words"])["words"]
    meta = ModelMeta(version="k", trained_at=NOW, als=params, blend=blend, format=2,
                     neighbours=NEIGHBOURS)  # fmt: skip
    counts = np.bincount(weights.indices, minlength=len(column)).astype(np.float64)
    lists = itemknn.build(weights, NEIGHBOURS)
    model = RecModel(meta, list(column), items, counts, features, scale, lists)
    return build_index(papers, model, "1")


def records_of(library: list[str], rng: random.Random) -> dict[str, str]:
    """A reader's stored records (the earlier JSON layout, read by both decoders): views,
    clicks, flags, dwell and impressions, some papers only shown, some dismissed."""
    out: dict[str, str] = {}
    for pid in library:
        flags = rng.choice([0, 0, UPVOTED, SAVED, UPVOTED | SAVED, DISMISSED])
        record = {"f": flags, "v": rng.choice([0, 1, 1, 2]), "c": rng.choice([0, 0, 1]),
                  "i": rng.choice([0, 0, 1, 3]), "dw": float(rng.choice([0, 0, 45_000])),
                  "t": NOW - 3_600}  # fmt: skip
        out[pid] = msgspec.json.encode(record).decode()
    return out


def reference_rank(
    index: CatalogIndex, trend: Any, raws: dict[str, str], limit: int
) -> tuple[feed.Ranked, Any]:
    """The pipeline as it was: an object a record, a sparse row folded in, scipy."""
    reader = feed.reader_of(index, {p: decode_user_paper(r) for p, r in raws.items()})
    assert index.model is not None
    vector = None
    if reader.positives:
        rows = index.model_rows[reader.positions]
        keep = (rows >= 0) & (reader.weights != 0)
        row = sparse.csr_matrix(
            (reader.weights[keep], (np.zeros(int(keep.sum()), dtype=np.int64), rows[keep])),
            shape=(1, len(index.model.item_ids)),
        )
        vector = index.model.fold_in_reader(row)
    return feed.rank(index, trend, reader, vector, limit, NOW, feed.REFERENCE), vector


@pytest.mark.parametrize("data", ["citeulike-t", "synthetic"])
def test_the_compiled_ranking_is_the_reference_ranking(data: str) -> None:
    papers, libraries = citeulike() if data == "citeulike-t" else synthetic()
    index = model_and_index(papers, libraries)
    rng = random.Random(1)
    hot = rng.sample([p.id for p in papers], 400)
    week = [(pid, float(rng.paretovariate(1.2))) for pid in hot]
    trend = trend_snapshot(index, week, week[:50], NOW)
    kernels.warm_up()
    readers = list(libraries.values())[:300]
    compared = with_vector = with_knn = 0
    for library in readers:
        raws = records_of(library, rng)
        ours = feed.rank_stored(index, trend, raws, None, 0, feed.CACHE_DEPTH, NOW)
        theirs, their_vector = reference_rank(index, trend, raws, feed.CACHE_DEPTH)
        assert ours.positions.tolist() == theirs.positions.tolist()
        np.testing.assert_allclose(ours.scores, theirs.scores, rtol=1e-5, atol=1e-6)
        assert ours.reasons == theirs.reasons
        if theirs.table is not None and ours.table is not None:
            assert np.array_equal(ours.table.itemknn, theirs.table.itemknn)
            with_knn += bool(theirs.table.itemknn.any())
        if their_vector is not None:
            assert ours.vector is not None
            np.testing.assert_allclose(ours.vector, their_vector, rtol=1e-5, atol=1e-6)
            with_vector += 1
        compared += len(theirs.positions)
    assert with_vector > 100  # most readers were folded in, not only trending
    assert with_knn > 100  # and the item-kNN signal was there for most of them
    assert compared > 100 * feed.CACHE_DEPTH


FOLLOW_LEARNED = msgspec.structs.replace(BLEND, follow=0.9)
WITHOUT_KNN = msgspec.structs.replace(BLEND, itemknn=0.0, cold_cf=1.0)


@pytest.mark.parametrize("blend", [BLEND, FOLLOW_LEARNED, WITHOUT_KNN])
def test_the_compiled_scores_are_the_reference_to_the_bit(blend: BlendParams) -> None:
    """Stage 3 (the blend, its standardisations and the rules) compiled is numpy's
    arithmetic to the last bit, for readers with and without a vector, follows (the
    learned weight, or the prior's lift and first-page floor), impressions, papers
    fresh or not, and a re-sort later in the week (ages, the fresh set and the median
    raise moved)."""
    from paperfeed.follows import StoredFollows, followed_papers

    papers, libraries = synthetic(n_papers=2_000, n_readers=300)
    # Authors, so that follows and the follow affinity have something to count.
    papers = [
        msgspec.structs.replace(p, authors=[f"Ada Writer{n % 53}", f"Bo Author{n % 31}"])
        for n, p in enumerate(papers)
    ]
    index = model_and_index(papers, libraries, blend)
    rng = random.Random(5)
    week = [(p.id, float(rng.paretovariate(1.2))) for p in rng.sample(papers, 300)]
    trend = trend_snapshot(index, week, week[:40], NOW)
    compared = followed_compared = 0
    for n, library in enumerate(list(libraries.values())[:80]):
        raws = records_of(library, rng)
        ranked = feed.rank_stored(index, trend, raws, None, 0, 10_000, NOW)
        if ranked.table is None:
            continue
        reader = feed.reader_of_stored(index, raws)
        follows = StoredFollows(authors=[f"Ada Writer{n % 53}"], topics={})
        for table in (ranked.table, ranked.table._replace(personal=False)):
            for now in (NOW, NOW + 3.4 * 86_400):
                followed = followed_papers(index, follows, now, feed.FRESH_DAYS)
                for follow in (feed.NOTHING_FOLLOWED, followed):
                    ours = feed.scores_compiled(index, table, reader, now, follow)
                    theirs = feed.scores_reference(index, table, reader, now, follow)
                    assert np.array_equal(ours[0], theirs[0])
                    assert np.array_equal(ours[2], theirs[2])
                    for name in ("cf", "content", "trending", "content_weight",
                                 "trending_weight"):  # fmt: skip
                        assert np.array_equal(getattr(ours[1], name), getattr(theirs[1], name))
                    assert (ours[1].itemknn is None) == (theirs[1].itemknn is None)
                    if theirs[1].itemknn is not None:
                        assert np.array_equal(ours[1].itemknn, theirs[1].itemknn)
                        assert np.array_equal(ours[1].itemknn_weight, theirs[1].itemknn_weight)
                    compared += len(theirs[0])
                    followed_compared += bool(len(follow.by_author))
    assert compared > 80 * 4 * 200
    assert followed_compared > 40


@pytest.mark.parametrize("data", ["citeulike-t", "synthetic", "small"])
def test_the_compiled_candidates_are_the_reference_candidates(data: str) -> None:
    """Stage 1 in one compiled pass finds the very positions numpy finds: the best 200
    of the pool by vector, text and item-kNN (ties by the lower position, item-kNN only
    above 0), the trending, newest and followed ones, less the hidden, ascending; also
    with a pool smaller than the picks, and with many tied scores."""
    papers, libraries = {
        "citeulike-t": citeulike, "synthetic": synthetic,
        "small": lambda: synthetic(n_papers=150, n_readers=200),
    }[data]()  # fmt: skip
    index = model_and_index(papers, libraries)
    assert index.model is not None
    rng = random.Random(7)
    week = [(p.id, float(rng.paretovariate(1.2))) for p in rng.sample(papers, len(papers) // 10)]
    trend = trend_snapshot(index, week, week[:50], NOW)
    compared = 0
    for n, library in enumerate(list(libraries.values())[:150]):
        reader = feed.reader_of_stored(index, records_of(library, rng))
        vector = feed.fold_in(index.model, index, reader) if reader.positives else None
        text_profile = feed.profile(index, reader)
        knn = feed.neighbour_scores(index, reader) if vector is not None else None
        if knn is not None and n % 3 == 0:
            knn = np.round(knn, 1)  # many ties at the 200th
        followed = feed.Followed(np.sort(rng.sample(range(len(index)), 5)).astype(np.int64), {})
        for hidden in (reader.hidden, np.concatenate([reader.hidden, index.newest[:30]])):
            ours = feed.candidates(index, trend, vector, text_profile, hidden, feed.COMPILED,
                                   followed, knn)  # fmt: skip
            theirs = feed.candidates(index, trend, vector, text_profile, hidden,
                                     feed.REFERENCE, followed, knn)  # fmt: skip
            assert ours.dtype == theirs.dtype
            assert ours.tolist() == theirs.tolist()
            compared += len(theirs)
    assert compared > 150 * min(len(index.pool), feed.PERSONAL_CANDIDATES)


def test_each_kernel_is_its_scipy_expression() -> None:
    """Bit for bit: the same additions in the same order, in float32."""
    rng = np.random.default_rng(0)
    text = sparse.random(300, 500, density=0.05, format="csr", dtype=np.float32, random_state=1)
    profile_terms = np.sort(rng.choice(500, 40, replace=False)).astype(np.int64)
    profile = feed.ReaderProfile(profile_terms, rng.random(40).astype(np.float32))
    by_term = sparse.csr_matrix(text.T)
    rows = rng.choice(300, 80, replace=False).astype(np.int64)
    anchors = rng.choice(300, 20, replace=False).astype(np.int64)
    weights = rng.random(80).astype(np.float32) * 3
    history = np.unique(anchors)
    # Candidate lists overlap, repeat positions and hide some that are not among them.
    parts = rng.choice(300, 200).astype(np.int64)
    hidden = np.concatenate([parts[:30], [299, 5]]).astype(np.int64)
    for name in ("similarity", "scores", "pairs", "terms", "union", "rows_sum"):
        compiled, reference = getattr(feed.COMPILED, name), getattr(feed.REFERENCE, name)
        args = {"similarity": (by_term, profile), "scores": (text, rows, profile),
                "pairs": (text, rows, anchors), "terms": (text, rows, weights),
                "union": (parts, hidden, 300), "rows_sum": (text, history)}[name]  # fmt: skip
        ours, theirs = compiled(*args), reference(*args)
        pairs = zip(ours, theirs, strict=True) if name == "terms" else [(ours, theirs)]
        for a, b in pairs:
            assert a.dtype == b.dtype, name
            assert np.array_equal(a, b), name
    assert len(feed.COMPILED.union(parts, hidden, 300)) < len(np.unique(parts))
    empty = np.zeros(0, np.int64)
    assert feed.COMPILED.union(empty, empty, 300).tolist() == []
    terms, sums = feed.COMPILED.terms(text, empty, np.zeros(0, np.float32))
    assert terms.tolist() == []
    assert sums.tolist() == []


def test_the_compiled_picks_are_best_s_with_ties_and_nan() -> None:
    """``kernels._mark_best`` marks what ``feed.best`` picks: ties at the threshold by the
    lower index, NaN never (numpy's partition puts it last; fewer numbers than picks:
    nothing, as ``best`` then finds no threshold)."""
    rng = np.random.default_rng(9)
    for trial in range(300):
        n = int(rng.integers(1, 400))
        scores = np.round(rng.standard_normal(n), int(rng.integers(0, 3))).astype(np.float32)
        if trial % 3 == 0:
            scores[rng.choice(n, int(rng.integers(1, n + 1)), replace=False)] = np.nan
        picks = int(rng.integers(1, 250))
        mark = np.zeros(n, dtype=np.uint8)
        kernels._mark_best(scores, picks, np.arange(n, dtype=np.int64), False, mark)
        assert np.flatnonzero(mark).tolist() == feed.best(scores, picks).tolist(), trial


def test_best_takes_the_highest_and_breaks_ties_by_position() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5, 0.9], dtype=np.float32)
    assert feed.best(scores, 3).tolist() == [0, 1, 5]
    assert feed.best(scores, 4).tolist() == [0, 1, 2, 5]
    assert feed.best(scores, 10).tolist() == list(range(6))


def test_the_kernels_run_without_the_gil() -> None:
    """Two rankings' text matches in two threads take about the time of one: the kernel
    releases the GIL (on a machine with one free core the check is vacuous; CI has two)."""
    import threading

    rng = np.random.default_rng(0)
    by_term = sparse.random(2_000, 20_000, density=0.05, format="csr", dtype=np.float32,
                            random_state=2)  # fmt: skip
    profile = feed.ReaderProfile(np.arange(0, 2_000, 4, dtype=np.int64),
                                 rng.random(500).astype(np.float32))  # fmt: skip
    feed.COMPILED.similarity(by_term, profile)
    holds_gil = []

    def spin() -> None:
        # Progress of a pure-Python loop while the other thread is in the kernel.
        count = 0
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            count += 1
        holds_gil.append(count)

    def kernel_loop() -> None:
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            kernels.postings_scores(by_term.indptr, by_term.indices, by_term.data,
                                    profile.terms, profile.weights, by_term.shape[1])  # fmt: skip

    spin()  # alone
    alone = holds_gil.pop()
    threads = [threading.Thread(target=kernel_loop), threading.Thread(target=spin)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # A kernel holding the GIL would leave the Python loop a fraction of its progress.
    assert holds_gil[0] > 0.3 * alone


def test_a_re_sort_after_impressions_is_the_full_ranking() -> None:
    """``finish`` on the kept candidate table, with the impressions since, gives what
    ranking the reader from scratch gives: the same papers, order, scores and reasons
    (impressions change no weight, so neither the vector, the text profile nor the
    candidates)."""
    papers, libraries = synthetic()
    index = model_and_index(papers, libraries)
    rng = random.Random(3)
    week = [(p.id, float(rng.paretovariate(1.2))) for p in rng.sample(papers, 300)]
    trend = trend_snapshot(index, week, week[:40], NOW)
    checked = 0
    for library in list(libraries.values())[:60]:
        raws = records_of(library, rng)
        before = feed.rank_stored(index, trend, raws, None, 0, feed.CACHE_DEPTH, NOW)
        assert before.table is not None
        # Cards shown since: some papers the reader has records of, some they had not.
        shown = [index.ids[p] for p in before.positions[:8]]
        later = dict(raws)
        for pid in shown:
            record = msgspec.json.decode(later[pid]) if pid in later else {"t": NOW - 60}
            record["i"] = record.get("i", 0) + 2
            later[pid] = msgspec.json.encode(record).decode()
        reader = feed.reader_of_stored(index, later)
        resorted = feed.finish(index, reader, before.table, feed.CACHE_DEPTH, NOW + 30)
        full = feed.rank_stored(index, trend, later, None, 0, feed.CACHE_DEPTH, NOW + 30)
        assert resorted.positions.tolist() == full.positions.tolist()
        assert np.array_equal(resorted.scores, full.scores)
        assert resorted.reasons == full.reasons
        checked += resorted.positions.tolist() != before.positions.tolist()
    assert checked > 10  # the penalties did reorder feeds


def test_the_candidate_table_fits_the_footprint_it_is_counted_for() -> None:
    from paperfeed.events import CANDIDATE_TABLE_BYTES
    from paperfeed.follows import FOLLOWED_CANDIDATES

    most = (
        feed.TRENDING_CANDIDATES
        + feed.TODAY_CANDIDATES
        + feed.RECENT_CANDIDATES
        + 3 * feed.PERSONAL_CANDIDATES  # by vector, by text and by item-kNN
        + FOLLOWED_CANDIDATES
    )
    n = np.arange(most, dtype=np.int64)
    f = n.astype(np.float32)
    table = feed.Table(n, f, f + 1, True, f + 2, (n % 4).astype(np.uint8), f + 3)
    encoded = feed.encode_table(table, (7, 9))
    assert len(encoded) + 200 <= CANDIDATE_TABLE_BYTES  # with the key and Redis's overhead
    decoded = feed.decode_table(encoded, (7, 9))
    assert decoded is not None
    for kept, made in zip(decoded, table, strict=True):
        assert np.array_equal(kept, made)
    assert feed.decode_table(encoded, (6, 9)) is None  # another index's positions
    assert feed.decode_table(encoded, (7, 4)) is None  # another feed's candidates
    # A table of the layout before the item-kNN signal (17 bytes a candidate, no format
    # byte) is a miss, even when its length would divide into the new layout's.
    old = struct.pack("<BQI", 1, 7, 9) + b"\0" * (17 * 5)
    assert (len(old) - struct.calcsize(feed.TABLE_HEAD)) % feed.TABLE_BYTES_EACH == 0
    assert feed.decode_table(old, (7, 9)) is None


def test_every_reason_is_true_of_the_data_that_produced_it() -> None:
    """Readers ranked on a known catalog; each reason of each returned paper checked
    against the data: "because you <verb> “<title>”" names one of the reader's papers
    with that action, close in text; "popular with readers like you" only a paper
    readers interacted with; trending and "new" reasons by the snapshot and the dates;
    "new in <topic>" a topic of the reader's own papers (issue 28, item 5); "readers of
    “<title>” also read it" names one of the reader's liked papers that another reader
    in the model's data liked with this one (issue 25)."""
    papers, libraries = synthetic()
    index = model_and_index(papers, libraries)
    rng = random.Random(5)
    week = [(p.id, float(rng.paretovariate(1.2))) for p in rng.sample(papers, 300)]
    trend = trend_snapshot(index, week, week[:40], NOW)
    model = index.model
    assert model is not None
    known = set(model.item_ids)
    libraries_of: dict[str, set[int]] = defaultdict(set)  # paper -> the readers who had it
    for number, library in enumerate(libraries.values()):
        for pid in library:
            libraries_of[pid].add(number)
    seen: set[str] = set()
    for library in list(libraries.values())[:80]:
        raws = records_of(library, rng)
        records = {pid: decode_user_paper(raw) for pid, raw in raws.items()}
        ranked = feed.rank_stored(index, trend, raws, None, 0, feed.CACHE_DEPTH, NOW)
        liked = {index.pos[pid]: record for pid, record in records.items() if record.w > 0
                 and not record.dismissed}  # fmt: skip
        own_topics = {int(index.topics.of_paper[p]) for p in liked} - {-1}
        for position, why in zip(ranked.positions.tolist(), ranked.reasons, strict=True):
            age = (NOW - index.dates[position]) / 86_400
            for reason in why:
                kind = reason.split(" “")[0] if reason.startswith("because") else reason
                seen.add(kind.split(" ")[0] if kind.startswith("new in") else kind)
                if reason.startswith("because you "):
                    verb, title = reason[len("because you ") :].split(" “", 1)
                    title = title.rstrip("”")
                    anchors = [p for p, record in liked.items() if index.titles[p] == title]
                    assert anchors, reason
                    assert any(feed.verb(liked[p]) == verb for p in anchors), reason
                    cosine = max(float((index.text[position] @ index.text[p].T).sum())
                                 for p in anchors)  # fmt: skip
                    assert cosine >= feed.ANCHOR_SIMILARITY - 1e-6, reason
                elif reason.startswith("readers of “"):
                    title = reason[len("readers of “") : -len("” also read it")]
                    anchors = [p for p in liked if index.titles[p] == title]
                    assert anchors, reason
                    assert not index.cold[position], index.ids[position]
                    paper = index.ids[position]
                    assert any(
                        index.ids[p] in known and libraries_of[index.ids[p]] & libraries_of[paper]
                        for p in anchors
                    ), reason
                    seen.add("readers of")
                elif reason == "popular with readers like you":
                    assert not index.cold[position], index.ids[position]
                elif reason == "trending today":
                    assert position in trend.today_top[:HOT_TODAY].tolist()
                elif reason == "trending this week":
                    assert position in trend.week_top[:HOT_WEEK].tolist()
                elif reason.startswith("new in "):
                    assert age <= feed.FRESH_DAYS
                    topic = int(index.topics.of_paper[position])
                    assert topic in own_topics
                    assert reason == f"new in {index.topics.names[topic]}"
                elif reason == "new today":
                    assert age < 1
                elif reason == "new this week":
                    assert age <= feed.FRESH_DAYS
                else:
                    assert reason in ("matches your interests", "trending"), reason
    # The check saw the reasons that matter, not only the fallbacks.
    assert "popular with readers like you" in seen
    assert "readers of" in seen
    assert any(k.startswith("because you ") for k in seen)
    assert seen & {"new", "new today", "new this week"}


def test_the_median_is_numpys() -> None:
    rng = np.random.default_rng(4)
    for n in [1, 2, 3, 8, 9, 700, 701, *rng.integers(1, 2_000, 200).tolist()]:
        values = (rng.pareto(1.2, n) * rng.random()).astype(np.float32)
        if n > 4:
            values[: n // 4] = 0.0  # ties at the middle, as trending has
        assert feed.median(values) == np.median(values)
        assert feed.median(values).dtype == np.float32
    assert feed.median(np.zeros(0, np.float32)) == 0.0


WARM_UP_CHECK = """
import random, sys
import msgspec, numba, numpy as np
from paperfeed.follows import StoredFollows
from paperfeed.recsys import artifact, kernels
from paperfeed.recsys.index import trend_snapshot
from paperfeed.serving import feed
from tests.test_kernels import NOW, model_and_index, records_of, synthetic

papers, libraries = synthetic(n_papers=1_500, n_readers=200)
papers = [msgspec.structs.replace(p, authors=[f"Ada Writer{n % 53}"]) for n, p in
          enumerate(papers)]
built = model_and_index(papers, libraries)
_, header, chunks = artifact.build(papers, built.model, "1", None, {})
index = artifact.decode(header, bytearray(b"".join(chunks)), built.model)  # as the api loads
kernels.warm_up()
def compiled():
    return {name: {str(s) for s in value.signatures} for name, value in vars(kernels).items()
            if isinstance(value, numba.core.registry.CPUDispatcher)}
before = compiled()
rng = random.Random(2)
week = [(p.id, float(rng.paretovariate(1.2))) for p in rng.sample(papers, 200)]
trend = trend_snapshot(index, week, week[:30], NOW)
for n, library in enumerate(list(libraries.values())[:40]):
    raws = records_of(library, rng)
    follows = StoredFollows(authors=[f"Ada Writer{n % 53}"] if n % 2 else [], topics={})
    ranked = feed.rank_stored(index, trend, raws, None, 0, feed.CACHE_DEPTH, NOW,
                              follows=follows)
    if ranked.table is not None:
        kept = feed.decode_table(feed.encode_table(ranked.table, (1, 2)), (1, 2))
        cached = feed.CachedFeed("s", None, [], [], [], feed.CACHE_DEPTH, 1)
        feed.resort_stored(index, raws, kept, cached, NOW + 60, follows, NOW)
new = {name: sorted(sigs - before.get(name, set())) for name, sigs in compiled().items()
       if sigs - before.get(name, set())}
print(new)
sys.exit(1 if new else 0)
"""


def test_warm_up_compiles_every_kernel_signature_that_serving_calls() -> None:
    """An api process warms its kernels up in the background when it starts; a ranking,
    a re-sort (on the event loop) or follows afterwards must find every kernel compiled
    for the very types it passes (numba compiles anew for another dtype, layout or a
    read-only array), on an index decoded from an artifact as the api loads it. A fresh
    process: the dispatchers hold only what it asked for."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", WARM_UP_CHECK],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_records_decode_in_one_pass_as_one_by_one() -> None:
    """``events.record_table`` (a decoder call a layout) gives each record's fields as
    ``decode_user_paper`` (one at a time) does: packed, the earlier JSON layout, both
    mixed, none."""
    from paperfeed.events import RECORD_EPOCH, RECORD_FIELDS, record_table

    rng = random.Random(11)

    def packed() -> str:
        t = int((NOW - RECORD_EPOCH) * 1000) - rng.randrange(10**8)
        cells = [t, rng.choice([0, UPVOTED, SAVED]), rng.randrange(3), rng.randrange(2),
                 rng.randrange(4), rng.choice([0, 45_000]), rng.choice([-1, 5_000]),
                 rng.choice([-1, 0]), -1, rng.choice([-1, 7]), -1, rng.randrange(3)]  # fmt: skip
        return msgspec.json.encode(cells[: rng.randrange(1, len(cells) + 1)]).decode()

    def legacy() -> str:
        record: dict[str, Any] = {
            "f": rng.choice([0, UPVOTED]), "v": rng.randrange(3), "c": rng.randrange(2),
            "i": rng.randrange(4), "dw": float(rng.choice([0, 45_000])), "t": NOW - 3_600,
        }  # fmt: skip
        if rng.random() < 0.5:
            record["vt"] = NOW - 7_200
        return msgspec.json.encode(record).decode()

    for make in (packed, legacy, lambda: packed() if rng.random() < 0.5 else legacy()):
        raws = [make() for _ in range(200)]
        table = record_table(raws)
        for row, raw in zip(table, raws, strict=True):
            record = decode_user_paper(raw)
            for column, name in enumerate(RECORD_FIELDS[:11]):
                value = getattr(record, name)
                expected = np.inf if value is None else float(value)
                assert row[column] == pytest.approx(expected, abs=1e-6), (name, raw)
    assert record_table([]).shape == (0, len(RECORD_FIELDS))
