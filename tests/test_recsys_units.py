"""The recommender's parts with known answers (no Redis, no HTTP)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from paperfeed.recsys import evaluate
from paperfeed.recsys.content import ContentEncoder
from paperfeed.recsys.matrix import confidence
from paperfeed.recsys.model import AlsParams, RecModel, build_model, fit_als, new_als
from paperfeed.recsys.ranker import BlendParams
from paperfeed.recsys.train import production_scorer
from tests.conftest import paperfeed_cli
from tests.personas import TOPICS, papers

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


def test_als_on_a_checkerboard_recommends_the_missing_item_of_the_right_parity() -> None:
    weights = checkerboard()
    users, items = fit_als(confidence(weights, SMALL.alpha), SMALL)
    scores = users @ items.T
    scores[weights.nonzero()] = -np.inf
    for user in range(weights.shape[0]):
        assert np.argmax(scores[user]) == user % 20


def test_fold_in_of_a_new_reader_follows_their_one_item() -> None:
    texts = [f"{'even' if i % 2 == 0 else 'odd'} topic words paper {i}" for i in range(20)]
    model, _ = build_model(
        confidence(checkerboard(), SMALL.alpha),
        [str(i) for i in range(20)],
        texts,
        SMALL,
        BlendParams(),
    )
    one_click = confidence(sparse.csr_matrix(([1.0], ([0], [3])), shape=(1, 20)), SMALL.alpha)
    vector = model.fold_in(one_click)
    cf = (vector @ model.item_factors.T)[0]
    odd, even = cf[1::2], cf[0::2]
    assert np.delete(odd, 1).mean() > even.mean() + 0.2  # item 3 is odd[1]
    cf[3] = -np.inf
    assert sum(i % 2 == 1 for i in np.argsort(-cf)[:5]) >= 4


def test_ranking_metrics_agree_with_implicit() -> None:
    from implicit.evaluation import ranking_metrics_at_k

    rng = np.random.default_rng(3)
    dense = (rng.random((300, 120)) < 0.08).astype(np.float32)
    weights = sparse.csr_matrix(dense)
    train, test = evaluate.warm_split(weights, seed=0)
    conf = confidence(train, SMALL.alpha)
    model = new_als(SMALL)
    model.fit(conf, show_progress=False)  # type: ignore[attr-defined]
    theirs = ranking_metrics_at_k(model, conf, test, K=10, show_progress=False)
    users = np.asarray(model.user_factors)  # type: ignore[attr-defined]
    items = np.asarray(model.item_factors)  # type: ignore[attr-defined]
    ours = evaluate.ranking_metrics(evaluate.factor_scorer(users, items), train, test, 10)
    # implicit's "precision" divides all hits by the sum of min(k, held out).
    assert ours.pooled_recall == pytest.approx(theirs["precision"], abs=1e-6)
    assert ours.ndcg == pytest.approx(theirs["ndcg"], abs=1e-6)


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


def test_a_model_saves_and_loads_without_pickles() -> None:
    records = papers()
    texts = [f"{p['title']}. {p['abstract']}" for p in records]
    weights = sparse.random(50, len(records), density=0.1, format="csr", random_state=0)
    model, _ = build_model(
        confidence(weights, SMALL.alpha), [p["id"] for p in records], texts, SMALL, BlendParams()
    )
    again = RecModel.from_bytes(model.meta, model.to_bytes())
    assert again.item_ids == model.item_ids
    np.testing.assert_array_equal(again.item_factors, model.item_factors)
    np.testing.assert_allclose(
        again.encoder.encode(texts[:5]), model.encoder.encode(texts[:5]), atol=1e-6
    )
    rows = confidence(weights[:3], SMALL.alpha)
    np.testing.assert_allclose(
        production_scorer(again, SMALL.alpha)(np.arange(3), weights[:3]),
        production_scorer(model, SMALL.alpha)(np.arange(3), weights[:3]),
        atol=1e-5,
    )
    assert rows.nnz > 0


def test_content_encoder_separates_topics() -> None:
    records = papers()
    encoder = ContentEncoder.fit([p["abstract"] for p in records], dims=16)
    vectors = encoder.encode([p["abstract"] for p in records])
    same = float(vectors[0] @ vectors[1])
    other = float(vectors[0] @ vectors[-1])
    assert same > other + 0.3
    assert len(TOPICS) == 3
    empty = encoder.encode([""])
    assert not np.any(empty)


def test_eval_cli_writes_every_model_and_a_plot(tmp_path: Path) -> None:
    import random

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
    for split in ("warm", "cold"):
        out = tmp_path / f"{split}.json"
        done = paperfeed_cli(
            "eval",
            "--interactions", str(tmp_path / "interactions.tsv"),
            "--items", str(tmp_path / "items.jsonl"),
            "--split", split, "--k", "10", "--seed", "0", "--factors", "16",
            "--json", str(out), "--plot", str(tmp_path / f"{split}.png"),
            env=dict(os.environ),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(out.read_text())
        assert report["split"] == split
        assert report["k"] == 10
        assert set(report["models"]) == {"popularity", "content", "als", "production"}
        for metrics in report["models"].values():
            assert 0 <= metrics["recall"] <= 1
            assert 0 <= metrics["ndcg"] <= 1
        assert report["models"]["production"]["ndcg"] > report["models"]["popularity"]["ndcg"]
        assert "production" in done.stdout
        assert (tmp_path / f"{split}.png").stat().st_size > 1000


def test_refreshing_all_readers_matches_the_exact_fold_in() -> None:
    weights = sparse.random(600, 300, density=0.03, format="csr", random_state=1)
    weights.data[:] = 1
    texts = [f"w{i % 50} w{i % 7} topic{i % 13}" for i in range(300)]
    params = AlsParams(factors=16, regularization=1.0, alpha=10.0, iterations=10)
    conf = confidence(weights, params.alpha)
    model, users = build_model(conf, [str(i) for i in range(300)], texts, params, BlendParams())
    exact, fast = model.fold_in(conf), model.refresh_users(conf, users)
    cosine = (exact * fast).sum(1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(fast, axis=1)
    assert cosine[np.linalg.norm(exact, axis=1) > 0].min() > 0.999


def test_the_gate_scores_a_current_model_that_lacks_new_papers() -> None:
    """Papers imported after the current model have no column in it (-1 in the map)."""
    records = papers()
    texts = [f"{p['title']}. {p['abstract']}" for p in records]
    weights = sparse.random(60, len(records), density=0.1, format="csr", random_state=2)
    weights.data[:] = 1
    old = len(records) - 10
    current, _ = build_model(
        confidence(weights[:, :old], SMALL.alpha),
        [p["id"] for p in records[:old]],
        texts[:old],
        SMALL,
        BlendParams(),
    )
    column_map = np.array([current.index.get(p["id"], -1) for p in records])
    scores = production_scorer(current, SMALL.alpha, column_map)(np.arange(5), weights[:5])
    assert scores.shape == (5, len(records))
    assert np.all(np.isneginf(scores[:, old:]))
    assert np.all(np.isfinite(scores[:, :old]))
