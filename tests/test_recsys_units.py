"""The recommender's parts with known answers (no Redis, no HTTP)."""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from unittest import mock

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from scipy import sparse

from paperfeed.recsys.content import (
    TextFeatures,
    neighbour_factors,
    profile_scores,
    profile_similarity,
    profiles,
    reader_profile,
    similarity,
    tokenize,
)
from paperfeed.recsys.matrix import ConfidenceScale, confidence
from paperfeed.recsys.model import AlsParams, RecModel, continue_als, fit_als, new_als
from paperfeed.recsys.ranker import BlendParams, blend
from paperfeed.training import evaluate, learn
from tests.conftest import paperfeed_cli
from tests.personas import papers

SMALL = AlsParams(factors=8, regularization=0.1, alpha=10.0, iterations=15, seed=0)


def checkerboard(users: int = 40, items: int = 20) -> sparse.csr_matrix:
    """Even users like even items, odd users odd items (each misses one)."""
    rows, cols = [], []
    for u in range(users):
        for i in range(items):
            if u % 2 == i % 2 and i != u % items:
                rows.append(u)
                cols.append(i)
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(users, items))


def persona_data(
    readers_per_topic: int = 40, size: int = 10
) -> tuple[sparse.csr_matrix, list[str], list[list[str]]]:
    """Readers of one topic each over the persona catalog: (weights, ids, tokens)."""
    from tests.personas import PAPERS_PER_TOPIC

    records = papers()
    rng = random.Random(0)
    rows, cols = [], []
    reader = 0
    for topic in range(3):
        for _ in range(readers_per_topic):
            for n in rng.sample(range(PAPERS_PER_TOPIC), size):
                rows.append(reader)
                cols.append(topic * PAPERS_PER_TOPIC + n)
            reader += 1
    weights = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(reader, len(records))
    )
    tokens = tokenize([f"{p['title']}. {p['title']}. {p['abstract']}" for p in records])
    return weights, [p["id"] for p in records], tokens


def test_als_on_a_checkerboard_recommends_the_missing_item_of_the_right_parity() -> None:
    weights = checkerboard()
    users, items = fit_als(confidence(weights, SMALL.alpha), SMALL)
    scores = users @ items.T
    scores[weights.nonzero()] = -np.inf
    for user in range(weights.shape[0]):
        assert np.argmax(scores[user]) == user % 20


def test_continuing_als_converges_to_the_fold_in() -> None:
    """After a warm-started sweep (items, then readers), readers' vectors are exactly
    what a fold-in against the final item factors gives."""
    weights = checkerboard()
    conf = confidence(weights, SMALL.alpha)
    users, items = fit_als(conf, SMALL, iterations=5)
    users, items = continue_als(conf, users, items, SMALL, 2)
    model = new_als(SMALL)
    model.item_factors = items
    exact = model.recalculate_user(np.arange(weights.shape[0]), conf)
    cosine = (exact * users).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(users, axis=1)
    assert cosine.min() > 0.99


