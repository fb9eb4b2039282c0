"""The e-mail digest against a real SMTP server (aiosmtpd on a loopback port).

Real parts throughout: the api over HTTP, Redis, a trained model, ``paperfeed digest``
as a process, and the mails as the SMTP server received them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from paperfeed.catalog.papers import Paper
from paperfeed.core import Core
from paperfeed.digest import compose
from paperfeed.serving.feed import FeedItem
from paperfeed.settings import Settings
from paperfeed.store import keys
from tests.conftest import (
    LiveServer,
    Mailbox,
    free_port,
    live_server,
    make_settings,
    paperfeed_cli,
    redis_env,
    register,
    smtp_env,
    smtp_settings,
)
from tests.personas import history
from tests.recsys_fixtures import feed, train_settings

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
LINK = re.compile(r"https?://\S+/v1/digest/\w+\?user=[0-9a-f]+&sig=[0-9a-f]+")


@contextlib.contextmanager
def digest_server(redis_url: str, mailbox: Mailbox) -> Iterator[tuple[LiveServer, Settings]]:
    """The api with digests on, whose public URL (the links in mails) is its own address:
    a port is picked, then bound as the server is made; taken meanwhile, another one."""
    for attempt in range(5):
        port = free_port()
        settings = train_settings(redis_url, **smtp_settings(mailbox, f"http://127.0.0.1:{port}"))
        try:
            server = LiveServer(settings, port)
        except OSError:
            if attempt == 4:
                raise
            continue
        server.start()
        try:
            yield server, settings
        finally:
            server.stop()
        return


def digest_env(redis_url: str, mailbox: Mailbox, public_url: str) -> dict[str, str]:
    return {
        **os.environ,
        **redis_env(redis_url),
        **smtp_env(mailbox, public_url),
        "PAPERFEED_LOG_LEVEL": "INFO",
        "PAPERFEED_ALS_FACTORS": "32",
    }


def run_digest(env: dict[str, str], *extra: str) -> dict[str, Any]:
    done = paperfeed_cli("digest", *extra, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["stdout"] = done.stdout
    report["stderr"] = done.stderr
    return report


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content()).replace("\r\n", "\n")


def link_in(message: EmailMessage, kind: str) -> str:
    links = [link for link in LINK.findall(body_of(message, "plain")) if f"/{kind}?" in link]
    assert links, f"no {kind} link"
    return links[0]


def subscribe(http: httpx.Client, auth: dict[str, str], email: str, size: int = 5) -> None:
    answer = http.put(
        "/v1/me/digest", json={"email": email, "frequency": "daily", "size": size}, headers=auth
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["confirmed"] is False


def reader(http: httpx.Client, topic: int, seed: int) -> tuple[str, dict[str, str]]:
    import random

    user_id, auth = register(http)
    events = history(topic, random.Random(seed))
    assert http.post("/v1/events", json={"events": events}, headers=auth).status_code == 200
    return user_id, auth


def tomorrow_morning(days: int = 1) -> float:
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)
    return dt.datetime(day.year, day.month, day.day, 7, tzinfo=dt.UTC).timestamp()


def test_confirmed_reader_gets_their_feed_by_mail_once_and_can_unsubscribe(
    trained: str,
    redis_url: str,
    r: redis.Redis,
    mailbox: Mailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    address = "Ada.Reader@Example.org"
    stored_address = "Ada.Reader@example.org"
    caplog.set_level(logging.DEBUG, logger="paperfeed")
    with (
        digest_server(redis_url, mailbox) as (server, settings),
        httpx.Client(base_url=server.url) as http,
    ):
        user_id, auth = reader(http, topic=0, seed=7)
        assert http.get("/v1/meta").json()["digests"] is True
        subscribe(http, auth, address)

        # Double opt-in: only the confirmation mail goes out before the link is opened.
        confirmation = mailbox.wait_for(1)[0]
        assert confirmation["To"] == stored_address
        assert "Confirm" in confirmation["Subject"]
        env = digest_env(redis_url, mailbox, server.url)
        before = run_digest(env)
        assert before["sent"] == 0
        assert len(mailbox.messages) == 1, "no digest to an unconfirmed address"

        # Opening the link (a GET, as mail scanners do) only asks; its button confirms.
        link = link_in(confirmation, "confirm")
        asked = httpx.get(link)
        assert asked.status_code == 200
        assert "<form method='post'" in asked.text
        assert http.get("/v1/me/digest", headers=auth).json()["confirmed"] is False
        assert run_digest(env)["sent"] == 0
        confirm = httpx.post(link)
        assert confirm.status_code == 200
        assert "Subscribed" in confirm.text
        status = http.get("/v1/me/digest", headers=auth).json()
        assert status["confirmed"] is True
        assert status["email"] == stored_address

        expected = [item["paper"]["title"] for item in feed(http, auth, limit=5)["items"]]
        dry = run_digest(env, "--dry-run")
        assert "A***@example.org" in dry["stdout"]
        assert stored_address not in dry["stdout"]  # an operator sees it masked only
        assert len(mailbox.messages) == 1, "a dry run sends nothing"
        first = run_digest(env)
        assert first["sent"] == 1
        # Receiving digests counts as activity for the retention of inactive installs.
        assert float(r.zscore(keys.USERS, user_id) or 0) > time.time() - 60
        digest = mailbox.wait_for(2)[1]

        # Valid MIME: plain text and HTML alternatives, one-click unsubscribe headers.
        assert digest.get_content_type() == "multipart/alternative"
        assert digest["To"] == stored_address
        assert digest["Message-ID"].startswith(f"<digest.{user_id}.")
        assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = digest["List-Unsubscribe"].strip("<>")
        text, html_part = body_of(digest, "plain"), body_of(digest, "html")
        titles = re.findall(r"^\d+\. (.+)$", text, re.MULTILINE)
        assert titles == expected, "the digest is the reader's feed"
        assert all(
            title in html_part or title.replace("&", "&amp;") in html_part for title in titles
        )
        assert "Why: " in text
        assert text.count("https://arxiv.org/abs/") == len(titles)
        (Path(os.environ.get("TMPDIR", "/tmp")) / "paperfeed-digest.html").write_text(html_part)
        screenshot(html_part)

        # The same day again: nothing more.
        again = run_digest(env)
        assert again["sent"] == 0
        assert len(mailbox.messages) == 2

        # The next day: a new digest without the papers already sent.
        async def next_day(days: int) -> Any:
            core = Core.connect(settings)
            try:
                await core.holder.refresh()
                return await core.digests.run(now=tomorrow_morning(days))
            finally:
                await core.close()

        import asyncio

        second_report = asyncio.run(next_day(1))
        assert second_report.sent == 1
        second = mailbox.wait_for(3)[2]
        second_titles = re.findall(r"^\d+\. (.+)$", body_of(second, "plain"), re.MULTILINE)
        assert second_titles
        assert not set(second_titles) & set(titles), "no paper twice"

        # Opening the link (a GET, as mail scanners do) only asks; one click (RFC 8058
        # POST) on the List-Unsubscribe link stops the mails.
        asked = httpx.get(unsubscribe)
        assert asked.status_code == 200
        assert "<form method='post'" in asked.text
        assert http.get("/v1/me/digest", headers=auth).json()["confirmed"] is True
        done = httpx.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        stopped = http.get("/v1/me/digest", headers=auth)
        assert (stopped.status_code, stopped.json()) == (200, None)  # not subscribed
        assert asyncio.run(next_day(2)).sent == 0
        assert len(mailbox.messages) == 3

    # The address is never logged.
    for record in caplog.records:
        rendered = record.getMessage() + json.dumps(record.__dict__, default=str)
        assert "example.org" not in rendered.lower(), record.getMessage()
    for output in (before, first, again):
        assert "example.org" not in (output["stderr"]).lower()


def test_opening_the_confirmation_link_confirms_nothing_its_button_does(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    """Mail scanners open every link in a mail (a GET): that must not subscribe an
    address nobody confirmed. The link's page asks; its button (a POST) confirms."""
    settings = make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1"))
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        _, auth = register(http)
        subscribe(http, auth, "scanned@example.com")
        link = link_in(mailbox.wait_for(1)[0], "confirm").replace("http://127.0.0.1:1", server.url)
        for _ in range(3):  # a scanner, a preview, the reader
            asked = httpx.get(link)
            assert asked.status_code == 200
            assert "<form method='post' action='confirm?user=" in asked.text
            assert "<button type='submit'>Confirm</button>" in asked.text
        assert http.get("/v1/me/digest", headers=auth).json()["confirmed"] is False
        done = httpx.post(link)
        assert done.status_code == 200
        assert "Subscribed" in done.text
        assert http.get("/v1/me/digest", headers=auth).json()["confirmed"] is True
        again = httpx.get(link)  # the page says so afterwards, and offers nothing to press
        assert "confirmed already" in again.text
        assert "<form" not in again.text


