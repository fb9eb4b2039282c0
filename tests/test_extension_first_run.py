"""The extension's first run (issue 26, item 3) in a real headless Chromium, against
``paperfeed serve`` with a catalog of real papers (the Hugging Face daily papers
fixture, dated in the last days, so that the catalog has topics): installing opens the
first-run page; picking a topic follows it and the popup's first feed brings its new
papers with "new in <topic>"; pasted arXiv ids become saves; skipping is one click.
The page's screenshot is docs/screenshots/first-run.png."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES, Mailbox, smtp_env
from tests.test_embedded import Service
from tests.test_extension import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    badge_check,
    browser,
    ext_mailbox,
    open_popup,
    storage,
    token,
    wait_for,
    worker_of,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

with open(FIXTURES / "hf-daily-papers.jsonl") as _handle:
    REAL = [json.loads(line) for line in _handle][:150]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ext_mailbox: Mailbox) -> Iterator[Service]:  # noqa: F811
    svc = Service(tmp_path_factory.mktemp("first-run") / "var")
    svc.env.update(smtp_env(ext_mailbox, svc.url))
    svc.env["PAPERFEED_RATE_LIMIT_PER_MINUTE"] = "100000"
    svc.start()
    now = time.time()
    records = [
        {
            "id": p["id"],
            "title": p["title"],
            "abstract": p["abstract"],
            "authors": p["authors"],
            "upvotes": p["upvotes"],
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3_600 * (n % 70))),
        }
        for n, p in enumerate(REAL)
    ]
    admin = {"Authorization": "Bearer embedded-admin"}
    assert httpx.post(f"{svc.url}/v1/admin/papers", json=records, headers=admin).status_code == 200
    yield svc
    if svc.process and svc.process.poll() is None:
        svc.stop()


def welcome(context: Any, extension_id: str) -> Any:
    page = context.new_page()
    page.set_viewport_size({"width": 900, "height": 900})
    page.goto(f"chrome-extension://{extension_id}/welcome/welcome.html")
    page.wait_for_selector("#welcome-topics input[type=checkbox]")
    return page


def reasons_in_popup(page: Any) -> list[str]:
    return list(page.locator("article.paper .reasons li").all_inner_texts())


def test_first_run_offers_topics_and_the_first_feed_follows_them(
    browser: tuple[Any, str],  # noqa: F811
    service: Service,
) -> None:
    context, extension_id = browser
    worker = worker_of(context)

    def welcome_tabs() -> list[int]:
        """The browser's tabs on the first-run page (asked of the browser itself: a tab
        opened while the browser started may reach Playwright's page list late)."""
        tabs = worker.evaluate("chrome.tabs.query({})")
        return [
            int(tab["id"])
            for tab in tabs
            if "/welcome/welcome.html" in (tab.get("url") or tab.get("pendingUrl") or "")
        ]

    # Installing opened the first-run page (before the test pointed the extension at
    # the service: it is opened again below). A loaded machine starts the browser slowly.
    opened = wait_for(welcome_tabs, timeout=60)
    assert opened, "installing did not open the first-run page"
    worker.evaluate(f"chrome.tabs.remove({opened})")
    assert wait_for(lambda: not welcome_tabs())

    topics = httpx.get(f"{service.url}/v1/topics").json()["topics"]
    assert len(topics) >= 3
    page = welcome(context, extension_id)
    items = page.locator("#welcome-topics li")
    assert items.count() == len(topics)
    first_examples = items.nth(0).locator(".examples").inner_text()
    assert topics[0]["examples"][0]["title"] in first_examples
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "first-run.png"), full_page=True)

    # Nothing ticked: said, nothing sent.
    page.click("#welcome-follow")
    assert "Tick one topic" in page.locator("#welcome-state").inner_text()

    chosen = topics[-1]  # the smallest: a new reader's trending feed would not show it
    page.check(f"#welcome-topics input[value='{chosen['id']}']")
    page.click("#welcome-follow")
    page.wait_for_selector("#welcome-state:has-text('Following 1 topic')")
    auth = {"Authorization": f"Bearer {token(context)}"}
    follows = httpx.get(f"{service.url}/v1/me/follows", headers=auth).json()
    assert [t["id"] for t in follows["topics"]] == [chosen["id"]]
    assert storage(context, "firstRunDone")

    popup = open_popup(context, extension_id)
    reasons = reasons_in_popup(popup)
    assert f"new in {chosen['name']}" in reasons, reasons
    popup.close()
    page.close()


def test_pasted_ids_become_saves_and_skipping_is_one_click(
    browser: tuple[Any, str],  # noqa: F811
    service: Service,
) -> None:
    context, extension_id = browser
    page = welcome(context, extension_id)
    page.click("#welcome-import-ids")
    assert "Paste arXiv ids" in page.locator("#welcome-state").inner_text()
    ids = [REAL[0]["id"], REAL[1]["id"]]
    page.fill("#welcome-ids", f"{ids[0]}\nhttps://arxiv.org/abs/{ids[1]}v2\n")
    page.click("#welcome-import-ids")
    page.wait_for_selector("#welcome-state:has-text('Imported: 2 papers')")
    auth = {"Authorization": f"Bearer {token(context)}"}
    saved = httpx.get(f"{service.url}/v1/me/library", params={"kind": "saved"}, headers=auth).json()
    assert {item["paper"]["id"] for item in saved["items"]} >= set(ids)
    assert storage(context, "cachedFeed") is None  # the popup asks for the new feed
    page.close()

    skipped = welcome(context, extension_id)
    with skipped.expect_event("close"):
        skipped.click("#welcome-skip")
    assert skipped.is_closed()


def test_the_badge_says_how_many_new_papers_are_from_followed_authors(
    browser: tuple[Any, str],  # noqa: F811
    service: Service,
) -> None:
    """The badge's tooltip counts the new papers of the feed that came from the reader's
    follows, as the digest does: a followed author's new paper, imported after the reader
    opened the popup, is "1 new paper from authors you follow"."""
    context, extension_id = browser
    open_popup(context, extension_id).close()  # the reader has seen their feed
    worker = worker_of(context)

    def title_after_tick() -> str:
        badge_check(worker)
        return str(worker.evaluate("chrome.action.getTitle({})"))

    assert "authors you follow" not in title_after_tick()
    auth = {"Authorization": f"Bearer {token(context)}"}
    # Only this author followed (a topic followed by an earlier test lifts its papers too,
    # and the badge reads the feed's first 20).
    for topic in httpx.get(f"{service.url}/v1/me/follows", headers=auth).json()["topics"]:
        gone = httpx.request(
            "DELETE", f"{service.url}/v1/me/follows", json={"topic": topic["id"]}, headers=auth
        )
        assert gone.status_code == 200, gone.text
    followed = httpx.put(
        f"{service.url}/v1/me/follows", json={"author": "Ada Q. Lovelace"}, headers=auth
    )
    assert followed.status_code == 200, followed.text
    paper = {
        "id": "2412.00042", "title": "Analytical engines for sparse attention",
        "abstract": "Notes on a machine that computes attention by cards.",
        "authors": ["A. Lovelace", "C. Babbage"], "upvotes": 1,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    admin = {"Authorization": "Bearer embedded-admin"}
    assert httpx.post(f"{service.url}/v1/admin/papers", json=[paper], headers=admin).is_success
    assert wait_for(
        lambda: title_after_tick() == "paperfeed: 1 new paper from authors you follow",
        timeout=20,
    )