def test_a_readers_fold_in_is_implicits_least_squares() -> None:
    """The request's fold-in (Woodbury, through the model's cached inverse) gives
    implicit's vector for short histories, dismissals (negative weights) included, and
    is implicit's own solve for long ones."""
    from paperfeed.recsys.model import ModelMeta

    rng = np.random.default_rng(7)
    k, items = 32, 400
    params = AlsParams(factors=k, regularization=5.0, alpha=40.0)
    meta = ModelMeta(version="t", trained_at=0.0, als=params, blend=BlendParams())
    factors = (rng.standard_normal((items, k)) * 0.3).astype(np.float32)
    text = TextFeatures("words", ["a"], np.ones(1, dtype=np.float32))
    model = RecModel(meta, [str(i) for i in range(items)], factors, np.ones(items), text,
                     ConfidenceScale(params.alpha))  # fmt: skip
    for count in (1, 5, k // 2, k // 2 + 1, 60):
        columns = rng.choice(items, count, replace=False)
        weights = rng.choice([1.0, 3.0, 5.0, 11.0, -1.0], count).astype(np.float32)
        row = sparse.csr_matrix((weights, (np.zeros(count, dtype=np.int64), columns)),
                                shape=(1, items))  # fmt: skip
        theirs = model.fold_in(row)[0]
        with mock.patch.object(model, "fold_in", wraps=model.fold_in) as implicits:
            ours = model.fold_in_reader(row)
        assert implicits.called == (count > k // 2)  # Woodbury for short histories
        assert np.abs(theirs).max() > 0.01
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * np.abs(theirs).max())


def test_ranking_metrics_agree_with_implicit() -> None:
    from implicit.evaluation import ranking_metrics_at_k

    rng = np.random.default_rng(3)
    dense = (rng.random((300, 120)) < 0.08).astype(np.float32)
    weights = sparse.csr_matrix(dense)
    train, test = evaluate.warm_split(weights, seed=0)
    conf = confidence(train, SMALL.alpha)
    model = new_als(SMALL)
    model.fit(conf, show_progress=False)
    theirs = ranking_metrics_at_k(model, conf, test, K=10, show_progress=False)
    users = np.asarray(model.user_factors)
    items = np.asarray(model.item_factors)
    ours = evaluate.ranking_metrics(evaluate.factor_scorer(users, items), train, test, 10)
    # implicit's "precision" divides all hits by the sum of min(k, held out).
    assert ours.pooled_recall == pytest.approx(theirs["precision"], abs=1e-6)
    assert ours.ndcg == pytest.approx(theirs["ndcg"], abs=1e-6)
    assert np.mean(ours.per_user_ndcg) == pytest.approx(ours.ndcg)


def test_splits_hold_out_what_they_promise() -> None:
    rng = np.random.default_rng(0)
    weights = sparse.csr_matrix((rng.random((200, 300)) < 0.05).astype(np.float32))
    train, test = evaluate.warm_split(weights, seed=1)
    assert train.nnz + test.nnz == weights.nnz
    assert train.multiply(test).nnz == 0
    per_user = np.diff(weights.indptr)
    held = np.diff(test.indptr)
    assert np.all(held[per_user < 5] == 0)
    assert np.all(held[per_user >= 5] == np.maximum(1, np.round(0.2 * per_user[per_user >= 5])))
    train, test, cold = evaluate.cold_split(weights, seed=1)
    assert cold.sum() == 60
    assert train[:, cold].nnz == 0
    assert test[:, ~cold].nnz == 0
    assert train.nnz + test.nnz == weights.nnz


def test_validation_is_carved_from_training_data_only_and_never_from_judged_cells() -> None:
    rng = np.random.default_rng(4)
    weights = sparse.csr_matrix((rng.random((400, 600)) < 0.04).astype(np.float32))
    weights.data[rng.random(weights.nnz) < 0.05] = -1.0  # some dismissals
    judged = sparse.csr_matrix(
        (np.ones(100, dtype=np.float32), (np.arange(100), np.arange(100) * 3)), shape=weights.shape
    ).multiply(weights > 0)
    validation = learn.carve_validation(weights, seed=0, judged=sparse.csr_matrix(judged))
    held = validation.warm + validation.cold
    assert held.nnz > 0
    assert validation.cold_items.sum() >= learn.COLD_MIN
    # Disjoint: fit, validation, judged; together no more than the data.
    assert validation.fit.multiply(held).nnz == 0
    assert held.multiply(judged).nnz == 0
    assert validation.fit.multiply(judged).nnz == 0
    assert held.nnz <= learn.TUNE_MAX_SHARE * (weights > 0).sum() + 1
    # A cold paper is unknown to the fit, dismissals included; warm cells are liked.
    assert validation.fit[:, validation.cold_items].nnz == 0
    assert validation.warm[:, validation.cold_items].nnz == 0
    assert (held.data > 0).all()


def test_bm25_confidence_keeps_order_and_scale() -> None:
    weights = sparse.csr_matrix(
        np.array([[1.0, 3.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 5.0, 2.0, 0.0]], np.float32)
    )
    scale = ConfidenceScale.fit(weights, alpha=10.0, scaling="bm25")
    conf = scale(weights).toarray()
    log = ConfidenceScale.fit(weights, alpha=10.0, scaling="log")(weights).toarray()
    assert conf[0, 3] == -10.0  # a dismissal stays a confident "no"
    assert conf[0, 1] > conf[0, 0]  # more interest, more confidence
    # Paper 0, liked by everyone, counts less than paper 1 for the same weight.
    assert conf[2, 0] < conf[2, 2] * np.log1p(1) / np.log1p(2)
    assert conf[conf > 0].mean() == pytest.approx(log[log > 0].mean(), rel=1e-5)
    arrays = scale.to_arrays()
    again = ConfidenceScale.from_arrays(10.0, "bm25", arrays)
    np.testing.assert_allclose(again(weights).toarray(), conf)


def test_text_counts_are_scikit_learns_words_and_word_pairs() -> None:
    """Word pairs are counted from word ids, not strings: the counts must still be
    scikit-learn's (pairs formed after stop words, never across two texts; empty texts
    and texts of stop words only stay empty rows)."""
    from sklearn.feature_extraction.text import CountVectorizer

    texts = [
        "Diffusion models for the diffusion of models",
        "",
        "the of and",
        "Models diffusion. Diffusion models!",
        "graph neural networks",
        "networks graph",
        "",
    ]
    reference = CountVectorizer(ngram_range=(1, 2), stop_words="english").fit(texts)
    expected = reference.transform(texts)
    features = TextFeatures(
        "bigrams", list(reference.get_feature_names_out()), np.ones(expected.shape[1])
    )
    counted = features.counts(tokenize(texts))
    assert counted.shape == expected.shape
    assert abs(counted - expected).max() == 0
    assert counted[4].nnz == 5  # graph, neural, networks and two pairs: none from text 5


def test_text_features_separate_topics_and_reload_without_pickles() -> None:
    records = papers()
    tokens = tokenize([p["abstract"] for p in records])
    for kind, features in TextFeatures.fit(tokens).items():
        vectors = features.vectors(tokens)
        same = float((vectors[0] @ vectors[1].T).toarray()[0, 0])
        other = float((vectors[0] @ vectors[-1].T).toarray()[0, 0])
        assert same > other + 0.3, kind
        again = TextFeatures.from_arrays(features.to_arrays())
        assert again.kind == kind
        assert abs(again.transform([records[0]["abstract"]]) - vectors[0]).max() < 1e-6
        assert features.transform([""]).nnz == 0


def test_a_paper_without_interactions_borrows_its_text_neighbours_factors() -> None:
    text = sparse.csr_matrix(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32))
    factors = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # of rows 0 and 2
    borrowed = neighbour_factors(text[[1, 3]], text[[0, 2]], factors, neighbours=1)
    np.testing.assert_allclose(borrowed, [[1.0, 0.0], [0.0, 1.0]])
    mixed = neighbour_factors(text[[1]], text[[0, 2]], factors, neighbours=2)
    assert mixed[0, 0] > mixed[0, 1] > 0
    nothing = neighbour_factors(sparse.csr_matrix((1, 2), dtype=np.float32), text[[0]], factors[:1])
    assert not nothing.any()