def test_a_digest_links_papers_by_http_and_https_only() -> None:
    """A paper whose URL is not a web address (``javascript:``, ``data:``, a relative
    path, another scheme) is linked to arXiv instead, in both parts of the mail, as the
    extension shows only http(s) links."""
    bad = ["javascript:alert(document.cookie)", "data:text/html,<b>x</b>", "/abs/1", "ftp://x/y"]
    items = [
        FeedItem(
            paper=Paper(id=f"2411.0000{n}", title=f"Paper {n}", abstract="A. B.", url=url),
            score=1.0,
            reasons=["trending"],
        )
        for n, url in enumerate(bad)
    ]
    good = Paper(id="slug-only", title="Kept", abstract="", url="https://example.org/p")
    items.append(FeedItem(paper=good, score=1.0, reasons=[]))
    mail = compose.digest_message(
        sender="paperfeed <digest@paperfeed.test>",
        to="reader@example.org",
        message_id="<digest.test@paperfeed.test>",
        period="2026-12-01",
        items=compose.items_of(items),
        unsubscribe_link="https://paperfeed.test/v1/digest/unsubscribe?user=u&sig=s",
    )
    text, html_part = body_of(mail, "plain"), body_of(mail, "html")
    links = [item.link for item in compose.items_of(items)]
    assert links == [f"https://arxiv.org/abs/2411.0000{n}" for n in range(4)] + [
        "https://example.org/p"
    ]
    for url in bad:
        assert url not in text
        assert html.escape(url) not in html_part
        assert url not in html_part
    hrefs = re.findall(r'href="([^"]*)"', html_part)
    assert len(hrefs) == len(items) + 1  # the papers and the unsubscribe link
    assert all(href.startswith(("https://", "http://")) for href in hrefs), hrefs


