"""What the popup a researcher keeps open asks of the api (issue 28): each paper's state
for the caller in trending, search and library answers; pages of the feed and of
trending; search by a paper's address; the catalog sync's health; quiet logs for a
client's mistakes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import (
    admin_headers,
    live_server,
    make_settings,
    redis_env,
    register,
    start_serve,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()
PAPERS = [
    {
        "id": f"2312.176{n:02d}",
        "title": f"Paper {n}: sparse attention for long sequences, part {n}",
        "abstract": f"We study sparse attention, variant {n}, for long sequences.",
        "authors": [f"Author {n}"],
        "upvotes": 100 - n,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
    }
    for n in range(40)
]
HF_PAPER = "2312.17681"
PAPERS.append(
    {
        "id": HF_PAPER,
        "title": "A paper found by its Hugging Face address",
        "abstract": "Nothing in common with the words huggingface or papers.",
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)),
    }
)
NONE = {"upvoted": False, "saved": False, "dismissed": False, "read": False}


def load(http: httpx.Client) -> None:
    response = http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers())
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30  # each process's index follows within its poll
    while time.monotonic() < deadline:
        found = http.get("/v1/search", params={"q": "sparse attention long sequences"}).json()
        if found["items"]:
            return
        time.sleep(0.05)
    raise AssertionError("the catalog index never followed the import")


def act(http: httpx.Client, auth: dict[str, str], *actions: tuple[str, str]) -> None:
    events = [
        {"event_id": f"{kind}-{pid}-{n}", "type": kind, "paper_id": pid, "ts": time.time()}
        for n, (kind, pid) in enumerate(actions)
    ]
    response = http.post("/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 200, response.text


def states(answer: dict[str, Any]) -> dict[str, Any]:
    return {item["paper"]["id"]: item["state"] for item in answer["items"]}


def test_trending_search_and_library_carry_the_callers_state_of_each_paper(
    http: httpx.Client,
) -> None:
    load(http)
    _, auth = register(http)
    _, other = register(http)
    upvoted, saved, dismissed, read, undone = (PAPERS[n]["id"] for n in range(5))
    act(
        http,
        auth,
        ("upvote", upvoted),
        ("save", saved),
        ("upvote", saved),
        ("dismiss", dismissed),
        ("view", read),
        ("upvote", undone),
        ("unvote", undone),
    )
    expected = {
        upvoted: {**NONE, "upvoted": True},
        saved: {**NONE, "saved": True, "upvoted": True},
        dismissed: {**NONE, "dismissed": True},
        read: {**NONE, "read": True},
        undone: NONE,
    }
    trending = http.get("/v1/trending", params={"limit": 50}, headers=auth).json()
    mine = states(trending)
    for pid, state in expected.items():
        if pid in mine:
            assert mine[pid] == state, pid
    assert {upvoted, saved} <= set(mine)  # their actions made them trend
    assert all(mine[p] == NONE for p in mine if p not in expected)
    # Anonymous: no state; another reader: their own (none).
    anonymous = http.get("/v1/trending", params={"limit": 50}).json()
    assert {item["state"] for item in anonymous["items"]} == {None}
    assert all(s == NONE for s in states(http.get("/v1/trending", headers=other).json()).values())

    for pid, state in expected.items():
        found = http.get("/v1/search", params={"q": pid}, headers=auth).json()
        assert states(found) == {pid: state}, pid
    words = http.get(
        "/v1/search", params={"q": "sparse attention", "limit": 50}, headers=auth
    ).json()
    assert states(words)[dismissed] == expected[dismissed]
    assert {
        item["state"] for item in http.get("/v1/search", params={"q": upvoted}).json()["items"]
    } == {None}

    library = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth).json()
    assert states(library) == {saved: expected[saved]}
    upvotes = http.get("/v1/me/library", params={"kind": "upvoted"}, headers=auth).json()
    assert states(upvotes) == {saved: expected[saved], upvoted: expected[upvoted]}

    # The feed never lists a paper the reader acted on: it needs no state.
    feed = http.get("/v1/feed", params={"limit": 200}, headers=auth).json()
    listed = {item["paper"]["id"] for item in feed["items"]}
    assert not listed & {upvoted, saved, dismissed, read}
    assert all("state" not in item for item in feed["items"])


def test_trending_and_the_feed_come_a_page_at_a_time(http: httpx.Client) -> None:
    load(http)
    _, auth = register(http)
    act(http, auth, *(("upvote", p["id"]) for p in PAPERS[:36]))
    whole = [
        i["paper"]["id"] for i in http.get("/v1/trending", params={"limit": 200}).json()["items"]
    ]
    assert len(whole) > 30  # every paper trends (the imported upvotes count too)
    pages = [http.get("/v1/trending", params={"limit": 15}).json()]
    assert [item["rank"] for item in pages[0]["items"]] == list(range(1, 16))
    assert pages[0]["next"] == "15"
    while pages[-1]["next"] is not None:
        params = {"limit": 15, "cursor": pages[-1]["next"]}
        pages.append(http.get("/v1/trending", params=params).json())
    assert [item["rank"] for item in pages[1]["items"]] == list(range(16, 31))
    paged = [i["paper"]["id"] for page in pages for i in page["items"]]
    assert paged == whole
    assert len(pages) == (len(whole) + 14) // 15
    for bad in ("-1", "x", "1234567"):
        answer = http.get("/v1/trending", params={"cursor": bad})
        assert answer.status_code == 400
        assert "cursor" in answer.text

    _, reader = register(http)
    feed: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/feed", params=params, headers=reader).json()
        feed += [item["paper"]["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    whole_feed = http.get("/v1/feed", params={"limit": 200}, headers=reader).json()
    assert feed == [item["paper"]["id"] for item in whole_feed["items"]]
    assert len(feed) == len(set(feed)) > 30
    answer = http.get("/v1/feed", params={"cursor": "abc"}, headers=reader)
    assert answer.status_code == 400
    assert "cursor" in answer.text


def test_search_by_a_papers_address_and_for_a_paper_the_catalog_lacks(
    http: httpx.Client,
) -> None:
    load(http)
    for query in (
        f"https://huggingface.co/papers/{HF_PAPER}",
        f"huggingface.co/papers/{HF_PAPER}?ref=x",
        f"https://arxiv.org/abs/{HF_PAPER}v2",
        f"https://arxiv.org/pdf/{HF_PAPER}v1.pdf",
        f"arXiv:{HF_PAPER}",
        f" {HF_PAPER}v3 ",
    ):
        answer = http.get("/v1/search", params={"q": query}).json()
        assert [item["paper"]["id"] for item in answer["items"]] == [HF_PAPER], query
        assert answer["named"] == HF_PAPER
    for query in (
        "https://huggingface.co/papers/2312.99999",
        "https://arxiv.org/abs/2312.99999",
        "2312.99999",
    ):
        answer = http.get("/v1/search", params={"q": query}).json()
        assert answer["items"] == [], query  # never papers sharing the address's words
        assert answer["named"] == "2312.99999"
    other = http.get("/v1/search", params={"q": "https://example.org/sparse/attention"}).json()
    assert (other["items"], other["named"]) == ([], None)
    words = http.get("/v1/search", params={"q": "sparse attention"}).json()
    assert words["named"] is None
    assert words["items"]


def test_a_long_query_is_cut_to_its_limit_and_a_bad_one_is_not_echoed(
    http: httpx.Client,
) -> None:
    load(http)
    long = http.get("/v1/search", params={"q": "sparse attention " * 700})
    assert long.status_code == 200
    body = long.json()
    assert body["cut"] is True
    assert len(body["query"]) <= 300
    assert body["query"].startswith("sparse attention sparse")
    assert body["items"]
    assert len(long.content) < 40_000
    short = http.get("/v1/search", params={"q": "sparse attention"}).json()
    assert short["cut"] is False
    for params, why in (
        ({"q": "x" * 10_000, "limit": 0}, "limit"),
        ({"q": "graph\x00neural" + "x" * 10_000}, "q"),
        ({"q": "   "}, "q"),
    ):
        answer = http.get("/v1/search", params=params)
        assert answer.status_code == 400, params
        assert why in {item["key"] for item in answer.json()["extra"]}
        assert len(answer.content) < 1_000, "the query is not echoed back whole"


def test_the_catalog_says_when_its_sync_is_failing(redis_url: str, r: redis.Redis) -> None:
    settings = make_settings(redis_url, sync_interval_s=3600, sync_sources="hf,arxiv")
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        fresh = http.get("/v1/catalog").json()
        assert fresh["sync"] == "ok"
        assert [s["source"] for s in fresh["sources"]] == ["hf", "arxiv"]
        # Hugging Face failed three times in a row; it last synced two hours ago.
        r.hset(
            "pf:sync:state",
            mapping={
                "hf:failures": 3,
                "hf:last_success": time.time() - 7200,
                "hf:last_error": "ConnectError from https://huggingface.co/api/daily_papers",
            },
        )
        failing = http.get("/v1/catalog").json()
        assert failing["sync"] == "failing"
        hf = failing["sources"][0]
        assert (hf["source"], hf["failing"], hf["failures"]) == ("hf", True, 3)
        assert "ConnectError" not in json.dumps(failing)  # reasons are for the operator
        # A failure right after a success is not yet a failing sync (the next run may
        # well succeed): the interval has not passed.
        r.hset("pf:sync:state", "hf:last_success", time.time() - 60)
        assert http.get("/v1/catalog").json()["sync"] == "ok"
    off = make_settings(redis_url, sync_interval_s=0)
    with live_server(off) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/catalog").json()["sync"] == "off"


def test_a_readers_trending_is_never_served_from_the_shared_cache(
    redis_url: str, r: redis.Redis
) -> None:
    settings = make_settings(redis_url, trending_cache_s=60)
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        load(http)
        _, auth = register(http)
        act(http, auth, ("upvote", PAPERS[0]["id"]))
        anonymous = http.get("/v1/trending").json()  # cached for everyone
        assert {item["state"] for item in anonymous["items"]} == {None}
        mine = http.get("/v1/trending", headers=auth).json()
        assert states(mine)[PAPERS[0]["id"]]["upvoted"] is True
        act(http, auth, ("save", PAPERS[0]["id"]))
        again = http.get("/v1/trending", headers=auth).json()  # not cached either
        assert states(again)[PAPERS[0]["id"]]["saved"] is True
        assert http.get("/v1/trending").json() == anonymous  # the shared answer, cached


@pytest.mark.slow
def test_an_absent_digest_and_a_get_of_a_post_only_path_log_no_error(
    redis_url: str, r: redis.Redis
) -> None:
    """``GET /v1/me/digest`` of a reader who never subscribed is ``200 null`` (the options
    page asks at each opening: it was a 404 each time); ``GET /v1/installs`` is a 405
    with one access line, no ``KeyError: 'GET'`` traceback."""
    env = {
        **os.environ,
        **redis_env(redis_url),
        "PAPERFEED_LOG_JSON": "true",
        "PAPERFEED_LOG_LEVEL": "INFO",
        "PAPERFEED_DEMO_CATALOG": "false",
    }
    process, port = start_serve(env)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        _, auth = register(http)
        digest = http.get("/v1/me/digest", headers=auth)
        assert (digest.status_code, digest.json()) == (200, None)
        wrong = http.get("/v1/installs")
        assert wrong.status_code == 405
        assert set(wrong.headers["allow"].split(", ")) == {"OPTIONS", "POST"}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    records = [json.loads(line) for line in output.decode(errors="replace").splitlines()]
    assert not [record for record in records if "exc" in record or record["level"] == "error"]
    about_installs = [record for record in records if "GET /v1/installs" in json.dumps(record)]
    assert [record["logger"] for record in about_installs] == ["uvicorn.access"]
    about_digest = [record for record in records if "/v1/me/digest" in json.dumps(record)]
    assert [record["msg"].rsplit(" ", 1)[-1] for record in about_digest] == ["200"]


def test_the_api_documentation_loads_nothing_from_elsewhere(http: httpx.Client) -> None:
    """Swagger UI and ReDoc come with the package (``/schema/assets``): their pages name
    no other host, and every script and style they name is served."""
    for page in ("/schema", "/schema/redoc", "/schema/swagger"):
        answer = http.get(page)
        assert answer.status_code == 200, page
        html = answer.text
        assert not re.findall(r"(?:src|href)=['\"]https?://", html), page
        assets = re.findall(r"(?:src|href)=['\"](/schema/assets/[^'\"]+)", html)
        assert assets, page
        for asset in assets:
            served = http.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 500, asset
    assert http.get("/schema/assets/../openapi.py").status_code == 404
    assert http.get("/schema/openapi.json").json()["info"]["title"] == "paperfeed"


def test_an_install_knows_whether_it_is_linked(http: httpx.Client) -> None:
    """``GET /v1/me/pairing``: the options page shows "Unlink this browser" only for a
    browser linked by a code."""
    _, first = register(http)
    _, second = register(http)
    assert http.get("/v1/me/pairing", headers=first).json() == {"linked": False, "browsers": 1}
    code = http.post("/v1/me/pairing-codes", headers=first).json()["code"]
    assert http.post("/v1/me/link", json={"code": code}, headers=second).status_code == 200
    assert http.get("/v1/me/pairing", headers=second).json() == {"linked": True, "browsers": 2}
    assert http.get("/v1/me/pairing", headers=first).json() == {"linked": False, "browsers": 2}
    assert http.delete("/v1/me/link", headers=second).status_code == 204
    assert http.get("/v1/me/pairing", headers=second).status_code == 401  # token revoked
    assert http.get("/v1/me/pairing", headers=first).json() == {"linked": False, "browsers": 1}
    assert http.get("/v1/me/pairing").status_code == 401


def test_the_image_build_packs_the_documentation_assets(tmp_path: Path) -> None:
    """The package built from what the image's build context admits (``.dockerignore``,
    ``deploy/Dockerfile``) holds Swagger UI's and ReDoc's files (``MANIFEST.in``)."""
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    admitted = [line[1:] for line in ignored if line.startswith("!")]
    assert "MANIFEST.in" in admitted
    assert "MANIFEST.in" in (ROOT / "deploy" / "Dockerfile").read_text()
    context = tmp_path / "context"
    for name in admitted:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, context / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "wheel"), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("paperfeed-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in (
        "paperfeed/api/static/redoc/redoc.standalone.js",
        "paperfeed/api/static/swagger-ui/swagger-ui-bundle.js",
        "paperfeed/api/static/swagger-ui/swagger-ui.css",
        "paperfeed/api/static/swagger-ui/swagger-ui-standalone-preset.js",
    ):
        assert asset in names, asset
