"""Bring your library (issue 26): POST /v1/me/import through the real api, on real Redis.

A reader's BibTeX file, Zotero CSL-JSON export, RIS file or list of arXiv ids becomes
their saves: the next feed is about the library's topic, a re-import changes nothing, a
malformed entry is reported by its line while the rest is imported, a file over the
limit is a 413 before it is read, an arXiv id the catalog lacks waits for a source,
erasure takes it all, the export lists it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
import pytest
import redis

from paperfeed.imports.importer import IMPORTS_PER_HOUR, MAX_BYTES, MAX_ENTRIES
from paperfeed.imports.parse import arxiv_ids, detect_format, parse
from paperfeed.store import keys
from tests.conftest import LiveServer, admin_headers, live_server, register
from tests.personas import PAPERS_PER_TOPIC, event, paper_id, papers, topic_of
from tests.recsys_fixtures import feed
from tests.test_sync import Replay, asked, lookup_once, replay, sync_settings  # noqa: F401

CATALOG = {p["id"]: p for p in papers()}
PROTEINS, GRAPHS, ROBOTS = 2, 0, 1


def title(pid: str) -> str:
    return str(CATALOG[pid]["title"])


@pytest.fixture
def catalog(http: httpx.Client) -> None:
    response = http.post("/v1/admin/papers", json=papers(), headers=admin_headers())
    assert response.status_code == 200, response.text


def send(http: httpx.Client, auth: dict[str, str], events: list[dict[str, Any]]) -> None:
    response = http.post("/v1/events", json={"events": events}, headers=auth)
    assert response.status_code == 200, response.text


def import_file(
    http: httpx.Client, auth: dict[str, str], body: str | bytes, fmt: str | None = None
) -> httpx.Response:
    params = {"format": fmt} if fmt else {}
    return http.post("/v1/me/import", content=body, params=params, headers=auth)


def imported(
    http: httpx.Client, auth: dict[str, str], body: str | bytes, fmt: str | None = None
) -> dict[str, Any]:
    response = import_file(http, auth, body, fmt)
    assert response.status_code == 200, response.text
    return dict(response.json())


def topics(answer: dict[str, Any]) -> Counter[str]:
    return Counter(topic_of(item["paper"]["id"]) for item in answer["items"])


def saved_ids(http: httpx.Client, auth: dict[str, str]) -> set[str]:
    response = http.get("/v1/me/library", params={"kind": "saved", "limit": 200}, headers=auth)
    assert response.status_code == 200, response.text
    return {item["paper"]["id"] for item in response.json()["items"]}


def lean_trending_to_robots(http: httpx.Client) -> None:
    """Without anything personal, a reader's feed is trending's: robots here."""
    _, others = register(http)
    send(http, others, [event(paper_id(ROBOTS, n), "upvote") for n in range(8)])


def bibtex(pids: list[str]) -> str:
    """A hand-made .bib as people keep them: ids in eprint fields, arXiv DOIs, journal
    notes, or nothing but the title (with LaTeX braces)."""
    out = []
    for n, pid in enumerate(pids):
        words = title(pid).split(" ", 1)
        if n % 3 == 0:
            ident = f"  eprint = {{{pid}v2}},\n  archivePrefix = {{arXiv}},\n"
            text = title(pid)
        elif n % 3 == 1:
            ident = f"  doi = {{10.48550/arXiv.{pid}}},\n"
            text = title(pid)
        else:
            ident = "  journal = {Proteins},\n"
            text = "{" + words[0] + "} " + words[1]  # matched by its title alone
        out.append(
            f"@article{{paper{n},\n  title = {{{text}}},\n  author = {{Doe, Jane}},\n"
            f"{ident}  year = {{2024}},\n}}\n\n"
        )
    return "".join(out)


def zotero_csl(pids: list[str]) -> str:
    """Zotero's "Export Library... > CSL JSON" of arXiv preprints."""
    items = [
        {
            "id": f"http://zotero.org/users/local/abcd/items/ITEM{n:04d}",
            "type": "article",
            "title": title(pid),
            "author": [{"family": "Doe", "given": "Jane"}],
            "issued": {"date-parts": [["2024", 10, 1]]},
            "DOI": f"10.48550/arXiv.{pid}",
            "URL": f"http://arxiv.org/abs/{pid}",
            "number": f"arXiv:{pid}",
            "publisher": "arXiv",
            "source": "arXiv.org",
            "note": f"arXiv:{pid} [cs]",
        }
        for n, pid in enumerate(pids)
    ]
    return json.dumps(items, indent=2)