def screenshot(html_text: str) -> None:
    """The rendered HTML part, as a reader's mail program shows it, for docs/."""
    from tests.test_extension import CHROMIUM, require_chromium

    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 680, "height": 900})
        page.set_content(html_text)
        page.screenshot(path=str(SCREENSHOTS / "digest.png"), full_page=True)
        browser.close()


def confirmed_reader(
    http: httpx.Client, mailbox: Mailbox, email: str, topic: int, seed: int
) -> tuple[str, dict[str, str]]:
    user_id, auth = reader(http, topic, seed)
    count = len(mailbox.messages)
    subscribe(http, auth, email)
    confirmation = mailbox.wait_for(count + 1)[count]
    assert httpx.post(link_in(confirmation, "confirm")).status_code == 200
    return user_id, auth


def test_a_run_killed_between_two_readers_resumes_without_doubles(
    trained: str, redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    with (
        digest_server(redis_url, mailbox) as (server, _settings),
        httpx.Client(base_url=server.url) as http,
    ):
        readers = [
            confirmed_reader(http, mailbox, f"reader{n}@example.net", topic=n, seed=n)
            for n in range(2)
        ]
    confirmations = len(mailbox.messages)
    mailbox.hold_after = confirmations + 1  # the second digest hangs in the SMTP DATA
    env = digest_env(redis_url, mailbox, server.url)
    env["PAPERFEED_LOCK_TTL_S"] = "2"  # the digest lock of a dead run expires soon
    process = subprocess.Popen(
        [sys.executable, "-m", "paperfeed.cli", "digest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert mailbox.holding.wait(60), "the run never reached the second reader"
    process.send_signal(signal.SIGKILL)  # a crash between the two readers
    process.wait(10)
    mailbox.hold_after = None
    mailbox.release.set()
    assert len(mailbox.messages) == confirmations + 1
    # The dead run's lease expires; the next run picks up where it stopped.
    deadline = time.monotonic() + 90
    while r.exists(keys.DIGEST_LOCK):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    resumed = run_digest(env)
    assert resumed["sent"] == 1
    digests = [m for m in mailbox.messages if m.get("List-Unsubscribe")]
    by_reader = {addr: [m for m in digests if m["To"] == addr] for addr in
                 ("reader0@example.net", "reader1@example.net")}  # fmt: skip
    assert {addr: len(found) for addr, found in by_reader.items()} == {
        "reader0@example.net": 1,
        "reader1@example.net": 1,
    }
    second_id = readers[1][0]
    assert by_reader["reader1@example.net"][0]["Message-ID"].startswith(f"<digest.{second_id}.")
    assert not r.exists(keys.user_digest_outbox(second_id))
    assert run_digest(env)["sent"] == 0


def test_smtp_failures_are_retried_and_counted_in_metrics(
    trained: str,
    redis_url: str,
    r: redis.Redis,
    mailbox: Mailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from paperfeed.api import metrics

    monkeypatch.setattr(metrics, "STORE_METRICS_S", 0.2)
    with (
        digest_server(redis_url, mailbox) as (server, settings),
        httpx.Client(base_url=server.url) as http,
    ):
        confirmed_reader(http, mailbox, "retry@example.net", topic=1, seed=3)
        mailbox.refuse_next = 2  # two temporary failures, then accepted
        core = Core.connect(settings)

        async def run() -> Any:
            await core.holder.refresh()
            core.digests.mailer.first_delay_s = 0.05
            report = await core.digests.run()
            await core.close()
            return report

        report = asyncio.run(run())
        assert report.sent == 1
        assert len(mailbox.to("retry@example.net")) == 2  # confirmation + digest
        assert r.hget(keys.STATS, "digest_smtp_failures") == "2"
        deadline = time.monotonic() + 10
        wanted = ("paperfeed_digest_smtp_failures 2.0", "paperfeed_digest_sent 1.0")
        while not all(line in http.get("/metrics").text for line in wanted):
            assert time.monotonic() < deadline, "the failures and the send are in /metrics"
            time.sleep(0.2)


def test_the_address_is_exported_and_erased_with_the_reader(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    settings = make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1"))
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        user_id, auth = register(http)
        subscribe(http, auth, "erase.me@example.com")
        exported = http.get("/v1/me/export", headers=auth).json()
        assert exported["digest"]["email"] == "erase.me@example.com"
        assert http.delete("/v1/me", headers=auth).status_code == 204
    assert not r.sismember(keys.DIGEST_SUBSCRIBERS, user_id)
    for key in r.scan_iter("*"):
        kind = r.type(key)
        if kind == "string":
            assert "erase.me" not in str(r.get(key)), key
        assert user_id not in key


def test_bad_subscriptions_are_refused_with_the_field_named(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    settings = make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1"))
    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        _, auth = register(http)
        cases = {
            "email": {"email": "not an address"},
            "frequency": {"email": "a@example.com", "frequency": "hourly"},
            "size": {"email": "a@example.com", "size": 500},
        }
        for field, body in cases.items():
            answer = http.put("/v1/me/digest", json=body, headers=auth)
            assert answer.status_code == 400, (field, answer.text)
            assert field in answer.text
        none = http.get("/v1/me/digest", headers=auth)
        assert (none.status_code, none.json()) == (200, None)  # nothing was subscribed
        forged = {"user": "0" * 24, "sig": "0" * 40}
        for method in ("GET", "POST"):
            answer = httpx.request(method, f"{server.url}/v1/digest/confirm", params=forged)
            assert answer.status_code == 403, method
    with live_server(make_settings(redis_url)) as server, httpx.Client(base_url=server.url) as h:
        _, auth = register(h)
        # The service says beforehand that it sends no mail, and a client that asks
        # anyway meets a 403 that says why (not a server error).
        assert h.get("/v1/meta").json()["digests"] is False
        off = h.put("/v1/me/digest", json={"email": "a@example.com"}, headers=auth)
        assert off.status_code == 403
        assert "does not send e-mail digests" in off.json()["detail"]


def test_the_digest_command_without_smtp_has_nothing_to_do(redis_url: str, r: redis.Redis) -> None:
    env = {**os.environ, **redis_env(redis_url)}
    env.pop("PAPERFEED_SMTP_HOST", None)
    done = paperfeed_cli("digest", env=env, timeout=60)
    assert done.returncode == 0  # a scheduled run on a service without e-mail is no failure
    assert "digests are off" in done.stderr


def test_the_worker_sends_due_digests(
    trained: str, redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    with (
        digest_server(redis_url, mailbox) as (server, _settings),
        httpx.Client(base_url=server.url) as http,
    ):
        confirmed_reader(http, mailbox, "worker@example.net", topic=2, seed=5)
    r.set(keys.TRAIN_REQUESTED, "test")  # so that --once has a training to end with
    env = digest_env(redis_url, mailbox, server.url)
    done = paperfeed_cli("worker", "--once", "--poll", "0.1", env=env)
    assert done.returncode == 0, done.stderr
    digests = [m for m in mailbox.to("worker@example.net") if m.get("List-Unsubscribe")]
    assert len(digests) == 1
    assert "worker@example.net" not in done.stderr  # the address is never logged


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the mailer verifies certificates)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_the_mailer_speaks_starttls_and_tls_with_a_login(
    tls: str,
    certificate: tuple[Path, Path],
    redis_url: str,
    r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    from paperfeed.digest.mailer import Mailer

    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this certificate

    def authenticator(*args: Any) -> AuthResult:
        data = args[-1]
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret"
        return AuthResult(success=ok)

    box = Mailbox()
    from aiosmtpd.controller import Controller

    options: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if tls == "tls":
        # The whole connection is TLS (aiosmtpd only counts STARTTLS as TLS for AUTH).
        options.update(ssl_context=server_context, auth_require_tls=False)
    else:
        options.update(tls_context=server_context, require_starttls=True)
    box.controller = Controller(box, hostname="127.0.0.1", port=box.port, **options)
    box.controller.start()
    try:
        base = {**smtp_settings(box, "http://127.0.0.1:1"), "smtp_tls": tls}
        core = Core.connect(make_settings(redis_url, **base, smtp_user="digest",
                                          smtp_password="s3cret"))  # fmt: skip
        message = EmailMessage()
        message["To"], message["From"], message["Subject"] = "t@example.net", "f@x.org", "hi"
        message.set_content("over TLS")
        await Mailer(core.settings, core.redis).send(message)
        assert box.wait_for(1)[0]["Subject"] == "hi"
        await core.close()
    finally:
        box.controller.stop()


async def test_a_refused_address_is_not_retried_and_not_logged(
    redis_url: str, r: redis.Redis, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    from paperfeed.digest.mailer import DeliveryFailed, Mailer

    core = Core.connect(make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1")))
    message = EmailMessage()
    message["To"], message["From"], message["Subject"] = "refused@example.net", "f@x.org", "x"
    message.set_content("nobody home")
    caplog.set_level(logging.WARNING, logger="paperfeed")
    with pytest.raises(DeliveryFailed):
        await Mailer(core.settings, core.redis, first_delay_s=5).send(message)  # no 5 s wait
    attempts = [rec for rec in caplog.records if rec.getMessage() == "smtp attempt failed"]
    assert len(attempts) == 1, "a permanent refusal (550) is not retried"
    assert getattr(attempts[0], "smtp_code", None) == 550
    assert all("refused@" not in json.dumps(rec.__dict__, default=str) for rec in caplog.records)
    assert r.hget(keys.STATS, "digest_smtp_failures") == "1"
    await core.close()


class Refusals(logging.Handler):
    """Counts the service's refusals to send one more confirmation to an address."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "confirmation limit" in record.getMessage():
            self.count += 1


def test_nobody_can_flood_an_inbox_with_confirmations(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    settings = make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1"))
    refusals = Refusals()
    service_log = logging.getLogger("paperfeed.digest.service")
    service_log.addHandler(refusals)

    def sent() -> int:  # counted once SMTP accepted a confirmation
        return int(r.hget(keys.STATS, "digest_confirmations") or 0)

    def refused() -> int:
        return refusals.count

    def settled(attempts: int) -> None:
        """Wait until every background confirmation asked for has been sent or refused."""
        deadline = time.monotonic() + 15
        while sent() + refused() < attempts:
            assert time.monotonic() < deadline, (sent(), refused())
            time.sleep(0.05)

    with live_server(settings) as server, httpx.Client(base_url=server.url) as http:
        _, auth = register(http)
        for _ in range(3):  # the same install asking again and again: one attempt
            subscribe(http, auth, "victim@example.com")
        settled(1)
        assert len(mailbox.to("victim@example.com")) == 1, "one link an hour per install"
        for _ in range(5):  # fresh installs, all naming the same stranger
            _, other = register(http)
            subscribe(http, other, "victim@example.com")
        settled(6)
        assert sent() + refused() == 6  # no attempt beyond the six asked for
    service_log.removeHandler(refusals)
    received = mailbox.to("victim@example.com")
    assert len(received) == 3, "at most three confirmations a day reach one address"
    assert refused() == 3


async def test_a_confirmation_the_api_could_not_send_goes_out_with_the_next_run(
    redis_url: str, r: redis.Redis, mailbox: Mailbox
) -> None:
    from paperfeed.digest.subscriptions import DigestRequest

    core = Core.connect(make_settings(redis_url, **smtp_settings(mailbox, "http://127.0.0.1:1")))
    user = await core.users.register()
    # Stored by PUT /v1/me/digest; its background mail never made it (SMTP was down).
    assert await core.digests.subscribe(user.user_id, DigestRequest(email="late@example.org"))
    soon = await core.digests.run()
    assert soon.confirmations == 0  # the api's own attempt gets its grace period
    later = await core.digests.run(now=time.time() + 600)
    assert later.confirmations == 1
    assert len(mailbox.to("late@example.org")) == 1
    assert (await core.digests.run(now=time.time() + 900)).confirmations == 0  # once
    await core.close()


async def test_an_erasure_during_a_digest_send_leaves_no_address_behind(
    core: Core, r: redis.Redis
) -> None:
    """The run read the subscription, SMTP took its time, the reader erased themselves:
    what the run writes afterwards must not bring their address back."""
    from paperfeed.digest.subscriptions import DigestRequest, Outbox

    install = await core.users.register()
    user_id = install.user_id
    subs = core.digests.subscriptions
    await subs.put(user_id, DigestRequest(email="race@example.com", frequency="daily", size=5))
    sub = await subs.get(user_id)
    assert sub is not None
    outbox = Outbox(period="2026-11-30", message_id="<m@example.com>", items=[])
    await core.users.erase(user_id)  # while "SMTP" was sending
    await subs.start_sending(user_id, outbox)
    await subs.record_sent(user_id, sub, outbox, time.time())
    assert not await subs.save(user_id, sub)  # a confirmation's late write
    assert not await subs.put(
        user_id, DigestRequest(email="race@example.com", frequency="daily", size=5)
    )
    assert [k for k in r.scan_iter("*") if user_id in str(k)] == []
    assert not any(
        "race@example.com" in str(r.get(k)) for k in r.scan_iter("*") if r.type(k) == "string"
    )
    assert not r.sismember(keys.DIGEST_SUBSCRIBERS, user_id)
