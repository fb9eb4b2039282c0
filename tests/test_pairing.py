"""The same reader on every browser: pairing codes over real HTTP and Redis."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from paperfeed.store import keys
from tests.conftest import admin_headers, register
from tests.personas import event

pytestmark = pytest.mark.cluster

PAPERS = [{"id": f"2411.{n:05d}", "title": f"Paper {n}"} for n in range(1, 11)]


@pytest.fixture
def catalog(http: httpx.Client) -> None:
    assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).status_code == 200


def send(http: httpx.Client, auth: dict[str, str], *events: dict[str, Any]) -> None:
    response = http.post("/v1/events", json={"events": list(events)}, headers=auth)
    assert response.status_code == 200, response.text


def saved(http: httpx.Client, auth: dict[str, str]) -> set[str]:
    response = http.get("/v1/me/library", params={"kind": "saved"}, headers=auth)
    assert response.status_code == 200, response.text
    return {item["paper"]["id"] for item in response.json()["items"]}


def new_code(http: httpx.Client, auth: dict[str, str]) -> str:
    response = http.post("/v1/me/pairing-codes", headers=auth)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["expires_in"] == 300
    return str(answer["code"])


def test_a_code_links_two_installs_to_one_reader_and_erasure_takes_both(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    laptop_id, laptop = register(http)
    desktop_id, desktop = register(http)
    send(http, laptop, event("2411.00001", "save"), event("2411.00002", "upvote"))
    send(http, desktop, event("2411.00003", "save"))
    code = new_code(http, laptop)
    # Codes are kept hashed: the code itself is nowhere in Redis.
    assert not [k for k in r.scan_iter("pf:pair:*") if code.replace("-", "") in k]
    linked = http.post("/v1/me/link", json={"code": code.lower()}, headers=desktop)
    assert linked.status_code == 200, linked.text
    assert linked.json() == {"user_id": laptop_id, "papers_merged": 1}
    # One history, one library, one feed: both tokens see the same.
    assert saved(http, laptop) == saved(http, desktop) == {"2411.00001", "2411.00003"}
    send(http, desktop, event("2411.00004", "save"))
    assert "2411.00004" in saved(http, laptop)
    feeds = [
        [i["paper"]["id"] for i in http.get("/v1/feed", headers=auth).json()["items"]]
        for auth in (laptop, desktop)
    ]
    assert feeds[0] == feeds[1]
    assert not r.exists(keys.user_profile(desktop_id))  # the desktop's own reader is gone
    # A code works once.
    again = http.post("/v1/me/link", json={"code": code}, headers=desktop)
    assert again.status_code == 404
    # Erasing the reader erases every linked install.
    assert http.delete("/v1/me", headers=desktop).status_code == 204
    for auth in (laptop, desktop):
        assert http.get("/v1/feed", headers=auth).status_code == 401


def test_wrong_used_and_expired_codes_get_one_answer(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    _, owner = register(http)
    _, other = register(http)
    code = new_code(http, owner)
    answers = []
    for wrong in ("ABCD-EFGH", "nonsense", "ZZZZ-ZZZZ"):
        response = http.post("/v1/me/link", json={"code": wrong}, headers=other)
        assert response.status_code == 404
        answers.append(response.json()["detail"])
    # Expired: the key is gone as it would be after five minutes.
    for key in r.scan_iter("pf:pair:*"):
        r.delete(key)
    response = http.post("/v1/me/link", json={"code": code}, headers=other)
    assert response.status_code == 404
    answers.append(response.json()["detail"])
    assert len(set(answers)) == 1
    assert "pairing code" in answers[0]
    # Its own code is not for the same browser.
    own = http.post("/v1/me/link", json={"code": new_code(http, owner)}, headers=owner)
    assert own.status_code == 409


def test_pairing_is_rate_limited(http: httpx.Client) -> None:
    _, reader = register(http)
    for _ in range(10):
        new_code(http, reader)
    refused = http.post("/v1/me/pairing-codes", headers=reader)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"]
    _, guesser = register(http)
    statuses = [
        http.post("/v1/me/link", json={"code": f"AAAA-AA{n:02d}"}, headers=guesser).status_code
        for n in range(12)
    ]
    assert statuses[:10] == [404] * 10
    assert statuses[10:] == [429, 429]


def test_an_install_is_unlinked_and_the_reader_keeps_its_own(
    http: httpx.Client, catalog: None
) -> None:
    _, laptop = register(http)
    _, phone = register(http)
    send(http, laptop, event("2411.00005", "save"))
    assert (
        http.post("/v1/me/link", json={"code": new_code(http, laptop)}, headers=phone).status_code
        == 200
    )
    assert saved(http, phone) == {"2411.00005"}
    assert http.delete("/v1/me/link", headers=phone).status_code == 204
    assert http.get("/v1/feed", headers=phone).status_code == 401
    assert saved(http, laptop) == {"2411.00005"}
    # The reader's first install is not unlinked: erasure is DELETE /v1/me.
    response = http.delete("/v1/me/link", headers=laptop)
    assert response.status_code == 409
    assert "DELETE /v1/me" in response.text


def test_a_linked_install_moves_alone_and_its_own_code_stays_usable(
    http: httpx.Client, catalog: None
) -> None:
    first_id, first = register(http)
    _, second = register(http)
    other_id, other = register(http)
    send(http, first, event("2411.00006", "save"))
    send(http, other, event("2411.00007", "save"))
    assert (
        http.post("/v1/me/link", json={"code": new_code(http, first)}, headers=second).status_code
        == 200
    )
    # Its own code is refused and stays valid for another browser.
    code = new_code(http, second)
    assert http.post("/v1/me/link", json={"code": code}, headers=first).status_code == 409
    # The linked browser now enters another reader's code: it alone moves.
    assert (
        http.post("/v1/me/link", json={"code": new_code(http, other)}, headers=second).status_code
        == 200
    )
    assert saved(http, second) == saved(http, other) == {"2411.00007"}
    assert saved(http, first) == {"2411.00006"}  # the first reader keeps what is theirs
    assert http.get("/v1/feed", headers=first).status_code == 200
    # The code made before the move still belongs to the first reader.
    _, third = register(http)
    linked = http.post("/v1/me/link", json={"code": code}, headers=third)
    assert linked.status_code == 200
    assert linked.json()["user_id"] == first_id
    # A reader's first install with browsers linked to it cannot leave them behind.
    refused = http.post("/v1/me/link", json={"code": new_code(http, other)}, headers=first)
    assert refused.status_code == 409
    assert other_id != first_id


def test_another_api_process_that_remembers_the_old_reader_follows_the_link(
    redis_url: str, r: redis.Redis
) -> None:
    """Each process remembers tokens for seconds: a request reaching one that still maps
    the token to the install's old reader is answered for the new one, never a 401 (the
    extension would register afresh and lose the link)."""
    from tests.conftest import live_servers, make_settings

    with live_servers(make_settings(redis_url), 2) as (one, two):
        a = httpx.Client(base_url=one.url)
        b = httpx.Client(base_url=two.url)
        assert a.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).status_code == 200
        _, reader = register(a)
        _, install = register(a)
        send(b, install, event("2411.00008", "view"))  # process two remembers the token
        code = new_code(a, reader)
        assert a.post("/v1/me/link", json={"code": code}, headers=install).status_code == 200
        send(b, install, event("2411.00009", "save"))
        assert "2411.00009" in saved(a, reader)
        assert b.get("/v1/feed", headers=install).status_code == 200
        a.close()
        b.close()


def test_a_linked_installs_follows_become_the_readers(
    http: httpx.Client, catalog: None, r: redis.Redis
) -> None:
    """A new device's first run followed an author; linking it to the reader keeps the
    follow (it was deleted with the install's keys), and the reader's own stay."""
    laptop_id, laptop = register(http)
    _, desktop = register(http)
    put = http.put("/v1/me/follows", json={"author": "Grace Hopper"}, headers=laptop)
    assert put.status_code == 200, put.text
    put = http.put("/v1/me/follows", json={"author": "Ada Lovelace"}, headers=desktop)
    assert put.status_code == 200, put.text
    linked = http.post("/v1/me/link", json={"code": new_code(http, laptop)}, headers=desktop)
    assert linked.status_code == 200, linked.text
    for auth in (laptop, desktop):
        follows = http.get("/v1/me/follows", headers=auth).json()
        assert sorted(follows["authors"]) == ["Ada Lovelace", "Grace Hopper"]
    assert int(r.hget(keys.user_profile(laptop_id), "follows") or 0) == 2