# --- the feed follows the library ------------------------------------------------------


def test_a_bibtex_library_makes_the_next_feed_about_its_topic(
    http: httpx.Client, catalog: None
) -> None:
    lean_trending_to_robots(http)
    _, auth = register(http)
    before = feed(http, auth)
    share = PAPERS_PER_TOPIC / len(CATALOG)  # the catalog's share of each topic: 1/3
    assert topics(before)["proteins"] < len(before["items"]) * 0.5, topics(before)
    library = [paper_id(PROTEINS, n) for n in range(9)]
    answer = imported(http, auth, bibtex(library))  # format detected
    assert answer["format"] == "bibtex"
    assert (answer["entries"], answer["matched"], answer["saved"]) == (9, 9, 9), answer
    assert answer["unmatched"] == answer["unreadable"] == answer["waiting"] == 0
    assert saved_ids(http, auth) == set(library)
    after = feed(http, auth)
    on_topic = topics(after)["proteins"]
    assert len(after["items"]) == 10
    assert on_topic >= 5 > share * 10, topics(after)
    assert not set(library) & {item["paper"]["id"] for item in after["items"]}  # they have it


def test_a_zotero_csl_json_export_makes_the_next_feed_about_its_topic(
    api: LiveServer,
) -> None:
    """With a trained model (the learning-loop fixture: readers of three topics)."""
    http = httpx.Client(base_url=api.url, timeout=30)
    _, auth = register(http)
    library = [paper_id(GRAPHS, n) for n in range(20, 28)]
    answer = imported(http, auth, zotero_csl(library), "csl-json")
    assert (answer["format"], answer["matched"], answer["saved"]) == ("csl-json", 8, 8), answer
    after = feed(http, auth)
    assert after["model_version"] is not None
    assert topics(after)["graphs"] >= 5, topics(after)
    assert any("because you saved" in r for i in after["items"] for r in i["reasons"])


# --- idempotence ------------------------------------------------------------------------


def reader_state(r: redis.Redis, user_id: str) -> dict[str, Any]:
    return {
        "papers": r.hgetall(keys.user_papers(user_id)),
        "events": r.get(keys.user_events(user_id)),
        "count": r.hget(keys.user_profile(user_id), "events"),
        "trending": {
            w: r.zrange(keys.trend_scores(w), 0, -1, withscores=True) for w in keys.WINDOWS
        },
    }


def test_a_re_import_changes_nothing(http: httpx.Client, catalog: None, r: redis.Redis) -> None:
    user_id, auth = register(http)
    library = [paper_id(GRAPHS, n) for n in range(6)]
    first = imported(http, auth, bibtex(library))
    assert first["saved"] == 6
    export = http.get("/v1/me/export", headers=auth).json()
    state = reader_state(r, user_id)
    again = imported(http, auth, bibtex(library))
    assert (again["matched"], again["saved"], again["unchanged"]) == (6, 0, 6), again
    assert reader_state(r, user_id) == state
    assert http.get("/v1/me/export", headers=auth).json()["events_total"] == export["events_total"]
    # The same papers in another format, and an unsave since: still nothing twice.
    send(http, auth, [event(library[0], "unsave")])
    state = reader_state(r, user_id)
    csl = imported(http, auth, zotero_csl(library[:3]))
    assert (csl["saved"], csl["unchanged"]) == (0, 3), csl
    assert reader_state(r, user_id) == state
    assert library[0] not in saved_ids(http, auth)


# --- problems, by line -------------------------------------------------------------------


