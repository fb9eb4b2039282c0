"""The follow signal's weight, learned by the trainer like the blend's others.

A follow is an interaction with an author or a topic: the trainer measures the reader's
affinity to a candidate's authors and topic on reading histories (``recsys.affinity``)
and learns its weight on validation readers; the feed scores followed papers with it.
On readers who read a few authors' papers the weight is positive; where authors are
random with respect to reading it is 0; without authors it is not learned (None) and
the feed keeps the prior lift, as for a model from before it.
"""

from __future__ import annotations

import random
import time
from typing import Any
from unittest import mock

import httpx
import msgspec
import numpy as np
from scipy import sparse

from paperfeed.catalog.importers import PaperRecord, paper_from_record
from paperfeed.core import Core
from paperfeed.events import SAVED, Event
from paperfeed.follows import StoredFollows, followed_papers
from paperfeed.recsys import affinity
from paperfeed.recsys.authors import author_name
from paperfeed.recsys.content import Tokens, tokenize
from paperfeed.recsys.index import (
    CatalogIndex,
    CatalogPaper,
    TrendSnapshot,
    build_index,
    trend_snapshot,
)
from paperfeed.recsys.model import AlsParams, RecModel
from paperfeed.recsys.repository import ModelRepository
from paperfeed.serving import feed
from paperfeed.store import keys
from paperfeed.training import learn
from paperfeed.training.train import train_and_publish
from tests.conftest import live_server
from tests.personas import event
from tests.recsys_fixtures import train_settings

SMALL = AlsParams(factors=8, regularization=0.1, alpha=10.0, iterations=15, seed=0)
AUTHORS = 150
PER_AUTHOR = 6
READERS = 400


def author_of(n: int) -> str:
    return f"Author{n} Family{n}"


