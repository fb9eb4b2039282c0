"""Asking for a paper the catalog lacks (``POST /v1/catalog/requests``), through the real
api and Redis, and the worker's lookup against the local server that replays arXiv's and
Hugging Face's answers (``tests/test_sync.py``): one reader's request is their choice to
make the id public, so it is looked up without a second reporter; only the source's
metadata admits it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
import redis

from paperfeed.store import keys
from tests.conftest import live_server
from tests.test_sync import (  # noqa: F401 (``replay``: the source server, a fixture)
    Replay,
    asked,
    lookup_once,
    replay,
    sync_settings,
)

PAPER = "1706.03762"
"""In the source server's arXiv ``id_list`` answers: "Attention Is All You Need"."""


async def reader(http: httpx.AsyncClient) -> dict[str, str]:
    answer = await http.post("/v1/installs")
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


async def ask(http: httpx.AsyncClient, auth: dict[str, str], paper_id: Any) -> httpx.Response:
    return await http.post("/v1/catalog/requests", json={"paper_id": paper_id}, headers=auth)


@pytest.mark.cluster
async def test_a_paper_one_reader_asks_for_is_admitted_with_the_sources_metadata_then_found(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    """A paper one reader's page reported stays private (never looked up); once they ask
    for it, the next lookup asks arXiv, and the paper enters with arXiv's title (never
    the page's), then search finds it by id and by its title's words."""
    state, base = replay
    settings = sync_settings(redis_url, base)  # two reporters before a report is public
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            auth = await reader(http)
            view = {
                "event_id": "e-view",
                "type": "view",
                "paper_id": f"{PAPER}v5",
                "ts": time.time(),
                "title": "Miracle pills, buy now",
            }
            sent = await http.post("/v1/events", json={"events": [view]}, headers=auth)
            assert sent.status_code == 200, sent.text
            assert r.zscore(keys.CANDIDATE_SCORE, PAPER) == 1
            start = time.time()
            quiet = await lookup_once(settings, start)
            assert (quiet.ok, quiet.fetched) == (True, 0), quiet
            assert asked(state) == []  # one reader's report is never looked up

            answer = await ask(http, auth, f"https://arxiv.org/abs/{PAPER}v5")
            assert answer.status_code == 202, answer.text
            # One report (the page) and this request spent of the day's 100.
            assert answer.json() == {
                "paper_id": PAPER,
                "state": "waiting",
                "paper": None,
                "reports_left": 98,
            }
            again = await ask(http, auth, PAPER)  # asking again spends nothing
            assert again.json() == {**answer.json(), "reports_left": None}
            assert r.zscore(keys.CANDIDATE_REQUESTED, PAPER) == 1
            assert r.zscore(keys.CANDIDATE_SCORE, PAPER) == 1  # the same reader, once
            searched = (await http.get("/v1/search", params={"q": PAPER})).json()
            assert (searched["named"], searched["items"]) == (PAPER, [])
            assert (await http.get(f"/v1/papers/{PAPER}")).status_code == 404

            result = await lookup_once(settings, start + 400)
            assert (result.ok, result.fetched, result.new) == (True, 1, 1), result
            assert asked(state) == [f"arxiv:{PAPER}"]
            paper = (await http.get(f"/v1/papers/{PAPER}")).json()
            assert paper["title"] == "Attention Is All You Need"
            assert paper["source"] == "arxiv"
            assert "pills" not in str(paper)
            found = (await http.get("/v1/search", params={"q": PAPER})).json()
            assert [item["paper"]["title"] for item in found["items"]] == [paper["title"]]

            async def by_words() -> list[str]:
                page = await http.get("/v1/search", params={"q": "attention is all you need"})
                return [item["paper"]["id"] for item in page.json()["items"]]

            deadline = time.monotonic() + 30  # each api process rebuilds its index
            found_ids = await by_words()
            while PAPER not in found_ids and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                found_ids = await by_words()
            assert PAPER in found_ids
            catalogued = await ask(http, auth, f"https://huggingface.co/papers/{PAPER}")
            assert catalogued.status_code == 202
            assert catalogued.json()["state"] == "catalogued"
            assert catalogued.json()["paper"]["title"] == "Attention Is All You Need"
    assert r.zcard(keys.CANDIDATE_REQUESTED) == 0
    assert not r.exists(keys.candidate_requesters(PAPER))


async def test_what_names_no_arxiv_paper_is_refused_naming_paper_id(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    _, base = replay
    with live_server(sync_settings(redis_url, base)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            auth = await reader(http)
            for wrong in [
                "attention is all you need",
                "https://example.org/abs/1706.03762",
                "scalable-matmul-free-language-modeling",
                "2401.00001 and more",
                "",
                42,
            ]:
                answer = await ask(http, auth, wrong)
                assert answer.status_code == 400, (wrong, answer.text)
                assert [e["key"] for e in answer.json()["extra"]] == ["paper_id"], answer.text
            for impossible in [
                "2413.00001",  # no 13th month
                "1706.0376",  # four digits after the dot only until 2014
                "9912.00001",  # a month to come
            ]:
                answer = await ask(http, auth, impossible)
                assert answer.status_code == 404, (impossible, answer.text)
                assert answer.json()["detail"].startswith("paper_id: no arXiv paper can be")
            unknown_field = await http.post(
                "/v1/catalog/requests", json={"paper_id": PAPER, "title": "x"}, headers=auth
            )
            assert unknown_field.status_code == 400
            no_body = await http.post("/v1/catalog/requests", headers=auth)
            assert no_body.status_code == 400
            assert "paper_id" in no_body.json()["detail"]
            anonymous = await http.post("/v1/catalog/requests", json={"paper_id": PAPER})
            assert anonymous.status_code == 401
    assert r.zcard(keys.CANDIDATE_SCORE) == 0


async def test_requests_spend_the_readers_reports_a_day(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    """The reports a day bound requests too, shared with the papers a reader's pages
    report: past them, 429 until the next day (UTC), and nothing is kept."""
    _, base = replay
    settings = sync_settings(redis_url, base, reports_per_day=3)
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            auth = await reader(http)
            view = {"event_id": "e-1", "type": "view", "paper_id": "2401.00001", "ts": time.time()}
            sent = await http.post("/v1/events", json={"events": [view]}, headers=auth)
            assert sent.status_code == 200, sent.text
            first = await ask(http, auth, "2401.00002")
            assert first.json()["reports_left"] == 1
            second = await ask(http, auth, "2401.00003")
            assert (second.status_code, second.json()["reports_left"]) == (202, 0)
            refused = await ask(http, auth, "2401.00004")
            assert refused.status_code == 429, refused.text
            assert "3 papers a day" in refused.json()["detail"]
            retry_after = int(refused.headers["Retry-After"])
            assert 0 < retry_after <= 86_400
            assert abs(time.time() + retry_after - (time.time() // 86_400 + 1) * 86_400) < 5
            assert r.zscore(keys.CANDIDATE_SCORE, "2401.00004") is None
            # What the reader asked for already still answers, spending nothing.
            assert (await ask(http, auth, "2401.00003")).status_code == 202
            # Another reader has a budget of their own.
            assert (await ask(http, await reader(http), "2401.00004")).status_code == 202
    assert set(r.zrange(keys.CANDIDATE_REQUESTED, 0, -1)) == {
        "2401.00002",
        "2401.00003",
        "2401.00004",
    }


@pytest.mark.cluster
async def test_erasure_takes_the_reader_out_of_their_requests(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    """A reader asks for a paper another reader's page reported, then erases themselves:
    they are no requester any more, the paper is asked for by nobody, and one report is
    private again (the lookup asks no source)."""
    state, base = replay
    settings = sync_settings(redis_url, base)
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            other = await reader(http)
            view = {"event_id": "e-1", "type": "view", "paper_id": PAPER, "ts": time.time()}
            sent = await http.post("/v1/events", json={"events": [view]}, headers=other)
            assert sent.status_code == 200, sent.text
            auth = await reader(http)
            me = (await http.get("/v1/me/export", headers=auth)).json()["user_id"]
            assert (await ask(http, auth, PAPER)).status_code == 202
            exported = (await http.get("/v1/me/export", headers=auth)).json()
            assert list(exported["requested"]) == [PAPER]
            assert r.sismember(keys.candidate_requesters(PAPER), me)
            assert r.zscore(keys.CANDIDATE_SCORE, PAPER) == 2
            assert (await http.delete("/v1/me", headers=auth)).status_code == 204
    assert not r.sismember(keys.candidate_requesters(PAPER), me)
    assert not r.sismember(keys.candidate_reporters(PAPER), me)
    assert r.zscore(keys.CANDIDATE_REQUESTED, PAPER) is None
    assert r.zscore(keys.CANDIDATE_SCORE, PAPER) == 1
    assert not r.exists(keys.user_requests(me))
    result = await lookup_once(settings, time.time())
    assert (result.ok, result.fetched) == (True, 0), result
    assert asked(state) == []
    assert not r.hexists(keys.PAPERS, PAPER)


async def test_a_paired_installs_requests_become_its_readers(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    """An install that asked for a paper is then linked to another browser's reader by a
    pairing code: the request is that reader's (their export lists it), and erasing
    them takes them out of it: nobody is left asking for it."""
    _, base = replay
    with live_server(sync_settings(redis_url, base)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            laptop, phone = await reader(http), await reader(http)
            before = (await http.get("/v1/me/export", headers=phone)).json()["user_id"]
            assert (await ask(http, phone, PAPER)).status_code == 202
            code = (await http.post("/v1/me/pairing-codes", headers=laptop)).json()["code"]
            linked = await http.post("/v1/me/link", json={"code": code}, headers=phone)
            assert linked.status_code == 200, linked.text
            exported = (await http.get("/v1/me/export", headers=laptop)).json()
            assert list(exported["requested"]) == [PAPER]
            after = exported["user_id"]
            assert after != before
            assert set(r.smembers(keys.candidate_requesters(PAPER))) == {after}
            assert r.zscore(keys.CANDIDATE_REQUESTED, PAPER) == 1
            assert (await http.delete("/v1/me", headers=laptop)).status_code == 204
    assert not r.exists(keys.candidate_requesters(PAPER))
    assert r.zscore(keys.CANDIDATE_REQUESTED, PAPER) is None
    assert r.zscore(keys.CANDIDATE_SCORE, PAPER) == 0
