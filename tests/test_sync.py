"""Catalog sync against a local server that replays the sources' real formats: Hugging
Face daily papers (built from the shipped fixture of real daily papers) and arXiv Atom
pages (hand-written in arXiv's format), never the internet."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from paperfeed.catalog.importers import parse_page
from paperfeed.catalog.papers import slugify
from paperfeed.catalog.sync import CatalogSync, SourceResult, retry_after_s, run_sync
from paperfeed.core import Core
from paperfeed.store import keys
from paperfeed.training.data import read_interactions
from tests.conftest import (
    FIXTURES,
    live_server,
    make_settings,
    paperfeed_cli,
    redis_env,
)

ARXIV = FIXTURES / "arxiv"
NOW = datetime(2024, 1, 3, 12, tzinfo=UTC).timestamp()
DAYS = ("2024-01-03", "2024-01-02", "2024-01-01")


def daily_entry(record: dict[str, Any], upvotes: int | None = None) -> dict[str, Any]:
    """A fixture paper as Hugging Face's ``daily_papers`` lists it."""
    return {
        "paper": {
            "id": record["id"],
            "title": record["title"],
            "summary": record["abstract"],
            "authors": [{"name": name, "hidden": False} for name in record["authors"]],
            "publishedAt": record["published"],
            "upvotes": record["upvotes"] if upvotes is None else upvotes,
        },
        "publishedAt": record["published"],
        "title": record["title"],
        "numComments": 3,
    }


def fixture_papers() -> list[dict[str, Any]]:
    with open(FIXTURES / "hf-daily-papers.jsonl") as handle:
        return [json.loads(line) for line in handle]


ENTRY = re.compile(rb"<entry>.*?</entry>", re.DOTALL)
ENTRY_ID = re.compile(rb"<id>http://arxiv\.org/abs/(\d{4}\.\d{4,5})v\d+</id>")
UNKNOWN_ENTRY = b"<entry><updated>2024-01-03T00:00:00-05:00</updated><title></title></entry>"
"""What arXiv lists for an ``id_list`` id it does not know: an entry without an id."""


def arxiv_entries(*names: str) -> dict[str, bytes]:
    """The entries of fixture Atom files, by arXiv id."""
    found = {}
    for name in names:
        for entry in ENTRY.findall((ARXIV / name).read_bytes()):
            match = ENTRY_ID.search(entry)
            if match:
                found[match.group(1).decode()] = entry
    return found


class Replay:
    """What the local server answers, set by each test; every request is logged."""

    def __init__(self) -> None:
        self.daily: dict[str, list[dict[str, Any]]] = {}
        self.atom: dict[tuple[str, int], bytes] = {}
        self.by_id: dict[str, bytes] = arxiv_entries("id_list.xml", "cs.LG-page1.xml")
        """arXiv's entries for ``id_list`` lookups."""
        self.hf_papers: dict[str, dict[str, Any]] = {}
        """Hugging Face's ``/api/papers/<id>`` answers."""
        self.failures: dict[str, str] = {}
        """Path prefix (or ``cat:<category>``) -> how to fail: 500, 429, timeout,
        malformed, truncated."""
        self.log: list[tuple[float, str, dict[str, list[str]]]] = []
        self.lock = threading.Lock()

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for _, path, _ in self.log if path.startswith(prefix))


@pytest.fixture
def replay() -> Iterator[tuple[Replay, str]]:
    state = Replay()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            with state.lock:
                state.log.append((time.monotonic(), parts.path, query))
            failure = next(
                (how for prefix, how in state.failures.items() if parts.path.startswith(prefix)),
                None,
            )
            if "search_query" in query:
                category = query["search_query"][0].removeprefix("cat:")
                failure = state.failures.get(f"cat:{category}", failure)
            if failure == "timeout":
                time.sleep(2.0)  # the tests' sync_timeout_s is 0.5
            if failure == "500":
                return self.answer(500, b"upstream broke", "text/plain")
            if failure == "429":
                self.send_response(429)
                self.send_header("Retry-After", "7200")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts.path == "/api/daily_papers":
                day = query.get("date", [""])[0]
                body = json.dumps(state.daily.get(day, [])).encode()
                kind = "application/json"
            elif parts.path == "/api/query" and "id_list" in query:
                ids = query["id_list"][0].split(",")
                entries = b"".join(state.by_id.get(pid, UNKNOWN_ENTRY) for pid in ids)
                body = b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">'
                body += entries + b"</feed>"
                kind = "application/atom+xml"
            elif parts.path == "/api/query":
                category = query["search_query"][0].removeprefix("cat:")
                body = state.atom.get((category, int(query["start"][0])), empty_feed())
                kind = "application/atom+xml"
            elif parts.path.startswith("/api/papers/"):
                paper = state.hf_papers.get(parts.path.removeprefix("/api/papers/"))
                if paper is None:
                    return self.answer(404, b'{"error":"Paper not found"}', "application/json")
                body = json.dumps(paper).encode()
                kind = "application/json"
            else:
                return self.answer(404, b"no such page", "text/plain")
            if failure == "malformed":
                body = body[: len(body) // 2] + b"}{<<"
            if failure == "truncated":
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) + 500))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.answer(200, body, kind)

        def answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def empty_feed() -> bytes:
    return b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"></feed>'