def authored(
    seed: int = 0, random_authors: bool = False
) -> tuple[sparse.csr_matrix, list[str], list[str], list[list[str]], list[list[int]]]:
    """(weights, ids, texts, authors, each reader's papers): papers of ``AUTHORS``
    authors (each with a random co-author of a large pool), text that says nothing;
    each reader reads three papers of each of three favourite authors and two papers at
    random. ``random_authors``: the same reading, the author lists shuffled across the
    papers (authors say nothing of what is read)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    n = AUTHORS * PER_AUTHOR
    ids = [f"2409.{i:05d}" for i in range(n)]
    texts = [" ".join(rng.choices(words, k=30)) for _ in range(n)]
    authors = [
        [author_of(i // PER_AUTHOR), f"Co{rng.randrange(2000)} Other{rng.randrange(2000)}"]
        for i in range(n)
    ]
    libraries = []
    for _ in range(READERS):
        chosen: set[int] = set()
        for a in rng.sample(range(AUTHORS), 3):
            chosen.update(a * PER_AUTHOR + k for k in rng.sample(range(PER_AUTHOR), 3))
        chosen.update(rng.sample(range(n), 2))
        libraries.append(sorted(chosen))
    rows = [r for r, library in enumerate(libraries) for _ in library]
    cols = [c for library in libraries for c in library]
    weights = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(READERS, n))
    if random_authors:
        rng.shuffle(authors)
    return weights, ids, texts, authors, libraries


def learned(
    random_authors: bool = False, with_authors: bool = True, neighbours: int = 0
) -> learn.Learned:
    weights, ids, texts, authors, _ = authored(random_authors=random_authors)
    tokens: Tokens = tokenize(texts)
    return learn.learn(
        weights,
        ids,
        tokens,
        SMALL,
        neighbours=neighbours,
        authors=authors if with_authors else None,
    )


def test_the_follow_weight_is_learned_where_authors_predict_reading() -> None:
    model = learned().model
    blend = model.meta.blend
    assert blend.follow is not None
    assert blend.follow > 0, blend
    # What it adds, on the validation readers: far above the blend without it.
    choices = model.meta.choices
    assert choices.blend_ndcg > choices.cf_ndcg + 0.1, choices


def test_the_follow_weight_is_learned_when_item_knn_is_learned_off() -> None:
    """Item-kNN on (lists built) but worthless here (empty lists): its weight comes out 0
    and the blend is learned again without its candidates; that second blend learns the
    follow weight too (it once lost it, and published a model with the prior)."""
    empty = sparse.csr_matrix((AUTHORS * PER_AUTHOR, AUTHORS * PER_AUTHOR), dtype=np.float32)
    with mock.patch.object(learn.itemknn, "build", return_value=empty):
        blend = learned(neighbours=200).model.meta.blend
    assert blend.itemknn == 0.0
    assert blend.follow is not None
    assert blend.follow > 0, blend


def test_the_follow_weight_is_off_where_authors_are_random_and_unlearned_without() -> None:
    assert learned(random_authors=True).model.meta.blend.follow == 0.0
    # No authors at all (paperfeed eval's data sets): not measured, not learned.
    none = learned(with_authors=False)
    assert none.model.meta.blend.follow is None
    assert none.affinity is None


def test_a_follow_counts_as_papers_of_the_same_person() -> None:
    """Affinity by ``same_author``: "X. Wang" is every x wang, "Xiaolong Wang" not Xin."""
    data = affinity.affinity_data(
        [["Xiaolong Wang"], ["Xin Wang"], ["X. Wang"], ["Ana Silva"]],
        np.array([0, 0, 1, -1]),
        2,
    )
    nothing = sparse.csr_matrix((1, 4), dtype=np.float32)
    log5 = np.log1p(affinity.FOLLOW_PAPERS)

    def of(*followed: str) -> affinity.FloatArray:
        names = [author_name(f) for f in followed]
        mine = affinity.readers(data, nothing, [n for n in names if n is not None])
        row: affinity.FloatArray = affinity.scores(data, mine)[0]
        return row

    assert np.allclose(of("Xiaolong Wang"), [log5, 0, log5, 0])
    assert np.allclose(of("X. Wang"), [log5, log5, log5, 0])
    # History: a liked paper of Xin Wang counts for Xin's and the initial's papers; the
    # topic share is of the liked papers (one, in topic 0).
    liked = sparse.csr_matrix(([1.0], ([0], [1])), shape=(1, 4), dtype=np.float32)
    mine = affinity.readers(data, liked, followed_topics=[1])
    share = np.array([1, 1, 5, 0]) / 6  # a followed topic counts as five liked papers
    assert np.allclose(affinity.scores(data, mine)[0], np.log1p([0, 1, 1, 0]) + share)


NOW = time.time()
FOLLOWED = author_of(7)
FOLLOWED_AS_READER_WRITES = "author7 family7"
FRESH_PAPER = "2501.99999"


def catalog_records() -> list[dict[str, Any]]:
    """``authored``'s papers, a year old, then 250 papers of the last three days by
    authors nobody read, and one of five days ago by a read author (``FOLLOWED``): older
    than the newest 200, so only a follow brings it to a reader who never read them."""
    _, ids, texts, authors, _ = authored()
    rng = random.Random(5)
    old = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 365 * 86_400))
    out = [
        {"id": pid, "title": text[:60], "abstract": text, "authors": names, "published": old}
        for pid, text, names in zip(ids, texts, authors, strict=True)
    ]
    words = [f"w{i}" for i in range(300)]
    for n in range(250):
        text = " ".join(rng.choices(words, k=30))
        at = NOW - 3_600 - (n % 60) * 3_600
        out.append(
            {
                "id": f"2501.{n:05d}",
                "title": text[:60],
                "abstract": text,
                "authors": [f"New{n} Person{n}"],
                "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            }
        )
    text = " ".join(rng.choices(words, k=30))
    out.append(
        {
            "id": FRESH_PAPER,
            "title": text[:60],
            "abstract": text,
            "authors": ["Someone Else", FOLLOWED],
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 5 * 86_400)),
        }
    )
    return out


async def populate(core: Core) -> None:
    records = [paper_from_record(PaperRecord(**p), "admin") for p in catalog_records()]
    await core.catalog.upsert(records, NOW)
    _, ids, _, _, libraries = authored()
    rng = random.Random(2)
    for library in libraries:
        user = await core.users.register()
        events = []
        for c in library:
            events.append(Event(**event(ids[c], "view", dwell_ms=rng.randint(5_000, 90_000))))
            events.append(Event(**event(ids[c], "save")))
        await core.ingestor.ingest(user.user_id, events)


async def feed_of(
    http: httpx.AsyncClient, auth: dict[str, str], limit: int = 20
) -> list[dict[str, Any]]:
    response = await http.get("/v1/feed", params={"limit": limit}, headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def reasons_of(items: list[dict[str, Any]], paper: str) -> list[str] | None:
    return next((list(i["reasons"]) for i in items if i["paper"]["id"] == paper), None)


async def test_a_trained_model_carries_the_weight_and_the_feed_follows_it(
    core: Core, redis_url: str
) -> None:
    await populate(core)
    settings = train_settings(redis_url)
    decision = await train_and_publish(core.redis, settings)
    assert decision.published, decision.reason
    assert decision.version is not None
    repository = ModelRepository(core.redis)
    model = await repository.load(decision.version)
    assert model.meta.blend.follow is not None
    assert model.meta.blend.follow > 0, model.meta.blend

    _, ids, _, _, _ = authored()
    history = [ids[a * PER_AUTHOR + k] for a in (20, 40, 60) for k in range(3)]
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/v1/installs")
            assert response.status_code == 201, response.text
            auth = {"Authorization": f"Bearer {response.json()['token']}"}
            # A reader of three other authors' papers: ranked with the learned blend.
            events = [e for pid in history for e in (event(pid, "view", dwell_ms=60_000),
                                                     event(pid, "save"))]  # fmt: skip
            response = await http.post("/v1/events", json={"events": events}, headers=auth)
            assert response.status_code == 200, response.text
            before = await feed_of(http, auth)  # ranked and cached before the follow
            assert reasons_of(before, FRESH_PAPER) is None

            response = await http.put(
                "/v1/me/follows", json={"author": FOLLOWED_AS_READER_WRITES}, headers=auth
            )
            assert response.status_code == 200, response.text
            after = await feed_of(http, auth)
            why = reasons_of(after, FRESH_PAPER)
            assert why is not None, [i["paper"]["id"] for i in after]
            assert why[0] == f"new from {FOLLOWED_AS_READER_WRITES}"

    # The ranking behind it: the learned weight, not the prior (the prior at 0 changes
    # nothing); and a model from before the weight serves with the prior.
    papers = [msgspec.convert(p, CatalogPaper) for p in catalog_records()]
    index = build_index(papers, model, "1")
    trend = trend_snapshot(index, [], [], NOW)
    records = saved(history)
    follows = StoredFollows(authors=[FOLLOWED_AS_READER_WRITES], topics={})
    ranked = feed.rank_stored(index, trend, records, None, 0, 20, NOW, follows=follows)
    with mock.patch.object(feed, "FOLLOW_WEIGHT", 0.0):
        unlifted = feed.rank_stored(index, trend, records, None, 0, 20, NOW, follows=follows)
    assert np.array_equal(ranked.positions, unlifted.positions)
    assert index.pos[FRESH_PAPER] in ranked.positions.tolist()

    old_meta = msgspec.to_builtins(model.meta)
    del old_meta["blend"]["follow"]
    old_meta["version"] = "old-follow"
    await core.redis.set(keys.model_meta("old-follow"), msgspec.json.encode(old_meta))
    await core.redis.set(keys.model_blob("old-follow"), model.to_bytes())
    old = await repository.load("old-follow")
    assert old.meta.blend.follow is None
    assert_prior_lift(build_index(papers, old, "1"), trend, records, follows)


def saved(ids: list[str]) -> dict[str, str]:
    """Stored records of papers the reader viewed and saved."""
    record = {"f": SAVED, "v": 1, "c": 0, "i": 0, "dw": 60_000.0, "t": NOW - 3_600}
    return {pid: msgspec.json.encode(record).decode() for pid in ids}


def assert_prior_lift(
    index: CatalogIndex,
    trend: TrendSnapshot,
    records: dict[str, str],
    follows: StoredFollows,
) -> None:
    """The followed paper is among the candidates with its reason, lifted by
    ``FOLLOW_WEIGHT`` (the lift grows with it; every other paper's score is as without
    the follow). Every candidate is ranked: two spreads do not always reach the top 20
    (a reader's own authors' papers score higher still), which the learned weight does."""
    ranked = feed.rank_stored(index, trend, records, None, 0, 10_000, NOW, follows=follows)
    at = index.pos[FRESH_PAPER]
    assert at in ranked.positions.tolist()
    assert ranked.reasons[ranked.positions.tolist().index(at)][0].startswith("new from")
    assert ranked.table is not None
    # And it is owed the first page (a followed author's new paper, not shown yet).
    assert at in ranked.positions[: feed.FOLLOW_PAGE].tolist()
    reader = feed.reader_of_stored(index, records)
    followed = followed_papers(index, follows, NOW, feed.FRESH_DAYS)
    # The prior alone, without the first-page floor.
    with mock.patch.object(feed, "first_page_for_followed_authors", lambda final, *_: final):
        plain, _, _ = feed.scores(index, ranked.table, reader, NOW)
        lifted, _, _ = feed.scores(index, ranked.table, reader, NOW, followed)
        with mock.patch.object(feed, "FOLLOW_WEIGHT", 2 * feed.FOLLOW_WEIGHT):
            doubled, _, _ = feed.scores(index, ranked.table, reader, NOW, followed)
    row = ranked.table.positions.tolist().index(at)
    others = np.arange(len(plain)) != row
    assert np.array_equal(lifted[others], plain[others])
    lift = float(lifted[row] - plain[row])
    assert lift > 0
    assert np.isclose(float(doubled[row] - plain[row]), 2 * lift, rtol=1e-4)


def test_a_model_without_a_learned_weight_keeps_the_prior() -> None:
    """Unit: with ``follow`` None the feed adds ``FOLLOW_WEIGHT`` spreads, else not."""
    weights, ids, texts, _, _ = authored()
    model: RecModel = learn.learn(weights, ids, tokenize(texts), SMALL, neighbours=0).model
    assert model.meta.blend.follow is None
    papers = [msgspec.convert(p, CatalogPaper) for p in catalog_records()]
    index = build_index(papers, model, "1")
    trend = trend_snapshot(index, [], [], NOW)
    history = [ids[a * PER_AUTHOR + k] for a in (20, 40, 60) for k in range(3)]
    records = saved(history)
    follows = StoredFollows(authors=[FOLLOWED_AS_READER_WRITES], topics={})
    assert_prior_lift(index, trend, records, follows)


def test_one_readers_affinity_is_the_batch_computation() -> None:
    """The feed's one-reader path (``affinity.one_reader``, gathers) gives exactly what
    the trainer's batch computation gives (``affinity.scores`` of ``affinity.readers``,
    products), spellings of one person, repeated likes and follows included."""
    rng = random.Random(3)
    people = [("Yann", "LeCun"), ("Xiaolong", "Wang"), ("Xin", "Wang"), ("Ada", "Lovelace")]
    people += [(f"Given{n}", f"Family{n % 40}") for n in range(120)]

    def spelled(given: str, family: str) -> str:
        return rng.choice([f"{given} {family}", f"{given[0]}. {family}", f"{family}, {given}"])

    authors = [
        [spelled(*rng.choice(people)) for _ in range(rng.randrange(0, 5))] for _ in range(600)
    ]
    topic_of = np.array([rng.randrange(-1, 12) for _ in authors], dtype=np.int64)
    data = affinity.affinity_data(authors, topic_of, 12)
    assert data.has_authors
    columns = np.array(sorted(rng.sample(range(600), 250)), dtype=np.int64)
    by_authors = 0
    for n in range(60):
        liked = np.array([rng.randrange(600) for _ in range(rng.randrange(0, 40))], np.int64)
        follows = [author_name(spelled(*rng.choice(people))) for _ in range(n % 4)]
        followed = tuple(name for name in follows if name is not None)
        topics = tuple(rng.sample(range(-1, 14), n % 3))
        row = sparse.csr_matrix(
            (np.ones(len(liked), np.float32), (np.zeros(len(liked), np.int64), liked)),
            shape=(1, 600),
        )
        batch = affinity.scores(data, affinity.readers(data, row, followed, topics), columns)
        one = affinity.one_reader(data, liked, columns, followed, topics)
        assert one.dtype == batch.dtype
        assert np.array_equal(one, batch)
        by_authors += int((batch > 1.0).any())  # a shared author (a share alone is <= 1)
    assert by_authors > 20
    no_authors = affinity.affinity_data([[] for _ in authors], topic_of, 12)
    liked = np.array([1, 2, 2, 7], np.int64)
    row = sparse.csr_matrix((np.ones(4, np.float32), ([0, 0, 0, 0], liked)), shape=(1, 600))
    assert np.array_equal(
        affinity.one_reader(no_authors, liked, columns),
        affinity.scores(no_authors, affinity.readers(no_authors, row), columns),
    )


def test_a_re_sort_with_follows_is_the_full_ranking_across_the_follow_window() -> None:
    """A followed author's paper leaves the week's window in the middle of a trending
    epoch: the kept table (ranked while it was in) re-sorted after impressions is still
    what a full ranking gives, because both read the follows' window at the epoch's start
    (``feed.follows_window``); read at ``now``, the full ranking would have dropped it
    and the re-sort would not."""
    _, ids, texts, authors, _ = authored()
    model = learn.learn(
        authored()[0], ids, tokenize(texts), SMALL, neighbours=0, authors=authors
    ).model
    papers = [msgspec.convert(p, CatalogPaper) for p in catalog_records()]
    index = build_index(papers, model, "1")
    trend = trend_snapshot(index, [], [], NOW)
    history = [ids[a * PER_AUTHOR + k] for a in (20, 40, 60) for k in range(3)]
    records = saved(history)
    follows = StoredFollows(authors=[FOLLOWED_AS_READER_WRITES], topics={})
    at = index.pos[FRESH_PAPER]
    # The epoch began a minute before the paper turned a week old; now it is older.
    window = float(index.dates[at]) + feed.FRESH_DAYS * 86_400 - 60
    ranked_then = feed.rank_stored(
        index, trend, records, None, 0, 50, window + 1, follows=follows, follows_at=window
    )
    assert ranked_then.table is not None
    assert at in ranked_then.table.positions.tolist()
    later = window + 300
    # Impressions since: two of the shown papers were shown again.
    shown = [index.ids[p] for p in ranked_then.positions[:2]]
    impressed = dict(records)
    for pid in shown:
        impressed[pid] = msgspec.json.encode({"i": 2, "t": later}).decode()
    cached = feed.CachedFeed("s", model.meta.version, [], [], [], depth=50, events=0)
    resorted = feed.resort_stored(
        index, impressed, ranked_then.table, cached, later, follows, window
    )
    full = feed.rank_stored(
        index, trend, impressed, None, 0, 50, later, follows=follows, follows_at=window
    )
    assert resorted.positions.tolist() == full.positions.tolist()
    assert np.array_equal(resorted.scores, full.scores)
    assert resorted.reasons == full.reasons
    # The window at now instead: the paper is gone from a full ranking's candidates.
    at_now = feed.rank_stored(index, trend, impressed, None, 0, 50, later, follows=follows)
    assert at_now.table is not None
    assert at not in at_now.table.positions.tolist()
