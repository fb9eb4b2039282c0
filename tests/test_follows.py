"""Follow authors and topics (issue 26, item 2), through the real api on real Redis.

The catalog is real papers of the Hugging Face daily papers fixture, dated in the last
days; a followed author's paper of five days ago is older than the newest 200, so
nothing but the follow brings it into a new reader's feed: it appears in the next feed
with "new from <author>" (the name written another way than the paper writes it), and
leaves it when the reader unfollows. A followed topic's papers come with "new in
<topic>". Bad bodies are 4xx naming the field; the export lists the follows; erasure
removes them.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from paperfeed.core import Core
from paperfeed.digest import compose
from paperfeed.follows import FOLLOWS_CAP
from paperfeed.store import keys
from tests.conftest import Mailbox, admin_headers, register

FIXTURE = Path(__file__).parent / "fixtures" / "hf-daily-papers.jsonl"
FOLLOWED_PAPER = "2501.00001"
AUTHOR_AS_PAPER_WRITES = "André F. T. Martins"
AUTHOR_AS_READER_WRITES = "andre martins"


def catalog_papers(now: float) -> list[dict[str, Any]]:
    """260 real papers of the last three days (no upvotes: no trending), and one of five
    days ago by André F. T. Martins (a real author of the fixture)."""
    with open(FIXTURE) as handle:
        real = [json.loads(line) for line in handle][:260]
    out = []
    for n, paper in enumerate(real):
        if any("Martins" in a for a in paper["authors"]):
            continue  # only the paper below is theirs
        at = now - 3_600 - (n % 60) * 3_600
        out.append(
            {
                "id": paper["id"],
                "title": paper["title"],
                "abstract": paper["abstract"],
                "authors": paper["authors"],
                "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
            }
        )
    out.append(
        {
            "id": FOLLOWED_PAPER,
            "title": "Sparse attention transformations for machine translation",
            "abstract": "We study sparse alternatives to softmax in neural machine translation.",
            "authors": ["Ana Silva", AUTHOR_AS_PAPER_WRITES],
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 5 * 86_400)),
        }
    )
    return out


@pytest.fixture
def catalog(http: httpx.Client) -> list[dict[str, Any]]:
    papers = catalog_papers(time.time())
    response = http.post("/v1/admin/papers", json=papers, headers=admin_headers())
    assert response.status_code == 200, response.text
    return papers


def feed(http: httpx.Client, auth: dict[str, str], limit: int = 20) -> list[dict[str, Any]]:
    response = http.get("/v1/feed", params={"limit": limit}, headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def reasons_of(items: list[dict[str, Any]], paper: str) -> list[str] | None:
    for item in items:
        if item["paper"]["id"] == paper:
            return list(item["reasons"])
    return None


def follow(http: httpx.Client, auth: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return http.put("/v1/me/follows", json=body, headers=auth)


def unfollow(http: httpx.Client, auth: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return http.request("DELETE", "/v1/me/follows", json=body, headers=auth)


def test_a_followed_authors_new_paper_is_in_the_next_feed_and_leaves_on_unfollow(
    http: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    _, auth = register(http)
    before = feed(http, auth, 50)  # ranked and cached before the follow
    assert reasons_of(before, FOLLOWED_PAPER) is None

    response = follow(http, auth, {"author": AUTHOR_AS_READER_WRITES})
    assert response.status_code == 200, response.text
    assert response.json() == {"authors": [AUTHOR_AS_READER_WRITES], "topics": []}

    after = feed(http, auth, 20)
    why = reasons_of(after, FOLLOWED_PAPER)
    assert why is not None, [i["paper"]["id"] for i in after]
    assert why[0] == f"new from {AUTHOR_AS_READER_WRITES}"
    # Only the followed author's paper says so.
    assert all(
        not any(r.startswith("new from") for r in item["reasons"])
        for item in after
        if item["paper"]["id"] != FOLLOWED_PAPER
    )

    response = unfollow(http, auth, {"author": "André Martins"})  # another spelling
    assert response.status_code == 200, response.text
    assert response.json() == {"authors": [], "topics": []}
    assert reasons_of(feed(http, auth, 50), FOLLOWED_PAPER) is None


def test_another_author_of_the_same_initial_brings_nothing(
    http: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    _, auth = register(http)
    assert follow(http, auth, {"author": "Antonio Martins"}).status_code == 200
    assert reasons_of(feed(http, auth, 50), FOLLOWED_PAPER) is None
    assert follow(http, auth, {"author": "A. Martins"}).status_code == 200  # an initial
    assert reasons_of(feed(http, auth, 20), FOLLOWED_PAPER) == ["new from A. Martins"]


def test_a_followed_topics_new_papers_come_with_its_name(
    http: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    topics = http.get("/v1/topics").json()["topics"]
    assert len(topics) >= 2
    titles = {" ".join(p["title"].split()) for p in catalog}
    for topic in topics:
        assert topic["name"]
        assert topic["papers"] > 0
        assert 1 <= len(topic["examples"]) <= 3
        assert {e["title"] for e in topic["examples"]} <= titles
    chosen = topics[-1]  # the smallest: not what a new reader's feed shows anyway
    reason = f"new in {chosen['name']}"
    _, auth = register(http)
    assert not any(reason in item["reasons"] for item in feed(http, auth, 50))

    response = follow(http, auth, {"topic": chosen["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["topics"] == [
        {"id": chosen["id"], "name": chosen["name"], "current": chosen["id"]}
    ]
    items = feed(http, auth, 20)
    brought = [item for item in items if item["reasons"][0] == reason]
    assert brought, [item["reasons"] for item in items]
    assert len(brought) >= min(5, chosen["papers"])

    assert unfollow(http, auth, {"topic": chosen["id"]}).status_code == 200
    assert not any(reason in item["reasons"] for item in feed(http, auth, 50))


def test_follows_bring_the_newest_papers_of_a_catalog_the_sync_left_behind(
    http: httpx.Client,
) -> None:
    """A catalog whose newest papers are 200 days old (the sync cannot reach its sources,
    or the demo catalog): a followed topic and a followed author still bring its newest
    papers, with their reasons (they brought nothing: no paper was of the last days)."""
    papers = catalog_papers(time.time() - 200 * 86_400)
    response = http.post("/v1/admin/papers", json=papers, headers=admin_headers())
    assert response.status_code == 200, response.text
    chosen = http.get("/v1/topics").json()["topics"][-1]
    _, auth = register(http)
    assert follow(http, auth, {"topic": chosen["id"]}).status_code == 200
    assert follow(http, auth, {"author": AUTHOR_AS_READER_WRITES}).status_code == 200
    items = feed(http, auth, 20)
    assert reasons_of(items, FOLLOWED_PAPER) == [f"new from {AUTHOR_AS_READER_WRITES}"]
    reason = f"new in {chosen['name']}"
    assert [item for item in items if item["reasons"][0] == reason], [
        item["reasons"] for item in items
    ]


def test_bad_follows_are_4xx_naming_the_field(
    http: httpx.Client, catalog: list[dict[str, Any]]
) -> None:
    _, auth = register(http)

    def refused(body: Any, status: int, field: str) -> None:
        response = follow(http, auth, body)
        assert response.status_code == status, response.text
        assert field in response.text, response.text

    refused({}, 400, "body")
    refused({"author": "Yann LeCun", "topic": "x"}, 400, "body")
    refused({"author": ""}, 400, "author")
    refused({"author": "x" * 201}, 400, "author")
    refused({"author": ":-"}, 400, "author")
    refused({"author": 3}, 400, "author")
    refused({"topic": "no-such-topic"}, 404, "topic")
    refused({"name": "Yann LeCun"}, 400, "name")
    response = http.put("/v1/me/follows", content=b"{", headers=auth)
    assert response.status_code == 400, response.text
    assert follow(http, {}, {"author": "Yann LeCun"}).status_code == 401
    assert http.get("/v1/me/follows").status_code == 401

    for n in range(FOLLOWS_CAP):
        assert follow(http, auth, {"author": f"Author Number{n}"}).status_code == 200
    assert follow(http, auth, {"author": "Author Number0"}).status_code == 200  # again
    refused({"author": "One More"}, 400, "author")
    assert len(http.get("/v1/me/follows", headers=auth).json()["authors"]) == FOLLOWS_CAP


def test_the_export_lists_follows_and_erasure_removes_them(
    http: httpx.Client, catalog: list[dict[str, Any]], r: redis.Redis
) -> None:
    user_id, auth = register(http)
    topic = http.get("/v1/topics").json()["topics"][0]
    assert follow(http, auth, {"author": "Yann LeCun"}).status_code == 200
    assert follow(http, auth, {"topic": topic["id"]}).status_code == 200
    exported = http.get("/v1/me/export", headers=auth).json()
    assert exported["follows"] == {
        "authors": ["Yann LeCun"],
        "topics": {topic["id"]: topic["name"]},
    }
    assert r.exists(keys.user_follows(user_id))

    assert http.delete("/v1/me", headers=auth).status_code == 204
    assert not r.exists(keys.user_follows(user_id))
    assert r.keys(f"*{user_id}*") == []
    assert follow(http, auth, {"author": "Yann LeCun"}).status_code == 401
    assert not r.exists(keys.user_follows(user_id))


def test_the_digest_says_how_many_papers_are_from_followed_authors(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    from tests.test_digest import body_of, digest_server, link_in, subscribe

    with (
        digest_server(redis_url, mailbox) as (server, settings),
        httpx.Client(base_url=server.url) as http,
    ):
        papers = catalog_papers(time.time())
        assert http.post("/v1/admin/papers", json=papers, headers=admin_headers()).is_success
        _, auth = register(http)
        subscribe(http, auth, "follower@example.org", size=10)
        assert httpx.post(link_in(mailbox.wait_for(1)[0], "confirm")).status_code == 200
        assert follow(http, auth, {"author": AUTHOR_AS_READER_WRITES}).status_code == 200

        async def send() -> int:
            core = Core.connect(settings)
            try:
                return (await core.digests.run(now=time.time())).sent
            finally:
                await core.close()

        assert asyncio.run(send()) == 1
        digest = mailbox.wait_for(2)[1]
        text, html_part = body_of(digest, "plain"), body_of(digest, "html")
        assert "1 new paper from authors you follow" in text
        assert "1 new paper from authors you follow" in html_part
        assert f"Why: new from {AUTHOR_AS_READER_WRITES}" in text


def test_the_note_counts_only_followed_authors_papers() -> None:
    def item(reason: str) -> compose.DigestItem:
        return compose.DigestItem(paper_id="p", title="t", link="l", summary="", reason=reason)

    assert compose.follows_note([item("trending today"), item("new in diffusion · video")]) == ""
    many = [item("new from Yann LeCun"), item("new from Y. Bengio"), item("new from X")]
    assert compose.follows_note(many) == "3 new papers from authors you follow"


def test_a_followed_authors_new_paper_is_owed_the_first_page_until_shown() -> None:
    """Unit: of 40 candidates, the followed author's paper scored last is raised just
    above the tenth best of the others; shown once, it competes as they do; a followed
    topic's paper is not raised (topics bring many)."""
    from paperfeed.follows import Followed
    from paperfeed.serving.feed import FOLLOW_PAGE, first_page_for_followed_authors

    positions = np.arange(100, 140, dtype=np.int64)
    final = np.linspace(5.0, -3.0, 40).astype(np.float32)
    author_paper, topic_paper = 139, 138
    followed = Followed(
        np.array([topic_paper, author_paper], np.int64),
        {author_paper: "new from Ada Lovelace", topic_paper: "new in graphs"},
        by_author=np.array([author_paper], np.int64),
    )
    unseen = np.zeros(40, np.float32)
    raised = first_page_for_followed_authors(final, positions, followed, unseen)
    order = positions[np.argsort(-raised, kind="stable")].tolist()
    assert order.index(author_paper) == FOLLOW_PAGE - 1  # the tenth, above the tenth other
    assert raised[-1] > final[FOLLOW_PAGE - 1]
    assert order.index(topic_paper) == 39  # not owed: last but for the raised one
    assert np.array_equal(np.delete(raised, -1), np.delete(final, -1))
    seen = unseen.copy()
    seen[-1] = 1
    assert np.array_equal(first_page_for_followed_authors(final, positions, followed, seen), final)


