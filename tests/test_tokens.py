"""Install tokens name their reader (``pf_<reader id>.<secret>``): a feed or an event
batch goes straight to the script serving it, which checks the token's hash against the
reader's installs, instead of looking the token up first. A token naming a reader it is
not one of reaches nothing of theirs and spends its address's budget, never theirs;
tokens of the earlier kind are looked up as before."""

from __future__ import annotations

import hashlib
import secrets
import time

import httpx
import pytest
import redis

from paperfeed.store import keys
from tests.conftest import (
    admin_headers,
    inside_one_budget_window,
    live_server,
    make_settings,
    register,
)
from tests.test_events import PAPERS, event
from tests.test_round_trips import round_trips


def token_lookups(sent: list[bytes]) -> int:
    return sum(packed.count(b"pf:token:") for packed in sent)


ADDRESS = keys.rate_limit("ip:127.0.0.1")


def address_spent(r: redis.Redis, at_least: int = 0) -> int:
    """The test client's address budget spent this window, once it reaches ``at_least``
    (a refused request is counted after its answer is sent: waits up to 10 s for it)."""
    deadline = time.monotonic() + 10
    while int(r.get(ADDRESS) or 0) < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return int(r.get(ADDRESS) or 0)


@pytest.mark.cluster
def test_a_token_names_its_reader_and_is_checked_by_the_script(
    redis_url: str, r: redis.Redis
) -> None:
    with live_server(make_settings(redis_url)) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        user_id, auth = register(http)
        token = auth["Authorization"].removeprefix("Bearer ")
        assert token.startswith(f"pf_{user_id}.")
        with round_trips() as sent:
            accepted = http.post("/v1/events", json={"events": [event("2411.00001")]}, headers=auth)
            feed = http.get("/v1/feed", headers=auth)
        assert accepted.status_code == 200
        assert accepted.json()["accepted"] == 1
        assert feed.status_code == 200
        assert feed.json()["items"]
        assert token_lookups(sent) == 0, [s[:120] for s in sent if b"pf:token:" in s]
        assert r.hget(keys.user_profile(user_id), "events") == "1"


@pytest.mark.cluster
def test_a_token_naming_another_reader_reaches_nothing_of_theirs(
    redis_url: str, r: redis.Redis
) -> None:
    with live_server(make_settings(redis_url)) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        victim, auth = register(http)
        assert http.post("/v1/events", json={"events": [event("2411.00001")]}, headers=auth)
        before = r.hgetall(keys.user_papers(victim))
        spent_before = address_spent(r)
        forged = f"pf_{victim}.{secrets.token_urlsafe(32)}"
        forged_auth = {"Authorization": f"Bearer {forged}"}
        assert http.get("/v1/feed", headers=forged_auth).status_code == 401
        refused = http.post(
            "/v1/events", json={"events": [event("2411.00002", "upvote")]}, headers=forged_auth
        )
        assert refused.status_code == 401
        assert refused.json()["detail"] == "unknown or revoked token"
        malformed = http.post(
            "/v1/events",
            content=b"{not json",
            headers={**forged_auth, "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400
        # Nothing of the victim's changed, their budget included: the forged requests
        # were counted against the address.
        assert r.hget(keys.user_profile(victim), "events") == "1"
        assert r.hgetall(keys.user_papers(victim)) == before
        forged_install = hashlib.sha256(forged.encode()).hexdigest()[:32]
        assert forged_install not in r.hgetall(keys.user_budget(victim))
        assert address_spent(r, at_least=spent_before + 3) == spent_before + 3
        assert http.get("/v1/feed", headers=auth).status_code == 200


@pytest.mark.parametrize("named", ["a reader", "no reader"])
def test_forged_tokens_are_bounded_by_their_address_budget(
    redis_url: str, r: redis.Redis, named: str
) -> None:
    limit = 5
    with (
        live_server(make_settings(redis_url, rate_limit_per_minute=limit)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        inside_one_budget_window(r)
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        victim, auth = register(http)
        spent = address_spent(r)  # the two requests above
        reader = victim if named == "a reader" else "0" * 24
        forged = {"Authorization": f"Bearer pf_{reader}.{secrets.token_urlsafe(32)}"}
        statuses = []
        for n in range(1, 9):
            # Feeds, empty batches and malformed bodies alike.
            if n % 3 == 0:
                answer = http.post("/v1/events", json={"events": []}, headers=forged)
            elif n % 3 == 1:
                answer = http.get("/v1/feed", headers=forged)
            else:
                answer = http.post(
                    "/v1/events",
                    content=b"{nope",
                    headers={**forged, "Content-Type": "application/json"},
                )
            statuses.append(answer.status_code)
            address_spent(r, at_least=spent + n)
        # Each refused, counted against the address; past its budget the address's
        # tokens are looked up before anything (a 429 for one that is no one's)...
        refused_first = limit + 1 - spent
        expected = [{1: 401, 2: 400, 0: 401}[n % 3] for n in range(1, refused_first + 1)]
        assert statuses == expected + [429] * (8 - refused_first)
        # ...and an install of its own at that address is still served.
        assert http.get("/v1/feed", headers=auth).status_code == 200


def test_a_token_of_the_earlier_kind_is_looked_up(redis_url: str, r: redis.Redis) -> None:
    with live_server(make_settings(redis_url)) as server, httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/admin/papers", json=PAPERS, headers=admin_headers()).is_success
        user_id, _ = register(http)
        earlier = "pf_" + secrets.token_urlsafe(32).replace(".", "")
        earlier_hash = hashlib.sha256(earlier.encode()).hexdigest()
        r.hset(keys.user_profile(user_id), "token_hash", earlier_hash)
        r.set(keys.token(earlier_hash), user_id)
        auth = {"Authorization": f"Bearer {earlier}"}
        with round_trips() as sent:
            accepted = http.post("/v1/events", json={"events": [event("2411.00001")]}, headers=auth)
        assert accepted.status_code == 200
        assert accepted.json()["accepted"] == 1
        assert token_lookups(sent) == 1
        assert http.get("/v1/feed", headers=auth).status_code == 200
        assert r.hget(keys.user_profile(user_id), "events") == "1"


def test_only_a_token_of_the_new_kind_names_a_reader() -> None:
    from paperfeed.users import claimed_reader

    reader = secrets.token_hex(12)
    assert claimed_reader(f"pf_{reader}.{secrets.token_urlsafe(32)}") == reader
    for token in (
        "pf_" + secrets.token_urlsafe(32).replace(".", ""),  # the earlier kind
        f"pf_{reader}.",  # no secret
        f"pf_{{{reader}}}.secret",  # braces would change the keys' hash slot
        f"pf_{reader}:x.secret",
        "pf_short.secret",
        f"pf_{'a' * 41}.secret",
        f"{reader}.secret",
        f"pf_{reader}.{'x' * 200}",
    ):
        assert claimed_reader(token) is None, token