def test_a_malformed_entry_is_reported_by_line_and_the_rest_imported(
    http: httpx.Client, catalog: None
) -> None:
    _, auth = register(http)
    good = [paper_id(ROBOTS, n) for n in range(4)]
    text = bibtex(good[:2])
    broken_line = text.count("\n") + 1
    text += "@article{broken,\n  title = {Unclosed brace,\n  year = 2020,\n\n"
    unknown_line = text.count("\n") + 1
    text += "@book{nowhere,\n  title = {A Title No Catalog Has},\n  doi = {10.1000/xyz123},\n}\n\n"
    text += bibtex(good[2:]).replace("paper0", "paper10").replace("paper1", "paper11")
    answer = imported(http, auth, text, "bibtex")
    assert (answer["matched"], answer["saved"]) == (4, 4), answer
    assert (answer["unreadable"], answer["unmatched"]) == (1, 1), answer
    broken, nowhere = answer["problems"]
    assert (broken["line"], broken["entry"]) == (broken_line, "broken"), broken
    assert "could not be read" in broken["message"]
    assert (nowhere["line"], nowhere["entry"]) == (unknown_line, "nowhere"), nowhere
    assert "10.1000/xyz123" in nowhere["message"]
    assert saved_ids(http, auth) == set(good)

    # CSL-JSON: an item that is not one, a title that is not text, JSON broken part-way.
    items = json.loads(zotero_csl(good))
    items[1] = "not an item"
    lines = json.dumps(items, indent=2).splitlines()
    cut = max(n for n, line in enumerate(lines) if '"title"' in line)
    lines[cut] = '      "title": "broken,'  # the last item's title never closes
    answer = imported(http, auth, "\n".join(lines), "csl-json")
    assert answer["entries"] == 2, answer
    assert answer["unreadable"] == 2, answer
    first, last = answer["problems"]
    assert (first["entry"], first["message"]) == ("#2", "not an item (a JSON object)")
    assert last["line"] == cut + 1, last
    assert "not valid JSON" in last["message"], last


def test_a_file_with_nothing_readable_says_what_it_could_not_read(
    http: httpx.Client, catalog: None
) -> None:
    """What a file holds is answered, never refused (nor a 5xx): entries 0, its problems
    by line. A request without a body, or with a format that is none, is a 400."""
    _, auth = register(http)
    cases: list[tuple[str | bytes, str | None, str, list[int]]] = [
        ("hello, I am not a library\n\nnor this", None, "arxiv-ids", [1, 3]),
        ("@article{x, title = {Oops", "bibtex", "bibtex", [1]),
        ('{"title": ', "csl-json", "csl-json", [1]),
        ('[{"title": "a"}, 3', None, "csl-json", [1, 1, 1]),
        ("TI  - no type\nER  - \n", "ris", "ris", [1]),
        (" \n", None, "arxiv-ids", []),
        ("\x00\xff\xfe{{{", None, "arxiv-ids", [1]),
    ]
    for body, fmt, read_as, lines in cases:
        answer = imported(http, auth, body, fmt)
        assert answer["format"] == read_as, answer
        assert answer["saved"] == answer["entries"] - answer["unmatched"], answer
        assert [p["line"] for p in answer["problems"]] == lines, (body, answer)
    for body, fmt, field in [("", None, "body"), ("2410.00001", "nonsense", "format")]:
        response = import_file(http, auth, body, fmt)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["extra"][0]["key"] == field, response.text
    assert import_file(http, {}, "2410.00001").status_code == 401
    latin1 = "@misc{latin, title = {Caf\xe9 au lait}}\n".encode("latin-1")  # not UTF-8
    (problem,) = imported(http, auth, latin1)["problems"]
    assert problem["entry"] == "latin"


# --- limits -----------------------------------------------------------------------------


