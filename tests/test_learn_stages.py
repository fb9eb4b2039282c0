"""``learn``'s stages (``learn.STAGES``), each called alone on small data, and ``learn``
as their composition: the same models, bit for bit, and its timings under their names."""

from __future__ import annotations

import random
import string
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pytest
from scipy import sparse

from paperfeed.recsys import itemknn
from paperfeed.recsys.affinity import Affinity
from paperfeed.recsys.content import TEXT_KINDS, Tokens, tokenize
from paperfeed.recsys.matrix import drop_cells, positives
from paperfeed.recsys.model import ModelMeta, SearchReport
from paperfeed.training import learn
from tests.test_follow_weight import authored
from tests.test_recsys_units import SMALL, persona_data


def judged_cells(weights: sparse.csr_matrix) -> sparse.csr_matrix:
    """One liked paper of every third reader: the gate's hold-out."""
    liked = positives(weights)
    rows, cols = [], []
    for reader in range(0, liked.shape[0], 3):
        own = liked.indices[liked.indptr[reader] : liked.indptr[reader + 1]]
        rows.append(reader)
        cols.append(int(own[len(own) // 2]))
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=weights.shape)


class Upstream(NamedTuple):
    """A data set and what the stages before the blend make of it."""

    weights: sparse.csr_matrix
    ids: list[str]
    tokens: Tokens
    authors: list[list[str]] | None
    judged: sparse.csr_matrix
    texts: learn.Texts
    validation: learn.Validation
    trained: learn.Trained
    text: learn.ChosenText
    lists: sparse.csr_matrix | None
    affinity: Affinity | None


def upstream(
    weights: sparse.csr_matrix,
    ids: list[str],
    tokens: Tokens,
    authors: list[list[str]] | None = None,
    neighbours: int = 20,
) -> Upstream:
    judged = judged_cells(weights)
    texts = learn.fit_text(tokens, 0)
    validation = learn.carve_validation(weights, 0, judged)
    trained = learn.validation_als(validation, SMALL)
    text = learn.choose_text(texts, validation, 0)
    lists = learn.knn_lists(validation, neighbours)
    affinity = learn.papers_affinity(authors, text.vectors, text.features.vocabulary, 0)
    return Upstream(
        weights, ids, tokens, authors, judged, texts, validation, trained, text, lists, affinity
    )


@pytest.fixture(scope="module")
def personas() -> Upstream:
    return upstream(*persona_data())


@pytest.fixture(scope="module")
def by_authors() -> Upstream:
    weights, ids, texts, authors, _ = authored()
    return upstream(weights, ids, tokenize(texts), authors)


def scrubbed(meta: ModelMeta) -> dict[str, Any]:
    """``meta`` without what differs between two runs: versions, times."""
    out: dict[str, Any] = msgspec.to_builtins(meta)
    for key in ("version", "trained_at", "train_seconds"):
        del out[key]
    search = out["choices"]["search"]
    if search is not None:
        del search["at"], search["seconds"]
        for trial in search["trials"]:
            del trial["seconds"]
    return out


def test_the_stages_are_named_by_their_functions() -> None:
    assert len(set(learn.STAGES)) == len(learn.STAGES) == 9
    for name in learn.STAGES:
        stage = getattr(learn, name)
        assert callable(stage)
        assert stage.__name__ == name
    # A function that is not a stage is not timed under a name of its own.
    with pytest.raises(ValueError, match="not a stage"):
        learn.timed({}, len, [1])


def test_learn_is_its_stages_in_order_bit_for_bit(by_authors: Upstream) -> None:
    """learn() with a search, judged cells, item-kNN and authors, against the stages
    called one after the other: the same models, readers' vectors and choices, and
    each stage's seconds under its name, in order."""
    data = by_authors
    weights, judged = data.weights, data.judged
    kwargs: dict[str, Any] = {"search_trials": 2, "judged": judged, "neighbours": 20}
    learned = learn.learn(weights, data.ids, data.tokens, SMALL, authors=data.authors, **kwargs)
    assert list(learned.seconds) == list(learn.STAGES)
    assert all(seconds >= 0 for seconds in learned.seconds.values())

    texts = learn.fit_text(data.tokens, 0)
    validation = learn.carve_validation(weights, 0, judged)
    trained = learn.validation_als(validation, SMALL, search_trials=2)
    text = learn.choose_text(texts, validation, 0)
    lists = learn.knn_lists(validation, 20)
    affinity = learn.papers_affinity(data.authors, text.vectors, text.features.vocabulary, 0)
    blend = learn.choose_blend(validation, trained, text, data.ids, lists, affinity)
    meta = ModelMeta(
        version="v",
        trained_at=0.0,
        als=trained.params,
        blend=blend.params,
        choices=learn.learned_choices(validation, trained, text, blend),
        format=learn.MODEL_FORMAT,
    )
    kept = 20 if blend.params.itemknn != 0 else 0
    shared = learn.Refit(meta, data.ids, text, kept, large=False, started=0.0)
    judge = learn.judged_model(weights, judged, (trained.users, trained.items), shared, lists)
    final = learn.final_model(weights, (judge.users, judge.model.item_factors), shared)

    assert learned.judge_model is not None
    pairs = ((learned.judge_model, judge.model), (learned.model, final.model))
    for got, composed in pairs:
        np.testing.assert_array_equal(got.item_factors, composed.item_factors)
        np.testing.assert_array_equal(got.item_counts, composed.item_counts)
        assert scrubbed(got.meta) == scrubbed(composed.meta)
        assert (got.neighbours is None) == (composed.neighbours is None)
        if got.neighbours is not None:
            assert (got.neighbours != composed.neighbours).nnz == 0
    np.testing.assert_array_equal(learned.user_factors, final.users)
    np.testing.assert_array_equal(learned.fit_popularity, validation.popularity)
    assert (learned.text != text.vectors).nnz == 0
    # The search made now records the text features chosen with it.
    search = learned.model.meta.choices.search
    assert search is not None
    assert (search.text, search.text_ndcg) == (text.kind, text.ndcg)


def test_without_judged_cells_there_is_no_judged_model() -> None:
    learned = learn.learn(*persona_data(readers_per_topic=20), SMALL, neighbours=0)
    assert learned.judge_model is None
    assert list(learned.seconds) == [name for name in learn.STAGES if name != "judged_model"]


def test_fit_text_fits_every_kind_or_the_reused_searchs_alone() -> None:
    _, _, tokens = persona_data(readers_per_topic=1)
    every = learn.fit_text(tokens, 0)
    assert every.kinds == TEXT_KINDS
    for kind in TEXT_KINDS:
        assert every.features[kind].kind == kind
        assert every.vectors[kind].shape == (len(tokens), len(every.features[kind].vocabulary))
    reused = SearchReport(
        at=0.0, start=SMALL, best=SMALL, trials=[], seconds=0.0, text="bigrams"
    )  # fmt: skip
    alone = learn.fit_text(tokens, 0, reused)
    assert alone.kinds == ("bigrams",)
    assert list(alone.vectors) == ["bigrams"]
    assert (alone.vectors["bigrams"] != every.vectors["bigrams"]).nnz == 0


def test_carve_validation_keeps_judged_cells_out_of_everything(by_authors: Upstream) -> None:
    validation, judged = by_authors.validation, by_authors.judged
    assert judged.nnz > 0
    assert validation.cold_items.sum() >= learn.COLD_MIN
    for cells in (validation.fit, validation.warm, validation.cold):
        assert cells.multiply(judged).nnz == 0
    assert validation.warm.nnz > 0
    # The popularity the validation readers are ranked with is the fit's alone.
    counts = np.asarray((validation.fit > 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(validation.popularity, counts)
    assert validation.popularity[validation.cold_items].sum() == 0


def test_validation_als_fits_the_given_parameters_or_the_searchs_best(
    personas: Upstream,
) -> None:
    validation = personas.validation
    n_users, n_items = personas.weights.shape
    plain = personas.trained
    assert plain.params == SMALL
    assert plain.search is None
    assert plain.users.shape == (n_users, SMALL.factors)
    assert plain.items.shape == (n_items, SMALL.factors)
    searched = learn.validation_als(validation, SMALL, search_trials=3, seed=0)
    assert searched.search is not None
    assert searched.search.start == SMALL
    trials = [trial.als for trial in searched.search.trials]
    assert trials == learn.search_space(SMALL, 3, 0)
    assert searched.params == searched.search.best
    assert searched.params in trials
    assert searched.items.shape == (n_items, searched.params.factors)


def words_in_pairs(topics: int = 4, per_topic: int = 50, readers: int = 240) -> Upstream:
    """Papers of each topic are pairs of words (``a b``) that the topic's permutation
    pairs: every topic uses every word alike, only its pairs tell it. Readers read one
    topic each: the content of words and pairs ranks them, that of words alone hardly."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(100)]
    pairs = [rng.sample(range(100), 100) for _ in range(topics)]
    texts = []
    for topic in range(topics):
        for _ in range(per_topic):
            firsts = rng.sample(range(100), 10)
            texts.append(". ".join(f"{words[w]} {words[pairs[topic][w]]}" for w in firsts))
    rows, cols = [], []
    for reader in range(readers):
        topic = reader % topics
        for n in rng.sample(range(per_topic), 8):
            rows.append(reader)
            cols.append(topic * per_topic + n)
    weights = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(readers, topics * per_topic)
    )
    return upstream(weights, [f"p{i}" for i in range(len(texts))], tokenize(texts))


def test_choose_text_takes_the_kind_whose_content_ranks_the_validation_best() -> None:
    data = words_in_pairs()
    chosen = data.text
    assert chosen.kind == "bigrams"
    assert set(chosen.ndcg) == set(TEXT_KINDS)
    assert chosen.ndcg["bigrams"] > chosen.ndcg["words"] + 0.05, chosen.ndcg
    assert chosen.features is data.texts.features["bigrams"]
    assert chosen.vectors is data.texts.vectors["bigrams"]
    # One kind fitted (a retraining reusing its search's): that kind, with the nDCG the
    # search measured.
    reused = SearchReport(
        at=0.0, start=SMALL, best=SMALL, trials=[], seconds=0.0, text="words",
        text_ndcg={"words": 0.1, "bigrams": 0.2},
    )  # fmt: skip
    alone = learn.fit_text(data.tokens, 0, reused)
    kept = learn.choose_text(alone, data.validation, 0, reused)
    assert (kept.kind, kept.ndcg) == ("words", {"words": 0.1, "bigrams": 0.2})


def test_knn_lists_are_the_validation_matrixs_neighbours(by_authors: Upstream) -> None:
    validation = by_authors.validation
    assert learn.knn_lists(validation, 0) is None
    lists = by_authors.lists
    assert lists is not None
    n_items = by_authors.weights.shape[1]
    assert lists.shape == (n_items, n_items)
    assert np.diff(lists.indptr).max() <= 20
    assert (lists != itemknn.build(validation.fit, 20)).nnz == 0
    # A cold validation paper is unknown to the fit: it has no neighbours.
    assert validation.cold_items.any()
    assert lists[validation.cold_items].nnz == 0
    assert lists[:, validation.cold_items].nnz == 0


def test_choose_blend_learns_the_signals_that_predict_the_validation(
    by_authors: Upstream,
) -> None:
    """Readers of a few authors: the follow affinity is learned and lifts the ranking
    far above the collaborative signal's; a signal not measured is not learned."""
    data = by_authors
    assert data.affinity is not None
    args = (data.validation, data.trained, data.text, data.ids)
    blend = learn.choose_blend(*args, data.lists, data.affinity)
    assert blend.params.collaborative
    assert blend.params.follow is not None
    assert blend.params.follow > 0, blend.params
    assert blend.blend_ndcg > blend.cf_ndcg + 0.1, blend
    assert set(blend.cold_ndcg) == {"content", "blend"}
    bare = learn.choose_blend(*args)
    assert bare.params.follow is None
    assert bare.params.itemknn == 0.0
    assert bare.blend_ndcg < blend.blend_ndcg


def test_the_judged_and_final_models_learn_from_all_but_the_judged_cells_and_all(
    personas: Upstream,
) -> None:
    data = personas
    weights, judged, trained = data.weights, data.judged, data.trained
    meta = ModelMeta(
        version="v", trained_at=0.0, als=trained.params, blend=learn.PRIOR, format=2
    )  # fmt: skip
    start = (trained.users, trained.items)
    with_lists = learn.Refit(meta, data.ids, data.text, 20, large=False, started=0.0)
    judge = learn.judged_model(weights, judged, start, with_lists, data.lists)
    final = learn.final_model(weights, (judge.users, judge.model.item_factors), with_lists)
    n_users, n_items = weights.shape
    for refitted in (judge, final):
        assert refitted.model.item_factors.shape == (n_items, SMALL.factors)
        assert refitted.users.shape == (n_users, SMALL.factors)
        assert refitted.model.meta.neighbours == 20
        assert refitted.model.meta.blend == learn.PRIOR
    assert judge.model.meta.n_interactions == weights.nnz - judged.nnz
    assert final.model.meta.n_interactions == weights.nnz
    # Small data: each builds its own lists, on what it learns from.
    assert judge.model.neighbours is not None
    assert final.model.neighbours is not None
    assert (final.model.neighbours != itemknn.build(weights, 20)).nnz == 0
    assert (judge.model.neighbours != itemknn.build(drop_cells(weights, judged), 20)).nnz == 0
    # The readers' vectors are solved last, against the final item factors: a fold-in
    # (implicit's solve, to its conjugate gradient's precision).
    assert not final.model.cold.any()
    folded = final.model.fold_in(weights)
    cosine = (folded * final.users).sum(1) / np.linalg.norm(folded, axis=1)
    assert (cosine / np.linalg.norm(final.users, axis=1)).min() > 0.999
    # Large data: the judged model keeps the validation model's lists; no lists when
    # the blend does not weigh them.
    large = with_lists._replace(large=True)
    assert learn.judged_model(weights, judged, start, large, data.lists).model.neighbours is (
        data.lists
    )
    without = with_lists._replace(neighbours=0)
    assert learn.final_model(weights, start, without).model.neighbours is None