def test_the_blend_orders_by_its_weights_and_a_new_reader_by_trending() -> None:
    cf = np.array([[3.0, 2.0, 1.0]], np.float32)
    content = np.array([[1.0, 2.0, 3.0]], np.float32)
    trending = np.array([0.0, 1.0, 100.0], np.float32)
    cold = np.zeros(3, dtype=bool)
    by_cf, _ = blend(cf, content, trending, np.array([5.0]), cold, BlendParams())
    assert list(np.argsort(-by_cf[0])) == [0, 1, 2]
    by_content, _ = blend(cf, content, trending, np.array([5.0]), cold, BlendParams(content=3.0))
    assert list(np.argsort(-by_content[0])) == [2, 1, 0]
    nobody = np.zeros((1, 3), np.float32)
    new, _ = blend(nobody, nobody, trending, np.array([0.0]), cold, BlendParams())
    assert list(np.argsort(-new[0])) == [2, 1, 0]
    # A paper without interactions: its collaborative signal counts cold_cf times.
    cf = np.array([[3.0, 2.5, 0.0]], np.float32)
    muted, _ = blend(cf, nobody, trending * 0, np.array([5.0]), np.array([True, False, False]),
                     BlendParams(cold_cf=0.0))  # fmt: skip
    assert np.argmax(muted[0]) == 1


def noise_pools(
    rng: np.random.Generator, relevant: npt.NDArray[np.bool_], **signals: npt.NDArray[np.float32]
) -> learn.Pools:
    """Validation pools of one relevant paper per reader: the signals given, the others
    (of cf, content, trending, itemknn) noise; histories of 1 to 29 papers."""
    n, width = relevant.shape

    def signal(name: str) -> npt.NDArray[np.float32]:
        given = signals.get(name)
        return given if given is not None else rng.normal(size=(n, width)).astype(np.float32)

    return learn.Pools(
        cf=signal("cf"),
        content=signal("content"),
        trending=signal("trending"),
        itemknn=signal("itemknn"),
        cold=np.zeros((n, width), dtype=bool),
        relevant=relevant,
        valid=np.ones((n, width), dtype=bool),
        n_relevant=np.ones(n, dtype=np.int64),
        history=rng.integers(1, 30, size=n).astype(np.float64),
    )


