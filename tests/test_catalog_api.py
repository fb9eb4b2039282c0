"""Catalog and trending through the real api."""

from __future__ import annotations

import json

import httpx
import redis

from tests.conftest import (
    FIXTURES,
    LiveServer,
    admin_headers,
    live_server,
    make_settings,
    paperfeed_cli,
)


def jsonl_records(n: int) -> list[dict[str, object]]:
    with open(FIXTURES / "hf-daily-papers.jsonl") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


def test_admin_import_then_read_one_and_list_newest_first(http: httpx.Client) -> None:
    records = jsonl_records(30)
    response = http.post("/v1/admin/papers", json=records, headers=admin_headers())
    assert response.status_code == 200, response.text
    assert response.json() == {"papers": 30, "new": 30, "updated": 0}

    again = http.post("/v1/admin/papers", json=records, headers=admin_headers())
    assert again.json() == {"papers": 30, "new": 0, "updated": 0}

    paper = http.get("/v1/papers/2312.17653").json()
    assert paper["title"].startswith("LARP")
    assert http.get("/v1/papers/2312.17653v2").json()["id"] == "2312.17653"
    missing = http.get("/v1/papers/9999.99999")
    assert missing.status_code == 404
    assert "9999.99999" in missing.json()["detail"]

    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/v1/papers", params=params).json()
        seen.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            break
    assert len(seen) == 30
    assert len({p["id"] for p in seen}) == 30
    dates = [p["published"] for p in seen]
    assert dates == sorted(dates, reverse=True)


def test_bad_cursor_and_limit_are_400(http: httpx.Client) -> None:
    bad = http.get("/v1/papers", params={"cursor": "nonsense!"})
    assert bad.status_code == 400
    assert "cursor" in bad.text
    too_many = http.get("/v1/papers", params={"limit": 100000})
    assert too_many.status_code == 400
    assert "limit" in too_many.text


def test_admin_endpoints_need_the_admin_token(http: httpx.Client, redis_url: str) -> None:
    records = jsonl_records(1)
    assert http.post("/v1/admin/papers", json=records).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert http.post("/v1/admin/papers", json=records, headers=wrong).status_code == 403
    with live_server(make_settings(redis_url, admin_token=None)) as no_admin:
        response = httpx.post(
            f"{no_admin.url}/v1/admin/papers", json=records, headers=admin_headers()
        )
        assert response.status_code == 403
        assert "disabled" in response.json()["detail"]


def test_admin_import_names_the_bad_record(http: httpx.Client) -> None:
    records = [{"id": "2401.00001", "title": "fine"}, {"id": "2401.00002", "upvotes": -3}]
    response = http.post("/v1/admin/papers", json=records, headers=admin_headers())
    assert response.status_code == 400
    assert "[1].upvotes" in response.text


def test_trending_is_seeded_by_upvotes_and_windows_differ(http: httpx.Client) -> None:
    now_records = [
        {"id": "2611.00001", "title": "Hot today", "upvotes": 50, "published": "2099-01-01"},
        {"id": "2611.00002", "title": "Warm", "upvotes": 10},
    ]
    old = {
        "id": "2301.00003",
        "title": "Big but old",
        "upvotes": 500,
        "published": "2023-01-01T00:00:00Z",
    }
    http.post("/v1/admin/papers", json=[*now_records, old], headers=admin_headers())
    day = http.get("/v1/trending", params={"window": "day"}).json()
    ids = [item["paper"]["id"] for item in day["items"]]
    assert ids[:2] == ["2611.00001", "2611.00002"]
    scores = [item["score"] for item in day["items"]]
    # A future publication date counts as now: nothing can be hotter than fresh.
    assert abs(scores[0] - 50) < 0.01
    assert abs(scores[1] - 10) < 0.01
    assert "2301.00003" not in ids  # three years of 8-hour half-lives left nothing
    bad = http.get("/v1/trending", params={"window": "year"})
    assert bad.status_code == 400
    assert "window" in bad.text


def test_cli_import_of_every_format(server: LiveServer, r: redis.Redis) -> None:
    env = {"REDIS_URL": server.settings.redis_url or "", "PATH": "/usr/bin:/bin"}
    for path, expected in [
        (FIXTURES / "daily_papers.json", 6),
        (FIXTURES / "hf-daily-papers.jsonl", 753),
    ]:
        done = paperfeed_cli("import", str(path), env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["papers"] == expected
    assert r.hlen("pf:papers") == 753  # the daily_papers fixture is a subset
    broken = paperfeed_cli("import", str(FIXTURES / "nope.jsonl"), env=env)
    assert broken.returncode == 2
    assert "nope.jsonl" in broken.stderr
