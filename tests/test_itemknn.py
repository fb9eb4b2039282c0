"""The item-kNN signal (issue 25, part 2): neighbour lists against a brute-force cosine,
the reader's score, the blend's weight (learned only where it predicts), and the model's
lists through Redis (a model published before them still loads and serves)."""

from __future__ import annotations

import random
from unittest import mock

import msgspec
import numpy as np
import pytest
from scipy import sparse

from paperfeed.core import Core
from paperfeed.recsys import itemknn
from paperfeed.recsys.index import build_index, trend_snapshot
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.ranker import BlendParams
from paperfeed.recsys.repository import ModelRepository
from paperfeed.serving import feed
from paperfeed.store import keys
from paperfeed.training import learn
from tests.test_kernels import NOW, model_and_index, records_of, synthetic
from tests.test_recsys_units import SMALL, noise_pools, persona_data


def random_weights(seed: int, users: int = 80, items: int = 50) -> sparse.csr_matrix:
    """Weights as the trainer reads them: confidences > 0, some dismissals (-1), and a
    few papers nobody has."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((users, items)) < 0.12, rng.choice([1.0, 3.0, 11.0]), 0.0)
    dense[rng.random((users, items)) < 0.02] = -1.0
    dense[:, :3] = 0.0  # nobody read these
    return sparse.csr_matrix(dense.astype(np.float32))


def brute_force(weights: sparse.csr_matrix, k: int) -> list[list[tuple[int, float]]]:
    """Each paper's ``k`` best by the cosine of its binarised column (dense, float32 as
    the build computes it), ties by the lower index, the paper itself left out."""
    liked = (weights.toarray() > 0).astype(np.float64)
    co = (liked.T @ liked).astype(np.float32)
    norms = np.sqrt(liked.sum(axis=0).astype(np.float32)).astype(np.float32)
    out = []
    for item in range(weights.shape[1]):
        others = [j for j in range(weights.shape[1]) if j != item and co[item, j] > 0]
        cosine = {j: float(co[item, j] / (norms[item] * norms[j])) for j in others}
        best = sorted(others, key=lambda j: (-np.float32(cosine[j]), j))[:k]
        out.append(sorted((j, cosine[j]) for j in best))
    return out


@pytest.mark.parametrize("k", [3, 8, 100])
def test_the_neighbours_are_the_brute_force_cosines_top_k(k: int) -> None:
    """Exactly: the same papers (ties by the lower index: co-counts are small integers,
    so ties are common) with the same float32 cosines; in blocks and threads too."""
    weights = random_weights(k)
    expected = brute_force(weights, k)
    for block, threads in ((itemknn.BLOCK, 1), (7, 3)):
        with mock.patch.object(itemknn, "BLOCK", block):
            lists = itemknn.build(weights, k, threads=threads)
        assert lists.shape == (weights.shape[1], weights.shape[1])
        assert lists.dtype == np.float32
        for item, want in enumerate(expected):
            row = lists[item]
            got = list(zip(row.indices.tolist(), row.data.tolist(), strict=True))
            assert got == want, (item, block)
        assert lists.has_sorted_indices
    assert itemknn.build(weights, 0).nnz == 0


def test_a_readers_score_is_the_sum_of_their_liked_papers_rows() -> None:
    weights = random_weights(1)
    lists = itemknn.build(weights, 10)
    dense = lists.toarray()
    rows = weights[:20]
    liked = (rows.toarray() > 0).astype(np.float32)  # dismissals and weights do not count
    np.testing.assert_allclose(itemknn.scores(rows, lists), liked @ dense, rtol=1e-6)
    # The feed's two ways of summing one reader's rows: the same floats.
    history = itemknn.history_rows(np.array([5, -1, 9, 5, 30], dtype=np.int64))
    assert history.tolist() == [5, 9, 30]
    compiled = feed.COMPILED.rows_sum(lists, history)
    assert np.array_equal(compiled, feed.REFERENCE.rows_sum(lists, history))
    np.testing.assert_allclose(compiled, dense[[5, 9, 30]].sum(axis=0), rtol=1e-6)


def test_pair_similarity_reads_what_the_lists_hold() -> None:
    lists = itemknn.build(random_weights(2), 6)
    dense = lists.toarray()
    left = np.array([4, 17, -1, 30, 8], dtype=np.int64)
    right = np.array([8, -1, 17, 40], dtype=np.int64)
    got = itemknn.pair_similarity(lists, left, right)
    for i, a in enumerate(left.tolist()):
        for j, b in enumerate(right.tolist()):
            want = dense[b, a] if a >= 0 and b >= 0 else 0.0
            assert got[i, j] == want, (a, b)


def test_the_item_knn_weight_is_learned_where_it_predicts_and_off_where_it_is_noise() -> None:
    rng = np.random.default_rng(0)
    n, width = 400, 60
    relevant = np.zeros((n, width), dtype=bool)
    relevant[np.arange(n), rng.integers(0, width, n)] = True
    cf = rng.normal(size=(n, width)).astype(np.float32)
    cf[relevant] += 1.0
    knn = rng.normal(size=(n, width)).astype(np.float32)
    knn[relevant] += 1.5
    pools = noise_pools(rng, relevant, cf=cf, itemknn=knn)
    fitted = learn.fit_blend(pools, None, BlendParams())
    assert fitted.itemknn > 0
    assert learn.pool_ndcg(pools, fitted) > learn.pool_ndcg(pools, BlendParams()) + 0.1
    # The same readers with item-kNN as noise: off (the noise test of the blend covers
    # twenty draws of it), and without lists (zeros) nothing to learn either.
    noise = noise_pools(np.random.default_rng(1), relevant, cf=cf)
    assert learn.fit_blend(noise, None, BlendParams()).itemknn == 0
    none = noise._replace(itemknn=np.zeros_like(noise.itemknn))
    assert learn.fit_blend(none, None, BlendParams(itemknn=1.0)).itemknn == 1.0  # tie: kept
    off = learn.learn(*persona_data(), SMALL, neighbours=0).model
    assert off.neighbours is None
    assert off.meta.blend.itemknn == 0
    assert off.meta.neighbours == 0


def test_learn_keeps_lists_exactly_when_its_blend_weighs_them() -> None:
    weights, ids, tokens = persona_data()
    model = learn.learn(weights, ids, tokens, SMALL, neighbours=20).model
    assert model.meta.format == 2
    if model.meta.blend.itemknn != 0:
        assert model.neighbours is not None
        assert model.meta.neighbours == 20
        assert model.neighbours.shape == (len(ids), len(ids))
        assert (np.diff(model.neighbours.indptr) <= 20).all()
    else:
        assert model.neighbours is None
        assert model.meta.neighbours == 0
    again = RecModel.from_bytes(model.meta, model.to_bytes())
    assert (again.neighbours is None) == (model.neighbours is None)


def published_model() -> tuple[RecModel, list[feed.CatalogPaper], dict[str, list[str]]]:
    papers, libraries = synthetic(n_papers=600, n_readers=150)
    index = model_and_index(papers, libraries)
    assert index.model is not None
    assert index.model.neighbours is not None
    return index.model, papers, libraries


async def test_the_lists_go_through_redis_and_a_model_without_them_still_serves(
    core: Core,
) -> None:
    model, papers, libraries = published_model()
    repository = ModelRepository(core.redis)
    await repository.publish(model)
    loaded = await repository.load(model.version)
    assert loaded.neighbours is not None
    assert model.neighbours is not None
    assert loaded.meta.neighbours == model.meta.neighbours
    for name in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(loaded.neighbours, name), getattr(model.neighbours, name))

    # A model published before item-kNN: its metadata has no format, neighbours or
    # item-kNN weight, its blob no lists.
    old_meta = msgspec.to_builtins(model.meta)
    for name in ("format", "neighbours"):
        del old_meta[name]
    for name in ("itemknn", "itemknn_slope"):
        del old_meta["blend"][name]
    old_meta["version"] = "old-1"
    bare = RecModel(
        model.meta, model.item_ids, model.item_factors, model.item_counts, model.text, model.scale
    )
    await core.redis.set(keys.model_meta("old-1"), msgspec.json.encode(old_meta))
    await core.redis.set(keys.model_blob("old-1"), bare.to_bytes())
    old = await repository.load("old-1")
    assert old.neighbours is None
    assert old.meta.format == 1
    assert old.meta.blend.itemknn == 0
    # It serves: the signal off, the same ranking as the same model without lists.
    index = build_index(papers, old, "1")
    week = [(p.id, float(n + 1)) for n, p in enumerate(papers[:100])]
    trend = trend_snapshot(index, week, week[:20], NOW)
    rng = random.Random(0)
    for library in list(libraries.values())[:20]:
        ranked = feed.rank_stored(index, trend, records_of(library, rng), None, 0, 20, NOW)
        assert ranked.table is not None
        assert not ranked.table.itemknn.any()
        assert not any(r.startswith("readers of") for why in ranked.reasons for r in why)

    # Lists that do not match the model's papers: refused, not served.
    n = len(model.item_ids)
    wrong = RecModel.from_bytes(model.meta, model.to_bytes())
    for lists in (
        sparse.csr_matrix(([0.5], ([0], [n + 2])), shape=(n, n + 5), dtype=np.float32),
        sparse.csr_matrix((n - 3, n), dtype=np.float32),
    ):
        wrong.neighbours = lists
        with pytest.raises(ValueError, match="neighbour"):
            RecModel.from_bytes(model.meta, wrong.to_bytes())


def test_the_feed_finds_candidates_by_item_knn() -> None:
    """Among the pool, the reader's best papers by item-kNN are candidates: with the
    signal off (weight 0) they are not (unless another source has them)."""
    papers, libraries = synthetic(n_papers=600, n_readers=150)
    index = model_and_index(papers, libraries)
    off = model_and_index(papers, libraries, BlendParams(content=0.6))
    trend = trend_snapshot(index, [], [], NOW)
    rng = random.Random(2)
    added = 0
    for library in list(libraries.values())[:30]:
        raws = records_of(library, rng)
        reader = feed.reader_of_stored(index, raws)
        if not reader.positives:
            continue
        knn = feed.neighbour_scores(index, reader)
        assert knn is not None
        assert feed.neighbour_scores(off, feed.reader_of_stored(off, raws)) is None
        vector = feed.fold_in(index.model, index, reader)  # type: ignore[arg-type]
        profile = feed.profile(index, reader)
        hidden = reader.hidden
        with_knn = set(feed.candidates(index, trend, vector, profile, hidden, knn=knn).tolist())
        without = set(feed.candidates(index, trend, vector, profile, hidden).tolist())
        assert without <= with_knn
        extra = np.array(sorted(with_knn - without), dtype=np.int64)
        assert (feed.at_positions(index, knn, extra) > 0).all()
        added += len(extra)
    assert added > 0