def test_the_learned_blend_finds_the_signal_that_predicts() -> None:
    """Validation pools where content predicts and the collaborative signal is noise: the
    fitted blend leans on content, and scores better than collaborative alone."""
    rng = np.random.default_rng(0)
    n, width = 400, 60
    relevant = np.zeros((n, width), dtype=bool)
    relevant[:, 0] = True
    content = rng.normal(size=(n, width)).astype(np.float32)
    content[:, 0] += 2.5
    pools = noise_pools(rng, relevant, content=content)
    fitted = learn.fit_blend(pools, None, BlendParams())
    assert fitted.content >= 2.0
    assert learn.pool_ndcg(pools, fitted) > learn.pool_ndcg(pools, BlendParams()) + 0.2


def test_a_blend_weight_that_only_noise_supports_is_not_learned() -> None:
    """Validation pools where the collaborative signal predicts and content, trending and
    item-kNN are noise: the climb tries a hundred-odd weights, and none is taken by chance
    (with a bare "it helped on both halves", 8 of these 20 draws learned a weight)."""
    moved = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        n, width = 300, 60
        relevant = np.zeros((n, width), dtype=bool)
        relevant[np.arange(n), rng.integers(0, width, n)] = True
        cf = rng.normal(size=(n, width)).astype(np.float32)
        cf[relevant] += 1.5
        pools = noise_pools(rng, relevant, cf=cf)
        fitted = learn.fit_blend(pools, None, BlendParams())
        weights = (fitted.content, fitted.content_slope, fitted.trending, fitted.trending_slope,
                   fitted.itemknn, fitted.itemknn_slope)  # fmt: skip
        if weights != (0.0,) * 6:
            moved.append((seed, weights))
    assert moved == []


def test_the_search_keeps_the_current_parameters_unless_clearly_beaten() -> None:
    rng = np.random.default_rng(1)
    best = rng.random(300)
    assert not learn.clearly_better(best + rng.normal(0, 0.05, 300), best)
    assert learn.clearly_better(best + 0.05 + rng.normal(0, 0.05, 300), best)
    space = learn.search_space(AlsParams(), 8, seed=0)
    assert space[0] == AlsParams()
    assert len(space) == 8
    assert len({msgspec.json.encode(p) for p in space}) == 8
    assert all(p.factors <= learn.SEARCH_MAX_FACTORS for p in space)


def test_learn_publishes_a_model_that_reloads_and_ranks_the_same() -> None:
    weights, ids, tokens = persona_data()
    learned = learn.learn(weights, ids, tokens, SMALL, search_trials=3)
    model = learned.model
    assert model.meta.choices.search is not None
    assert len(model.meta.choices.search.trials) == 3
    assert model.meta.choices.text in ("words", "bigrams")
    again = RecModel.from_bytes(model.meta, model.to_bytes())
    assert again.item_ids == model.item_ids
    np.testing.assert_array_equal(again.item_factors, model.item_factors)
    popularity = np.asarray((weights > 0).sum(axis=0), dtype=np.float64).ravel()
    scores = [
        learn.production_scorer(learn.column_view(m, ids, m.text.vectors(tokens)), popularity)(
            np.arange(5), weights[:5]
        )
        for m in (model, again)
    ]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    # Readers of topic 0 are ranked papers of topic 0 first.
    top = np.argsort(-scores[0][0])[:10]
    assert sum(i < 40 for i in top) >= 9


def test_the_gate_scores_a_current_model_that_lacks_new_papers() -> None:
    """Papers imported after the current model get text neighbours' factors."""
    weights, ids, tokens = persona_data()
    old = len(ids) - 10
    keep = [i for i in range(len(ids)) if i % 40 < 30]  # the current model lacks some
    current = learn.learn(
        weights[:, keep], [ids[i] for i in keep], tokens.subset(np.array(keep)), SMALL
    ).model
    view = learn.column_view(current, ids, current.text.vectors(tokens))
    assert view.cold.sum() == len(ids) - len(keep)
    popularity = np.ones(len(ids))
    scores = learn.production_scorer(view, popularity)(np.arange(5), weights[:5])
    assert scores.shape == (5, len(ids))
    ranked = np.isfinite(scores)
    assert (ranked.sum(axis=1) >= 20).all()
    assert not ranked[weights[:5].nonzero()].any()  # what a reader has is not ranked
    unknown = np.array([i not in keep for i in range(len(ids))])
    assert ranked[:, unknown].any()  # papers the current model lacks are ranked too
    assert old > 0


