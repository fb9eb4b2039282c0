"""Search over real HTTP: by title, arXiv id, author and words; ranked for the reader."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES, admin_headers, register
from tests.personas import event, paper_id, papers, topic_of


def hf_papers() -> list[dict[str, Any]]:
    with open(FIXTURES / "hf-daily-papers.jsonl") as handle:
        return [json.loads(line) for line in handle]


def search(http: httpx.Client, q: str, **params: Any) -> dict[str, Any]:
    headers = params.pop("h", None)
    response = http.get("/v1/search", params={"q": q, **params}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def found(answer: dict[str, Any]) -> list[str]:
    return [item["paper"]["id"] for item in answer["items"]]


def test_a_paper_is_found_by_its_title_id_url_and_authors(http: httpx.Client) -> None:
    records = hf_papers()
    for start in range(0, len(records), 200):
        chunk = records[start : start + 200]
        response = http.post("/v1/admin/papers", json=chunk, headers=admin_headers())
        assert response.status_code == 200, response.text
    # Each api process's index follows the catalog within its poll interval (an id is
    # found at once: it is read from the catalog, not from the index).
    last = records[-1]
    deadline = time.monotonic() + 30
    while last["id"] not in found(search(http, last["title"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    first = 0
    for record in records:
        if found(search(http, record["title"], limit=5))[:1] == [record["id"]]:
            first += 1
    assert first >= 0.95 * len(records), f"{first} of {len(records)} found first by title"

    larp = next(r for r in records if r["id"] == "2312.17653")
    for query in ("2312.17653", "2312.17653v2", "https://arxiv.org/abs/2312.17653v1"):
        assert found(search(http, query)) == ["2312.17653"], query
    # Words of the title, not the whole title: the paper is among the first.
    assert "2312.17653" in found(search(http, "language agent role play open-world games"))[:3]
    # An author's name finds their papers.
    author = larp["authors"][0]
    theirs = {r["id"] for r in records if author in r["authors"]}
    answer = found(search(http, author, limit=50))
    assert set(answer[: len(theirs)]) == theirs
    anonymous = search(http, "diffusion")
    assert anonymous["personal"] is False
    assert len(anonymous["items"]) == 20


def test_two_readers_searching_the_same_words_get_their_own_topic_first(
    http: httpx.Client,
) -> None:
    """ "molecular" is a word of two topics (molecular graphs, molecular dynamics): each
    reader gets the matches of their own topic first."""
    catalog = papers()
    assert http.post("/v1/admin/papers", json=catalog, headers=admin_headers()).status_code == 200
    last = next(p for p in catalog if p["id"] == paper_id(2, 39))
    deadline = time.monotonic() + 30  # the index follows (by words; an id reads the catalog)
    while last["id"] not in found(search(http, last["title"])) and time.monotonic() < deadline:
        time.sleep(0.05)
    _, graphs = register(http)
    _, proteins = register(http)
    for auth, topic in ((graphs, 0), (proteins, 2)):
        history = [event(paper_id(topic, n), "save") for n in range(6)]
        response = http.post("/v1/events", json={"events": history}, headers=auth)
        assert response.status_code == 200

    def top_topics(auth: dict[str, str]) -> list[str]:
        answer = search(http, "molecular", limit=10, h=auth)
        assert answer["personal"] is True
        return [topic_of(pid) for pid in found(answer)]

    for_graphs, for_proteins = top_topics(graphs), top_topics(proteins)
    assert for_graphs.count("graphs") >= 8, for_graphs
    assert for_proteins.count("proteins") >= 8, for_proteins
    anonymous = [topic_of(pid) for pid in found(search(http, "molecular", limit=10))]
    assert anonymous != for_graphs or anonymous != for_proteins


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "graph\x00neural"}, "q"),
        ({"q": "graph\x1bneural"}, "q"),
        ({"q": "graph", "limit": 0}, "limit"),
    ],
)
def test_bad_queries_are_a_400_naming_the_parameter(
    http: httpx.Client, params: dict[str, Any], why: str
) -> None:
    response = http.get("/v1/search", params=params)
    assert response.status_code == 400, response.text
    assert why in response.text


def test_a_wrong_token_is_refused_not_ignored(http: httpx.Client) -> None:
    response = http.get(
        "/v1/search", params={"q": "graph"}, headers={"Authorization": "Bearer pf_nope"}
    )
    assert response.status_code == 401