def filled(replay: Replay, per_day: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Three days of real daily papers and one arXiv page (cs.LG; cs.CL empty)."""
    records = fixture_papers()
    for number, day in enumerate(DAYS):
        replay.daily[day] = [
            daily_entry(r) for r in records[number * per_day : (number + 1) * per_day]
        ]
    replay.atom[("cs.LG", 0)] = (ARXIV / "cs.LG-page1.xml").read_bytes()
    return replay.daily


def sync_settings(redis_url: str, base: str, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "hf_api_url": base,
        "arxiv_api_url": base,
        "arxiv_categories": "cs.LG,cs.CL",
        "arxiv_page_size": 3,
        "arxiv_delay_s": 0.0,
        "sync_timeout_s": 0.5,
        "sync_interval_s": 3600,
    }
    values.update(overrides)
    return make_settings(redis_url, **values)


async def sync_once(settings: Any, now: float = NOW, force: bool = True) -> dict[str, Any]:
    core = Core.connect(settings)
    try:
        results = await CatalogSync(core.redis, settings, core.catalog).run(
            ["hf", "arxiv"], now=now, force=force
        )
    finally:
        await core.close()
    return {result.source: result for result in results}


def week_scores(r: redis.Redis) -> dict[str, float]:
    return {
        str(k): float(v) for k, v in r.zrange(keys.trend_scores("week"), 0, -1, withscores=True)
    }


async def test_first_sync_imports_both_sources_and_a_second_is_idempotent(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    daily = filled(state)
    settings = sync_settings(redis_url, base)
    first = await sync_once(settings)
    assert first["hf"].ok, first
    assert first["arxiv"].ok, first
    hf_ids = {e["paper"]["id"] for entries in daily.values() for e in entries}
    assert first["hf"].new == len(hf_ids) == 15
    # arXiv's page: a new paper, one Hugging Face also listed (LARP), an old-style id.
    assert first["arxiv"].fetched == 2
    assert first["arxiv"].new == 1
    catalog = {k: json.loads(v) for k, v in r.hgetall(keys.PAPERS).items()}
    assert set(catalog) == hf_ids | {"2401.00912"}
    assert catalog["2401.00912"]["source"] == "arxiv"
    assert catalog["2401.00912"]["authors"] == ["Ada Example", "Grace Sample"]
    assert catalog["2401.00912"]["url"] == "https://arxiv.org/abs/2401.00912"
    # Upvotes are the trending prior, credited once.
    scores = week_scores(r)
    assert set(scores) == {pid for pid in hf_ids if catalog[pid]["upvotes"] > 0}
    version = r.get(keys.PAPERS_VERSION)
    requests = len(state.log)
    assert requests == 3 + 2  # three days, a short page of each category

    second = await sync_once(settings, NOW + 60)
    assert second["hf"].ok
    assert second["arxiv"].ok
    assert (second["hf"].new, second["hf"].updated) == (0, 0)
    assert (second["arxiv"].new, second["arxiv"].updated) == (0, 0)
    assert r.hlen(keys.PAPERS) == len(catalog)
    assert week_scores(r) == pytest.approx(scores)
    assert r.get(keys.PAPERS_VERSION) == version  # nothing changed: feeds stay cached


async def test_an_upvote_increase_is_credited_once_never_twice(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    daily = filled(state)
    settings = sync_settings(redis_url, base, arxiv_categories="cs.CL")
    await sync_once(settings)
    entry = daily[DAYS[0]][0]
    paper_id = entry["paper"]["id"]
    before = week_scores(r)[paper_id]
    upvotes = entry["paper"]["upvotes"]
    entry["paper"]["upvotes"] = upvotes + 40
    await sync_once(settings)
    await sync_once(settings)  # the same count again: nothing more
    after = week_scores(r)[paper_id]
    assert after - before == pytest.approx(40 * before / upvotes, rel=1e-3)
    assert json.loads(r.hget(keys.PAPERS, paper_id))["upvotes"] == upvotes + 40
    # A source showing fewer upvotes (arXiv shows none) never takes any back.
    entry["paper"]["upvotes"] = 1
    await sync_once(settings)
    assert week_scores(r)[paper_id] == pytest.approx(after)
    assert json.loads(r.hget(keys.PAPERS, paper_id))["upvotes"] == upvotes + 40


async def test_one_paper_from_both_sources_is_one_entry_with_both_contributions(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    larp = next(p for p in fixture_papers() if p["id"] == "2312.17653")
    state.daily[DAYS[0]] = [daily_entry(larp)]
    state.atom[("cs.LG", 0)] = (ARXIV / "cs.LG-page1.xml").read_bytes()
    settings = sync_settings(redis_url, base)
    await sync_once(settings)
    ids = set(r.hkeys(keys.PAPERS))
    assert ids == {"2312.17653", "2401.00912"}  # v1 and the HF paper: one entry
    stored = json.loads(r.hget(keys.PAPERS, "2312.17653"))
    assert stored["upvotes"] == larp["upvotes"]  # from Hugging Face
    assert stored["source"] == "arxiv"  # its text is arXiv's
    assert stored["abstract"].startswith("Language agents have shown")
    assert stored["url"] == "https://arxiv.org/abs/2312.17653"


async def test_a_demo_slug_is_merged_into_its_arxiv_entry_with_its_events(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    """The demo page knows papers by title; when a source brings the arXiv id, the
    reader's upvote, trending and lookups by the old id follow."""
    state, base = replay
    larp = next(p for p in fixture_papers() if p["id"] == "2312.17653")
    page = f"Jan 3\n\n{larp['title']}\n\n{larp['abstract']}\n"
    slug = slugify(larp["title"])
    assert [p.id for p in parse_page(page)] == [slug]
    settings = sync_settings(redis_url, base, arxiv_categories="cs.CL")
    core = Core.connect(settings)
    try:
        await core.catalog.seed_page_order(parse_page(page), NOW - 86_400)
    finally:
        await core.close()
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            token = (await http.post("/v1/installs", json={})).json()["token"]
            reader = {"Authorization": f"Bearer {token}"}
            upvote = {"event_id": "e-slug-1", "type": "upvote", "paper_id": slug, "ts": time.time()}
            sent = await http.post("/v1/events", json={"events": [upvote]}, headers=reader)
            assert sent.status_code == 200
            trending_before = week_scores(r)[slug]

            state.daily[DAYS[0]] = [daily_entry(larp)]
            results = await sync_once(settings)
            assert results["hf"].merged == 1

            assert set(r.hkeys(keys.PAPERS)) == {"2312.17653"}
            assert r.hget(keys.PAPERS_ALIAS, slug) == "2312.17653"
            scores = week_scores(r)
            assert slug not in scores
            assert scores["2312.17653"] >= trending_before  # the slug's trending moved over
            # The old id keeps resolving.
            old = await http.get(f"/v1/papers/{slug}")
            assert old.status_code == 200
            assert old.json()["id"] == "2312.17653"
            # The reader's upvote counts for the arXiv entry: it is theirs, not shown again.
            feed = (await http.get("/v1/feed", params={"limit": 10}, headers=reader)).json()
            assert "2312.17653" not in [item["paper"]["id"] for item in feed["items"]]
            # New events by the old id land on the arXiv entry; the trainer counts the
            # reader's records by either id for the arXiv paper's column.
            save = {"event_id": "e-slug-2", "type": "save", "paper_id": slug, "ts": time.time()}
            sent = await http.post("/v1/events", json={"events": [save]}, headers=reader)
            assert sent.status_code == 200

            # The upvote given before the merge is undone after it: the arXiv entry's
            # trending drops by exactly that upvote, and the library lists one paper.
            async def library(kind: str) -> list[str]:
                page = await http.get("/v1/me/library", params={"kind": kind}, headers=reader)
                return [item["paper"]["id"] for item in page.json()["items"]]

            deadline = time.monotonic() + 30  # the api sees the merge (model_poll_s)
            while await library("upvoted") != ["2312.17653"]:
                assert time.monotonic() < deadline
            before_unvote = week_scores(r)["2312.17653"]
            unvote = {"event_id": "e-slug-3", "type": "unvote", "paper_id": "2312.17653"}
            unvote["ts"] = time.time()
            sent = await http.post("/v1/events", json={"events": [unvote]}, headers=reader)
            assert sent.status_code == 200
            after_unvote = week_scores(r)["2312.17653"]
            epoch = float(r.get(keys.trend_epoch("week")) or 0)
            at = int(upvote["ts"] * 1000) / 1000  # records keep milliseconds
            upvote_weight = 4.0 * 2 ** ((at - epoch) / (48 * 3600))
            assert after_unvote == pytest.approx(before_unvote - upvote_weight, rel=1e-6)
            assert await library("upvoted") == []
            assert await library("saved") == ["2312.17653"]
            user_id = (await http.get("/v1/me/export", headers=reader)).json()["user_id"]
            assert r.hkeys(keys.user_papers(user_id)) == ["2312.17653"]  # one record
    data = await read_interactions(Core.connect(settings).redis)
    assert data.item_ids == ["2312.17653"]
    assert data.weights.shape == (1, 1)
    assert data.weights[0, 0] > 0


@pytest.mark.parametrize("failure", ["500", "429", "timeout", "malformed", "truncated"])
async def test_a_failing_source_loses_nothing_and_the_other_still_imports(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str], failure: str
) -> None:
    state, base = replay
    filled(state)
    settings = sync_settings(redis_url, base)
    state.failures["/api/query"] = failure  # arXiv fails
    results = await sync_once(settings)
    assert results["hf"].ok
    assert results["hf"].new == 15
    assert not results["arxiv"].ok
    assert results["arxiv"].error
    assert "2401.00912" not in r.hkeys(keys.PAPERS)
    expected = {"500": "HTTP 500", "429": "HTTP 429", "timeout": "timeout"}
    if failure in expected:
        assert expected[failure] in str(results["arxiv"].error)
    sync_state = r.hgetall(keys.SYNC_STATE)
    assert sync_state["arxiv:failures"] == "1"
    assert float(sync_state["arxiv:retry_at"]) >= NOW + (7200 if failure == "429" else 60)
    assert sync_state["arxiv:last_error"] == results["arxiv"].error
    catalog_before, trending_before = r.hgetall(keys.PAPERS), week_scores(r)

    # Not retried before its time; then it is, and what it brings arrives.
    waiting = await sync_once(settings, NOW + 30, force=False)
    assert waiting["arxiv"].skipped
    assert waiting["hf"].skipped
    assert r.hgetall(keys.PAPERS) == catalog_before
    assert week_scores(r) == trending_before
    del state.failures["/api/query"]
    later = await sync_once(settings, float(sync_state["arxiv:retry_at"]) + 1, force=False)
    assert later["arxiv"].ok
    assert "2401.00912" in r.hkeys(keys.PAPERS)
    assert r.hget(keys.SYNC_STATE, "arxiv:failures") == "0"