def test_eval_cli_writes_every_model_and_a_plot(tmp_path: Path) -> None:
    from tests.personas import history

    records = papers()
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(p) for p in records) + "\n")
    rng = random.Random(0)
    lines = ["user\titem"]
    for topic in range(3):
        for u in range(40):
            for event in history(topic, rng, size=10):
                lines.append(f"t{topic}u{u}\t{event['paper_id']}")
    (tmp_path / "interactions.tsv").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PAPERFEED_ALS_FACTORS": "16", "PAPERFEED_SEARCH_TRIALS": "3"}
    for split in ("warm", "cold"):
        out = tmp_path / f"{split}.json"
        done = paperfeed_cli(
            "eval",
            "--interactions", str(tmp_path / "interactions.tsv"),
            "--items", str(tmp_path / "items.jsonl"),
            "--split", split, "--k", "10", "--seed", "0",
            "--json", str(out), "--plot", str(tmp_path / f"{split}.png"),
            env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(out.read_text())
        assert report["split"] == split
        assert report["k"] == 10
        assert set(report["models"]) == {
            "popularity", "content-lsa", "content-words", "content-bigrams", "als", "itemknn",
            "production",
        }  # fmt: skip
        for metrics in report["models"].values():
            assert 0 <= metrics["recall"] <= 1
            assert 0 <= metrics["ndcg"] <= 1
        assert report["models"]["production"]["ndcg"] > report["models"]["popularity"]["ndcg"]
        if split == "warm":  # papers nobody read have no neighbours: 0 on the cold split
            assert report["models"]["itemknn"]["ndcg"] > report["models"]["popularity"]["ndcg"]
        assert report["params"]["blend"]["itemknn"] >= 0
        assert len(report["params"]["choices"]["search"]["trials"]) == 3
        assert report["params"]["choices"]["text"] in ("words", "bigrams")
        assert "production" in done.stdout
        assert (tmp_path / f"{split}.png").stat().st_size > 1000


def test_one_readers_text_scores_are_the_maths_eval_measures() -> None:
    """The feed scores one reader on arrays; ``paperfeed eval`` scores readers in
    batches of sparse matrices: the same profile, the same cosines."""
    catalog = papers()
    tokens = tokenize([f"{p['title']}. {p['abstract']}" for p in catalog])
    text = TextFeatures.fit(tokens, kinds=("words",))["words"].vectors(tokens)
    rng = np.random.default_rng(0)
    weights = sparse.random(6, text.shape[0], density=0.3, format="csr", random_state=1)
    weights.data = rng.choice([-1.0, 0.0, 1.0, 3.0, 11.0], size=weights.nnz).astype(np.float32)
    batch_profiles = profiles(text, weights)
    by_term = sparse.csr_matrix(text.T)
    batch_similarity = similarity(batch_profiles, text)
    rows = np.arange(text.shape[0], dtype=np.int64)
    for reader in range(weights.shape[0]):
        row = weights[reader]
        one = reader_profile(text, row.indices.astype(np.int64), row.data)
        expected = batch_profiles[reader]
        order = np.argsort(expected.indices)
        assert one.terms.tolist() == expected.indices[order].tolist()
        np.testing.assert_allclose(one.weights, expected.data[order], rtol=1e-5)
        np.testing.assert_allclose(
            profile_similarity(by_term, one), batch_similarity[reader], atol=1e-6
        )
        np.testing.assert_allclose(
            profile_scores(text, rows, one), batch_similarity[reader], atol=1e-6
        )
    assert batch_similarity.max() > 0.3  # readers whose papers share words were compared


def test_topics_are_learned_from_the_text_and_named_by_their_terms() -> None:
    from paperfeed.recsys.topics import assign, learn_topics
    from tests.personas import TOPICS, topic_of

    catalog = papers()
    tokens = tokenize([f"{p['title']}. {p['abstract']}" for p in catalog])
    features = TextFeatures.fit(tokens, kinds=("words",))["words"]
    text = features.vectors(tokens)
    topics = learn_topics(text, features.vocabulary)
    assert 2 <= len(topics.names) <= 5
    # Each learned topic holds the papers of one persona topic ...
    for topic in range(len(topics.names)):
        members = [
            topic_of(p["id"]) for p, t in zip(catalog, topics.of_paper, strict=True) if t == topic
        ]
        if members:
            majority = max(set(members), key=members.count)
            assert members.count(majority) >= 0.9 * len(members), (topics.names[topic], members)
            # ... and is named by words of that topic.
            words = set(TOPICS[majority].lower().split()) | {majority}
            assert all(term in words for term in topics.names[topic].replace(" · ", " ").split())
    # A new paper goes to the topic of the papers it reads like.
    new = features.vectors(
        tokenize(["Graph neural network with message passing on molecular graphs"])
    )
    [found] = assign(topics, new)
    graph_topic = [
        topic_of(p["id"]) for p, t in zip(catalog, topics.of_paper, strict=True) if t == found
    ]
    assert graph_topic.count("graphs") > 0.9 * len(graph_topic)


def test_cached_feeds_go_stale_spread_over_the_trending_window_not_all_at_once() -> None:
    """Each reader's trending epoch is offset by a hash of their id: crossing a snapshot
    boundary of the common clock makes only the readers whose own boundary falls there
    stale (a share proportional to the time crossed), and each reader's epoch still
    moves exactly once every ``trend_s``."""
    from paperfeed.serving.feed import reader_epoch

    trend_s, boundary = 600.0, 600.0 * 2_000_000
    readers = [f"reader-{n}" for n in range(5_000)]
    stale = sum(
        reader_epoch(r, boundary + 30, trend_s) != reader_epoch(r, boundary - 30, trend_s)
        for r in readers
    )
    assert stale < 0.2 * len(readers)  # 60 s of a 600 s window: about 10%, not 100%
    assert stale > 0.02 * len(readers)
    for r in readers[:200]:
        epochs = [reader_epoch(r, boundary + t, trend_s) for t in range(0, 1200, 7)]
        assert epochs[-1] - epochs[0] in (1, 2)
        assert all(b - a in (0, 1) for a, b in itertools.pairwise(epochs))


def test_words_are_read_as_scikit_learn_reads_them() -> None:
    """``words_of`` (no scikit-learn, so that serving need not import it) gives the words
    of scikit-learn's analyzer, stop words and all, on real titles and abstracts, in
    accented and other scripts and with odd punctuation."""
    from sklearn.feature_extraction._stop_words import ENGLISH_STOP_WORDS as THEIR_STOP_WORDS
    from sklearn.feature_extraction.text import CountVectorizer

    from paperfeed.recsys.content import words_of
    from paperfeed.recsys.stop_words import ENGLISH_STOP_WORDS

    assert frozenset(THEIR_STOP_WORDS) == ENGLISH_STOP_WORDS
    theirs = CountVectorizer(stop_words="english").build_analyzer()
    fixture = Path(__file__).parent / "fixtures" / "hf-daily-papers.jsonl"
    texts = [
        f"{row['title']}. {row.get('abstract') or ''}"
        for row in map(json.loads, fixture.read_text().splitlines())
    ]
    texts += ["Über-Modelle für Ärzte: naïve état-of-the-art", "x_1 A_B 3D ‘quoted’ — “ΔT” 東京 ok"]
    assert len(texts) > 700
    for text in texts:
        assert words_of(text) == theirs(text)


def test_topic_names_are_distinct_and_never_say_a_word_twice() -> None:
    """Two topics whose heaviest terms are the same two (the first-run page offered
    "memory · llms" and "llms · memory"), and one whose second term is the first's
    plural ("image · images"): every name is its own, of different words."""
    from paperfeed.recsys.topics import topic_names

    vocabulary = ["memory", "llms", "image", "images", "agents", "text", "study", "studies"]
    centres = np.array(
        [
            [0.9, 0.8, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0],
            [0.8, 0.9, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0],
            [0.0, 0.0, 0.9, 0.8, 0.0, 0.4, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.9, 0.8],
        ],
        dtype=np.float32,
    )
    assert topic_names(centres, vocabulary) == [
        "memory · llms", "llms · text", "image · text", "study · agents"
    ]  # fmt: skip