def test_a_reader_who_only_follows_is_not_a_silent_install(
    http: httpx.Client, catalog: list[dict[str, Any]], r: redis.Redis
) -> None:
    """Silent installs (registered, never active) are erased after a few days; ticking
    topics at the first run and then only reading is activity: following takes the
    reader off that list, as their first event would."""
    user_id, auth = register(http)
    assert r.zscore(keys.SILENT_INSTALLS, user_id) is not None
    assert follow(http, auth, {"author": "Yann LeCun"}).status_code == 200
    assert r.zscore(keys.SILENT_INSTALLS, user_id) is None
    assert r.zscore(keys.USERS, user_id) is not None


def test_a_followed_topic_renamed_by_a_refit_resolves_by_its_words() -> None:
    """Unit: after the topics are learned again (new ids), a followed topic stands for the
    one whose name shares most words with the name it was followed by (accents and case
    aside); none shares a word: none."""
    from types import SimpleNamespace

    from paperfeed.follows import resolve_topic

    names = ["diffusion · video", "graph · molecules", "Vidéo · génération"]
    index: Any = SimpleNamespace(
        topic_of_id={"diffusion-video": 0, "graph-molecules": 1, "video-generation": 2},
        topics=SimpleNamespace(names=names),
    )
    assert resolve_topic(index, "graph-molecules", "anything") == 1
    assert resolve_topic(index, "old-id", "video · generation") == 2
    assert resolve_topic(index, "old-id", "molecules · proteins") == 1
    assert resolve_topic(index, "old-id", "quantum · optics") is None


def test_the_catalogs_now_is_its_tenth_newest_dated_paper() -> None:
    """Where a follow's "last 7 days" end: one fresh paper among old ones (a reader's
    catalog request while the sync is down) does not move it, nor do unknown dates."""
    from paperfeed.follows import catalog_now

    now = 1_800_000_000.0
    old = now - 200 * 86_400
    dates = np.array([old - n * 3_600 for n in range(30)] + [now - 60, 0.0, 0.0])
    assert catalog_now(dates, now) == old - 8 * 3_600  # the fresh one is the first
    assert catalog_now(np.array([0.0, 0.0]), now) == now
    assert catalog_now(np.array([old, old - 1]), now) == old - 1