def test_a_file_over_the_limit_is_a_413(http: httpx.Client, server: LiveServer) -> None:
    _, auth = register(http)
    line = "2410.00001\n"
    too_big = line * (MAX_BYTES // len(line) + 1)
    assert len(too_big) > MAX_BYTES
    response = import_file(http, auth, too_big)
    assert response.status_code == 413, response.text
    assert "2 MiB" in response.json()["detail"]
    # Streamed (no Content-Length): counted as it arrives.
    chunks = (too_big[n : n + 65536].encode() for n in range(0, len(too_big), 65536))
    response = http.post("/v1/me/import", content=chunks, headers=auth)
    assert response.status_code == 413, response.text
    # Refused from its Content-Length, before any of the body is sent.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            f"POST /v1/me/import HTTP/1.1\r\nHost: x\r\n{auth_header(auth)}"
            f"Content-Length: {MAX_BYTES + 1}\r\nContent-Type: text/plain\r\n\r\n"
        )
        sock.sendall(head.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413"), "413 before the body"
    # Under the limit but over the entry count.
    many = "".join(f"2401.{n:05d}\n" for n in range(MAX_ENTRIES + 1))
    response = import_file(http, auth, many)
    assert response.status_code == 413, response.text
    assert f"at most {MAX_ENTRIES}" in response.json()["detail"]


def test_a_reader_imports_at_most_20_times_an_hour(http: httpx.Client, r: redis.Redis) -> None:
    user_id, auth = register(http)
    for _ in range(IMPORTS_PER_HOUR):
        assert import_file(http, auth, "2410.00001").status_code == 200
    response = import_file(http, auth, "2410.00001")
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "3600"
    assert "imports an hour" in response.json()["detail"]
    assert 0 < r.pttl(keys.user_imports(user_id)) <= 3_600_000
    _, other = register(http)  # another reader's budget is their own
    assert import_file(http, other, "2410.00001").status_code == 200


def auth_header(auth: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in auth.items())


# --- RIS, lists of ids, papers the catalog lacks -----------------------------------------


def test_ris_and_a_plain_list_of_arxiv_ids_and_urls(http: httpx.Client, catalog: None) -> None:
    _, auth = register(http)
    ris_ids = [paper_id(PROTEINS, n) for n in range(3)]
    ris = "".join(
        f"TY  - JOUR\nTI  - {title(pid)}\nAU  - Doe, Jane\n"
        + (f"UR  - https://arxiv.org/abs/{pid}v1\n" if n else "")
        + "ER  - \n\n"
        for n, pid in enumerate(ris_ids)
    )
    answer = imported(http, auth, ris)
    assert (answer["format"], answer["matched"], answer["saved"]) == ("ris", 3, 3), answer
    listed = [paper_id(GRAPHS, n) for n in range(5)]
    text = "\n".join(
        [
            "# my reading list",
            f"{listed[0]}v3",
            f"https://arxiv.org/abs/{listed[1]}  https://arxiv.org/pdf/{listed[2]}v2.pdf",
            f"arXiv:{listed[3]}",
            "hep-th/9901001",
            f"https://huggingface.co/papers/{listed[4]}",
            "not an id at all",
        ]
    )
    answer = imported(http, auth, text)
    assert answer["format"] == "arxiv-ids"
    assert (answer["entries"], answer["matched"], answer["saved"]) == (6, 5, 5), answer
    old, junk = answer["problems"]
    assert old["line"] == 5, old
    assert "pre-2007" in old["message"], old
    assert (junk["line"], junk["message"]) == (7, "no arXiv id or URL in this line"), junk
    assert saved_ids(http, auth) == set(ris_ids) | set(listed)


def test_arxiv_ids_the_catalog_lacks_wait_for_a_source(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    text = f"{paper_id(GRAPHS, 1)}\n2501.01234v2\nhttps://arxiv.org/abs/2502.04321\n2413.00001\n"
    answer = imported(http, auth, text)
    assert (answer["matched"], answer["waiting"], answer["unmatched"]) == (1, 2, 1), answer
    assert answer["waiting_ids"] == ["2501.01234", "2502.04321"]
    assert answer["reported"] == 2
    (impossible,) = answer["problems"]
    assert (impossible["line"], impossible["entry"]) == (4, "2413.00001"), impossible
    assert "cannot be an arXiv id" in impossible["message"]
    # Reported to the catalog's lookup, as a paper a reader opened: the id and the
    # install, nothing else; the paper is nobody else's to see until a source has it.
    for pid in answer["waiting_ids"]:
        assert r.zscore(keys.CANDIDATE_SCORE, pid) == 1
        assert r.sismember(keys.candidate_reporters(pid), user_id)
        assert http.get(f"/v1/papers/{pid}").status_code == 404
    # In the reader's own library all the same.
    assert {"2501.01234", "2502.04321"} <= saved_ids(http, auth)
    again = imported(http, auth, text)
    assert (again["saved"], again["unchanged"], again["reported"]) == (0, 3, 0), again


# --- privacy: export and erasure -----------------------------------------------------------


def test_the_export_lists_imported_saves_and_erasure_removes_them(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    user_id, auth = register(http)
    library = [paper_id(ROBOTS, n) for n in range(5)]
    assert imported(http, auth, bibtex(library))["saved"] == 5
    assert imported(http, auth, "2503.00042\n")["waiting"] == 1
    export = http.get("/v1/me/export", headers=auth).json()
    for pid in [*library, "2503.00042"]:
        assert export["papers"][pid]["saved"], pid
    saves = [e for e in export["events"] if e["type"] == "save"]
    assert {e["paper_id"] for e in saves} == {*library, "2503.00042"}
    assert export["events_total"] == 6
    # The saves earned trending, once per reader and paper, as any save does.
    assert all(r.zscore(keys.trend_scores("day"), pid) for pid in library)

    assert http.delete("/v1/me", headers=auth).status_code == 204
    assert [k for k in r.scan_iter("*") if user_id in str(k)] == []  # the import budget too
    assert not r.sismember(keys.candidate_reporters("2503.00042"), user_id)
    trending = http.get("/v1/trending", params={"window": "day", "limit": 200}).json()
    assert not set(library) & {item["paper"]["id"] for item in trending["items"]}
    assert import_file(http, auth, bibtex(library)).status_code == 401


# --- the parser, on its own ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://arxiv.org/abs/2411.01234v3", ("2411.01234", None)),
        ("http://arxiv.org/pdf/2411.01234.pdf", ("2411.01234", None)),
        ("arXiv preprint arXiv:2106.09685", ("2106.09685", None)),
        ("10.48550/arXiv.1706.03762", ("1706.03762", None)),
        ("https://huggingface.co/papers/2403.00004", ("2403.00004", None)),
        ("https://arxiv.org/abs/hep-th/9901001v2", (None, "hep-th/9901001")),
        ("arXiv:math.gt/0309136", (None, "math.GT/0309136")),
        ("Journal of Things 2411.01234", (None, None)),  # a number is not said to be arXiv's
        ("arXiv:2411.012345", (None, None)),
    ],
)
def test_arxiv_ids_in_text(value: str, expected: tuple[str | None, str | None]) -> None:
    assert arxiv_ids([value]) == expected


def test_formats_are_detected_and_latex_titles_decoded() -> None:
    assert detect_format("  [\n{}]") == "csl-json"
    assert detect_format("% refs\n@Article{x,\n}") == "bibtex"
    assert detect_format("TY  - JOUR\nER  - \n") == "ris"
    assert detect_format("see https://arxiv.org/abs/2411.01234") == "arxiv-ids"
    assert detect_format("anything else") == "arxiv-ids"
    parsed = parse(r"@misc{k, title = {{\"U}ber {$\alpha$}-Nets for {GNN}s}, eprint={x}}")
    (entry,) = parsed.entries
    assert (entry.title, entry.arxiv, entry.line) == ("Über α-Nets for GNNs", None, 1)
    assert msgspec.json.encode(parsed.problems) == b"[]"


# --- a waiting paper, admitted by a source ---------------------------------------------------


def test_a_waiting_paper_is_catalogued_with_the_sources_text_never_the_files(
    redis_url: str,
    r: redis.Redis,
    replay: tuple[Replay, str],  # noqa: F811 (the fixture)
) -> None:
    """Two readers import an old arXiv paper the catalog lacks, their files giving it a
    made-up title: nobody else sees it until arXiv describes it (the catalog's lookup of
    reported papers, against a local stand-in for arXiv); then it is arXiv's paper in
    both readers' libraries, and the files' title is nowhere in the catalog."""
    state, base = replay
    settings = sync_settings(redis_url, base, arxiv_categories="cs.LG")
    bib = "@misc{pills,\n  title = {Miracle pills, buy now},\n  eprint = {1706.03762v5},\n}\n"
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        readers = [register(http)[1] for _ in range(2)]
        for auth in readers:
            answer = imported(http, auth, bib)
            assert (answer["waiting"], answer["reported"]) == (1, 1), answer
        assert r.zscore(keys.CANDIDATE_SCORE, "1706.03762") == 2
        assert http.get("/v1/papers/1706.03762").status_code == 404
        library = http.get("/v1/me/library", headers=readers[0]).json()["items"]
        assert [i["paper"]["title"] for i in library] == ["Miracle pills, buy now"]  # theirs

        result = asyncio.run(lookup_once(settings, time.time()))
        assert (result.ok, result.new) == (True, 1), result
        assert asked(state) == ["arxiv:1706.03762"]
        paper = http.get("/v1/papers/1706.03762").json()
        assert paper["title"] == "Attention Is All You Need"
        assert "pills" not in json.dumps(paper)
        for auth in readers:
            (item,) = http.get("/v1/me/library", headers=auth).json()["items"]
            assert item["paper"]["title"] == "Attention Is All You Need"
        again = imported(http, readers[1], bib)  # now matched, and nothing new
        assert (again["matched"], again["saved"], again["unchanged"]) == (1, 0, 1), again