async def test_malformed_daily_papers_and_hostile_atom_are_refused_with_the_reason(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    filled(state)
    state.atom[("cs.LG", 0)] = (ARXIV / "hostile.xml").read_bytes()
    state.failures["/api/daily_papers"] = "malformed"
    results = await sync_once(sync_settings(redis_url, base))
    assert not results["hf"].ok
    assert "malformed daily papers" in str(results["hf"].error)
    assert not results["arxiv"].ok
    assert "DTDForbidden" in str(results["arxiv"].error)
    assert r.hlen(keys.PAPERS) == 0
    assert week_scores(r) == {}
    state.atom[("cs.LG", 0)] = (ARXIV / "error.xml").read_bytes()
    del state.failures["/api/daily_papers"]
    again = await sync_once(sync_settings(redis_url, base))
    assert again["hf"].ok
    assert "arXiv API error: incorrect id format" in str(again["arxiv"].error)


async def test_arxiv_pages_until_a_page_of_known_papers_and_waits_between_requests(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    from paperfeed.catalog.importers import parse_arxiv_atom

    state, base = replay
    for start in range(0, 15, 3):
        state.atom[("cs.LG", start)] = synthetic_page(start, 3)
    settings = sync_settings(
        redis_url, base, arxiv_categories="cs.LG", arxiv_delay_s=0.2, arxiv_max_pages=10
    )
    core = Core.connect(settings)
    try:
        # One paper of the second page is known (Hugging Face brought it): paging goes
        # on; every paper of the fourth is known: paging stops there.
        known = parse_arxiv_atom(synthetic_page(3, 3))[1:2] + parse_arxiv_atom(synthetic_page(9, 3))
        await core.catalog.upsert(known, NOW)
        result = (await CatalogSync(core.redis, settings, core.catalog).run(["arxiv"], NOW))[0]
    finally:
        await core.close()
    assert result.ok
    assert result.new == 8
    starts = [int(q["start"][0]) for _, path, q in state.log if path == "/api/query"]
    assert starts == [0, 3, 6, 9]
    times = [at for at, path, _ in state.log if path == "/api/query"]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.19


def synthetic_page(start: int, size: int) -> bytes:
    entries = "".join(
        f"""<entry><id>http://arxiv.org/abs/2402.{start + i:05d}v1</id>
        <published>2024-02-01T00:00:00Z</published>
        <title>Synthetic paper {start + i}</title><summary>About topic {start + i}.</summary>
        <author><name>Writer {i}</name></author>
        <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/></entry>"""
        for i in range(size)
    )
    return (
        f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">{entries}</feed>'.encode()
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Wed, 03 Jan 2024 12:10:00 GMT", now=NOW) == pytest.approx(600.0)
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_the_cli_syncs_and_reports_each_source(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    today = datetime.now(UTC).date()
    records = fixture_papers()
    state.daily[today.isoformat()] = [daily_entry(rec) for rec in records[:4]]
    state.daily[(today - timedelta(days=1)).isoformat()] = [daily_entry(records[4])]
    env = {
        **redis_env(redis_url),
        "PAPERFEED_HF_API_URL": base,
        "PAPERFEED_ARXIV_API_URL": base,
    }
    done = paperfeed_cli("sync", "--source", "hf", "--days", "2", env=env)
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(x["source"], x["ok"], x["new"]) for x in reports] == [("hf", True, 5)]
    assert r.hlen(keys.PAPERS) == 5
    state.failures["/api/daily_papers"] = "500"
    failed = paperfeed_cli("sync", "--source", "hf", env=env)
    assert failed.returncode == 1
    assert "HTTP 500" in json.loads(failed.stdout.splitlines()[0])["error"]


def test_the_worker_syncs_with_no_command_and_metrics_show_it(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    state, base = replay
    today = datetime.now(UTC).date().isoformat()
    state.daily[today] = [daily_entry(rec) for rec in fixture_papers()[:6]]
    state.failures["/api/query"] = "500"
    env = {
        **redis_env(redis_url),
        "PAPERFEED_HF_API_URL": base,
        "PAPERFEED_ARXIV_API_URL": base,
        "PAPERFEED_SYNC_INTERVAL_S": "3600",
        "PAPERFEED_SYNC_DAYS": "1",
        "PAPERFEED_ARXIV_CATEGORIES": "cs.LG",
        "PAPERFEED_DATA_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "paperfeed.cli", "worker", "--poll", "0.2"],
        env={**__import__("os").environ, **env},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and r.hget(keys.SYNC_STATE, "arxiv:failures") != "1":
            time.sleep(0.1)
        assert r.hlen(keys.PAPERS) == 6
        assert r.hget(keys.SYNC_STATE, "hf:last_new") == "6"
        assert r.hget(keys.SYNC_STATE, "arxiv:failures") == "1"
    finally:
        worker.terminate()
        worker.wait(10)
    settings = make_settings(redis_url)
    with live_server(settings) as server:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{server.url}/metrics").text
            if 'paperfeed_sync_papers_added{source="hf"} 6.0' in text:
                break
            time.sleep(0.2)
        assert 'paperfeed_sync_papers_added{source="hf"} 6.0' in text
        assert 'paperfeed_sync_failures{source="arxiv"} 1.0' in text
        assert 'paperfeed_sync_last_success_timestamp_seconds{source="hf"}' in text


def test_run_sync_refuses_a_second_sync_at_once(redis_url: str, r: redis.Redis) -> None:
    import asyncio

    from paperfeed.catalog.sync import SyncBusy
    from paperfeed.store.lease import Lease

    settings = make_settings(redis_url)
    with Lease(settings, keys.SYNC_LOCK, 30) as held:
        assert held.acquire()
        with pytest.raises(SyncBusy):
            asyncio.run(run_sync(settings, ["hf"]))


def test_logs_are_readable_lines_on_a_terminal_and_json_lines_otherwise(
    redis_url: str, r: redis.Redis
) -> None:
    """What ``make run`` prints to a person, and what a container's collector reads: the
    same failed sync, with its fields, both ways."""
    import os
    import pty
    import subprocess
    import sys

    env = {**os.environ, **redis_env(redis_url)}
    env.pop("PAPERFEED_LOG_JSON", None)
    command = [sys.executable, "-m", "paperfeed.cli", "sync", "--source", "hf"]
    piped = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in piped.stderr.splitlines() if line.startswith("{")]
    failed = next(line for line in lines if line["msg"].startswith("catalog sync failed"))
    assert failed["source"] == "hf"
    assert "127.0.0.1:9" in failed["reason"]

    leader, follower = pty.openpty()
    done = subprocess.run(command, env=env, stderr=follower, stdout=subprocess.DEVNULL, timeout=60)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    text = output.decode()
    assert done.returncode == 1
    assert "WARNING paperfeed.catalog.sync: catalog sync failed" in text
    assert "source=hf" in text
    assert not any(line.lstrip().startswith("{") for line in text.splitlines())


# --- each arXiv category is its own unit ---------------------------------------------


@pytest.mark.parametrize("answer", ["xml bomb", "error entry", "500", "garbage"])
async def test_a_failing_category_does_not_stop_another(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],
    answer: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """cs.CL (tried first) answers something refused; cs.LG's complete run is imported,
    and cs.CL alone waits for its own retry, its reason in the log and in the state."""
    state, base = replay
    state.atom[("cs.LG", 0)] = (ARXIV / "cs.LG-page1.xml").read_bytes()
    if answer == "xml bomb":
        state.atom[("cs.CL", 0)] = (ARXIV / "hostile.xml").read_bytes()
    elif answer == "error entry":
        state.atom[("cs.CL", 0)] = (ARXIV / "error.xml").read_bytes()
    else:
        state.failures["cat:cs.CL"] = "500" if answer == "500" else "malformed"
    settings = sync_settings(redis_url, base, arxiv_categories="cs.CL,cs.LG")
    caplog.set_level("WARNING", logger="paperfeed.catalog.sync")
    result = (await sync_once(settings))["arxiv"]
    assert not result.ok
    assert list(result.failed) == ["cs.CL"]
    why = {
        "xml bomb": "DTDForbidden",
        "error entry": "arXiv API error",
        "500": "HTTP 500",
        "garbage": "malformed arXiv answer for cs.CL",
    }[answer]
    assert why in result.failed["cs.CL"]
    assert result.new == 2  # cs.LG's papers
    assert set(r.hkeys(keys.PAPERS)) == {"2401.00912", "2312.17653"}
    sync_state = r.hgetall(keys.SYNC_STATE)
    assert sync_state["arxiv:cs.CL:failures"] == "1"
    assert why in sync_state["arxiv:cs.CL:last_error"]
    assert float(sync_state["arxiv:cs.CL:retry_at"]) == NOW + 60
    assert sync_state["arxiv:cs.LG:failures"] == "0"
    assert sync_state["arxiv:cs.LG:last_new"] == "2"
    assert float(sync_state["arxiv:cs.LG:last_success"]) == NOW
    assert sync_state["arxiv:failing"] == "cs.CL"
    assert sync_state["arxiv:last_error"].startswith("cs.CL: ")
    failed = [rec for rec in caplog.records if rec.getMessage().startswith("catalog sync failed")]
    assert [(rec.__dict__["source"], rec.__dict__["category"]) for rec in failed] == [
        ("arxiv", "cs.CL")
    ]

    # Its retry asks cs.CL alone (cs.LG is not due before the sync interval).
    state.log.clear()
    state.atom[("cs.CL", 0)] = empty_feed()
    state.failures.clear()
    assert (await sync_once(settings, NOW + 30, force=False))["arxiv"].skipped
    later = (await sync_once(settings, NOW + 61, force=False))["arxiv"]
    assert later.ok, later
    asked = [q["search_query"][0] for _, path, q in state.log if path == "/api/query"]
    assert asked == ["cat:cs.CL"]
    sync_state = r.hgetall(keys.SYNC_STATE)
    assert sync_state["arxiv:cs.CL:failures"] == "0"
    assert sync_state["arxiv:failing"] == ""
    assert sync_state["arxiv:failures"] == "0"


def test_metrics_say_which_category_fails(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    state.atom[("cs.LG", 0)] = (ARXIV / "cs.LG-page1.xml").read_bytes()
    state.atom[("cs.CL", 0)] = (ARXIV / "hostile.xml").read_bytes()
    settings = sync_settings(redis_url, base, arxiv_categories="cs.CL,cs.LG")
    asyncio.run(sync_once(settings))
    with live_server(settings) as server:
        expected = [
            'paperfeed_sync_category_failing{category="cs.CL"} 1.0',
            'paperfeed_sync_category_failing{category="cs.LG"} 0.0',
            'paperfeed_sync_category_failures{category="cs.CL"} 1.0',
            'paperfeed_sync_category_papers_added{category="cs.LG"} 2.0',
            'paperfeed_sync_papers_added{source="arxiv"} 2.0',
            'paperfeed_sync_failures{source="arxiv"} 1.0',
        ]
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{server.url}/metrics").text
            if all(line in text for line in expected):
                break
            time.sleep(0.2)
        for line in expected:
            assert line in text
        assert 'paperfeed_sync_category_last_success_timestamp_seconds{category="cs.LG"}' in text


async def test_a_retry_after_from_one_category_holds_back_every_arxiv_request(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    """A 429 concerns arXiv, not a category: the run ends there, and neither the other
    categories nor the lookup of reported ids ask arXiv before it passed."""
    state, base = replay
    state.atom[("cs.LG", 0)] = (ARXIV / "cs.LG-page1.xml").read_bytes()
    state.failures["cat:cs.CL"] = "429"
    settings = sync_settings(redis_url, base, arxiv_categories="cs.CL,cs.LG")
    result = (await sync_once(settings))["arxiv"]
    assert list(result.failed) == ["cs.CL"]
    asked = [q["search_query"][0] for _, path, q in state.log if path == "/api/query"]
    assert asked == ["cat:cs.CL"]
    assert float(r.hget(keys.SYNC_STATE, "arxiv:refused_until") or 0) == NOW + 7200
    assert result.retry_at == NOW + 7200
    await report(settings, "1706.03762", "reader-1", "reader-2")
    assert (await sync_once(settings, NOW + 3_600, force=False))["arxiv"].skipped
    assert (await lookup_once(settings, NOW + 3_600)).skipped
    assert state.count("/api/query") == 1
    del state.failures["cat:cs.CL"]
    results = await sync_once(settings, NOW + 7_201, force=False)
    assert results["arxiv"].ok
    assert (await lookup_once(settings, NOW + 7_202)).new == 1


# --- reported papers: a source's metadata, or nothing --------------------------------


async def report(settings: Any, paper_id: str, *users: str, now: float = NOW) -> None:
    core = Core.connect(settings)
    try:
        for user in users:
            await core.catalog.reports.report(user, paper_id, now)
    finally:
        await core.close()


async def lookup_once(settings: Any, now: float = NOW, force: bool = False) -> SourceResult:
    """The worker's lookup of reported ids (when due, as the worker runs it)."""
    core = Core.connect(settings)
    try:
        results = await CatalogSync(core.redis, settings, core.catalog).run(
            [], now=now, force=force, lookup=True
        )
    finally:
        await core.close()
    assert [result.source for result in results] == ["reported"]
    return results[0]


def asked(replay: Replay) -> list[str]:
    """The lookups the sources were asked, in order: ``arxiv:<ids>``, ``hf:<id>``."""
    with replay.lock:
        return [
            f"arxiv:{q['id_list'][0]}" if path == "/api/query" else f"hf:{path.rsplit('/', 1)[1]}"
            for _, path, q in replay.log
            if "id_list" in q or path.startswith("/api/papers/")
        ]


async def test_a_reported_paper_is_shown_to_no_one_until_a_source_confirms_it(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    """Two readers open an old arXiv paper the catalog lacks, their pages saying what
    they like: nobody sees it until arXiv describes it; then it is arXiv's paper, dated
    by its 2017 submission (never "new")."""
    state, base = replay
    filled(state)
    settings = sync_settings(redis_url, base, arxiv_categories="cs.LG")
    await sync_once(settings)
    paper_id = "1706.03762"
    with live_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:

            async def reader() -> dict[str, str]:
                token = (await http.post("/v1/installs", json={})).json()["token"]
                return {"Authorization": f"Bearer {token}"}

            async def feed(auth: dict[str, str]) -> dict[str, Any]:
                answer = await http.get("/v1/feed", params={"limit": 100}, headers=auth)
                assert answer.status_code == 200, answer.text
                return {item["paper"]["id"]: item for item in answer.json()["items"]}

            async def listed() -> list[str]:
                page = (await http.get("/v1/papers", params={"limit": 100})).json()
                return [p["id"] for p in page["items"]]

            for n in range(2):
                view = {
                    "event_id": f"e-view-{n}",
                    "type": "view",
                    "paper_id": f"{paper_id}v5",
                    "ts": time.time(),
                    "title": "Miracle pills, buy now",
                }
                sent = await http.post(
                    "/v1/events", json={"events": [view]}, headers=await reader()
                )
                assert sent.status_code == 200, sent.text
            assert r.zscore(keys.CANDIDATE_SCORE, paper_id) == 2
            assert r.hget(keys.CANDIDATE_PAPERS, paper_id) is None
            assert (await http.get(f"/v1/papers/{paper_id}")).status_code == 404
            assert paper_id not in await listed()
            found = (await http.get("/v1/search", params={"q": paper_id})).json()
            assert paper_id not in [item["paper"]["id"] for item in found["items"]]
            assert paper_id not in await feed(await reader())

            result = await lookup_once(settings, time.time())
            assert (result.ok, result.new, result.fetched) == (True, 1, 1), result
            assert asked(state) == [f"arxiv:{paper_id}"]

            paper = (await http.get(f"/v1/papers/{paper_id}")).json()
            assert paper["title"] == "Attention Is All You Need"
            assert paper["authors"][:2] == ["Ashish Vaswani", "Noam Shazeer"]
            assert paper["abstract"].startswith("The dominant sequence transduction models")
            assert paper["published"] == "2017-06-12T17:57:34Z"
            assert paper["source"] == "arxiv"
            assert paper["url"] == "https://arxiv.org/abs/1706.03762"
            assert "pills" not in json.dumps(paper)
            # Dated by its submission: listed after every newer paper, and never new.
            assert (await listed())[-1] == paper_id
            newcomer = await reader()
            deadline = time.monotonic() + 30
            items = await feed(newcomer)
            while paper_id not in items and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                items = await feed(newcomer)
            assert paper_id in items
            assert not any(reason.startswith("new") for reason in items[paper_id]["reasons"])
    assert r.zcard(keys.CANDIDATE_SCORE) == 0
    assert not r.exists(keys.candidate_reporters(paper_id))
    assert r.hget(keys.SYNC_STATE, "reported:added_total") == "1"


async def test_an_id_no_source_knows_is_never_admitted_and_leaves_the_candidates(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    settings = sync_settings(redis_url, base)
    fake, impossible = "2312.99999", "2612.00001"  # a month to come, at NOW
    await report(settings, fake, "reader-1", "reader-2")
    await report(settings, impossible, "reader-1", "reader-2")
    await report(settings, "2401.99999", "reader-1")  # one reporter: not looked up
    first = await lookup_once(settings)
    assert (first.ok, first.new, first.dropped) == (True, 0, 1), first
    assert asked(state) == [f"arxiv:{fake}", f"hf:{fake}"]  # the impossible one: no request
    assert r.zscore(keys.CANDIDATE_SCORE, impossible) is None
    assert r.zscore(keys.CANDIDATE_SCORE, fake) == 2  # a miss: tried again later
    # Not due before the lookup interval; then not asked before its hour.
    assert (await lookup_once(settings, NOW + 60)).skipped
    assert (await lookup_once(settings, NOW + 400)).fetched == 0
    assert len(asked(state)) == 2
    await lookup_once(settings, NOW + 3_601)
    last = await lookup_once(settings, NOW + 7_202)
    assert last.dropped == 1
    assert asked(state) == [f"arxiv:{fake}", f"hf:{fake}"] * 3
    assert r.zrange(keys.CANDIDATE_SCORE, 0, -1) == ["2401.99999"]
    assert not r.exists(keys.candidate_reporters(fake))
    assert r.hget(keys.CANDIDATE_PAPERS, fake) is None
    assert r.hlen(keys.PAPERS) == 0
    assert r.hget(keys.SYNC_STATE, "reported:dropped_total") == "2"
    assert r.hget(keys.SYNC_STATE, "reported:waiting") == "1"


async def test_hugging_face_confirms_what_arxiv_does_not_list(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    larp = next(p for p in fixture_papers() if p["id"] == "2312.17653")
    state.hf_papers["2312.17653"] = daily_entry(larp)["paper"]
    del state.by_id["2312.17653"]
    settings = sync_settings(redis_url, base)
    await report(settings, "2312.17653", "reader-1", "reader-2")
    await report(settings, "1706.03762", "reader-1", "reader-2", "reader-3")
    result = await lookup_once(settings)
    assert (result.ok, result.new) == (True, 2), result
    # Most reporters first; one arXiv request; Hugging Face for what arXiv lacks.
    assert asked(state) == ["arxiv:1706.03762,2312.17653", "hf:2312.17653"]
    stored = json.loads(r.hget(keys.PAPERS, "2312.17653"))
    assert stored["source"] == "hf"
    assert stored["title"] == larp["title"]
    assert stored["published"] == larp["published"]
    assert stored["url"] == "https://arxiv.org/abs/2312.17653"
    # With Hugging Face alone among the sources, arXiv is never asked.
    state.log.clear()
    await report(settings, "2312.17654", "reader-1", "reader-2")
    hf_only = sync_settings(redis_url, base, sync_sources="hf")
    assert (await lookup_once(hf_only, NOW + 400)).fetched == 1
    assert asked(state) == ["hf:2312.17654"]


async def test_a_source_failure_is_not_an_answer(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    state, base = replay
    settings = sync_settings(redis_url, base)
    await report(settings, "1706.03762", "reader-1", "reader-2")
    state.failures["/api/query"] = "malformed"
    failed = await lookup_once(settings)
    assert not failed.ok
    assert "malformed arXiv answer" in str(failed.error)
    assert asked(state) == ["arxiv:1706.03762"]  # Hugging Face is not asked instead
    assert r.zscore(keys.CANDIDATE_SCORE, "1706.03762") == 2
    assert r.hget(keys.CANDIDATE_PAPERS, "1706.03762") is None  # no miss counted
    sync_state = r.hgetall(keys.SYNC_STATE)
    assert sync_state["reported:failures"] == "1"
    assert float(sync_state["reported:retry_at"]) == NOW + 60
    assert (await lookup_once(settings, NOW + 30)).skipped
    state.failures["/api/query"] = "500"
    assert not (await lookup_once(settings, NOW + 61)).ok
    assert float(r.hget(keys.SYNC_STATE, "reported:retry_at") or 0) == NOW + 61 + 120
    del state.failures["/api/query"]
    recovered = await lookup_once(settings, NOW + 182)
    assert (recovered.ok, recovered.new) == (True, 1)
    assert r.hget(keys.SYNC_STATE, "reported:failures") == "0"


async def test_papers_once_admitted_from_page_text_wait_for_a_source_again(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    """A deployment upgraded from client-text admission: those papers leave the catalog
    until a source confirms them (a made-up one never comes back)."""
    from paperfeed.catalog.papers import Paper

    _, base = replay
    settings = sync_settings(redis_url, base)
    core = Core.connect(settings)
    try:
        injected = [
            Paper(id="2312.99998", title="Miracle pills", source="reported"),
            Paper(id="1706.03762", title="A page's title", source="reported"),
        ]
        await core.catalog.upsert(injected, NOW - 86_400)
    finally:
        await core.close()
    result = await lookup_once(settings)
    assert (result.new, result.fetched) == (1, 2), result
    assert set(r.hkeys(keys.PAPERS)) == {"1706.03762"}
    assert json.loads(r.hget(keys.PAPERS, "1706.03762"))["source"] == "arxiv"
    assert r.zscore(keys.PAPERS_BY_DATE, "2312.99998") is None
    assert r.hget(keys.SYNC_STATE, "reported:requeued") == "2"


async def test_with_sync_off_the_lookup_of_reported_ids_brings_no_source_along(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str]
) -> None:
    """``PAPERFEED_SYNC_INTERVAL_S=0`` turns the sources' sync off: the worker's run for
    the lookup of reported ids (due at a first start) asks only for those ids."""
    state, base = replay
    settings = sync_settings(redis_url, base, sync_interval_s=0, candidate_min_users=1)
    await report(settings, "1706.03762", "reader-1")
    core = Core.connect(settings)
    try:
        results = await CatalogSync(core.redis, settings, core.catalog).run(
            ["hf", "arxiv"], now=NOW, lookup=True
        )
    finally:
        await core.close()
    assert [(result.source, result.skipped) for result in results] == [
        ("hf", True),
        ("arxiv", True),
        ("reported", False),
    ]
    with state.lock:
        paths = [path for _, path, _ in state.log]
    assert "/api/daily_papers" not in paths
    assert asked(state) == ["arxiv:1706.03762"]


def test_the_worker_looks_reported_ids_up_with_no_command(
    redis_url: str, r: redis.Redis, replay: tuple[Replay, str], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    state, base = replay
    settings = sync_settings(redis_url, base, candidate_min_users=1)
    asyncio.run(report(settings, "1706.03762", "reader-1", now=time.time()))
    env = {
        **os.environ,
        **redis_env(redis_url),
        "PAPERFEED_HF_API_URL": base,
        "PAPERFEED_ARXIV_API_URL": base,
        "PAPERFEED_CANDIDATE_MIN_USERS": "1",
        "PAPERFEED_DATA_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "paperfeed.cli", "worker", "--poll", "0.2"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not r.hexists(keys.PAPERS, "1706.03762"):
            time.sleep(0.1)
        assert json.loads(r.hget(keys.PAPERS, "1706.03762"))["source"] == "arxiv"
    finally:
        worker.terminate()
        worker.wait(10)
    assert asked(state) == ["arxiv:1706.03762"]
    with live_server(make_settings(redis_url)) as server:
        line = 'paperfeed_sync_papers_added{source="reported"} 1.0'
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and line not in text:
            text = httpx.get(f"{server.url}/metrics").text
            time.sleep(0.2)
        assert line in text
        assert "paperfeed_reported_waiting 0.0" in text
