"""The extension in a real headless Chromium, against ``paperfeed serve`` and its Redis."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import FIXTURES, Mailbox, in_ci, smtp_env
from tests.test_embedded import Service

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "extension"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PAGES = FIXTURES / "pages"


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if in_ci():
            pytest.fail(f"Chromium is missing at {CHROMIUM} (scripts/test-setup.sh installs it)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def ext_mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ext_mailbox: Mailbox) -> Iterator[Service]:
    svc = Service(tmp_path_factory.mktemp("ext") / "var")
    svc.env.update(smtp_env(ext_mailbox, svc.url))
    # The tests poll the service with the extension's own token: a budget to match.
    svc.env["PAPERFEED_RATE_LIMIT_PER_MINUTE"] = "100000"
    svc.start()
    admin = {"Authorization": "Bearer embedded-admin"}
    daily = json.loads((FIXTURES / "daily_papers.json").read_text())
    records = [
        {
            "id": e["paper"]["id"],
            "title": e["paper"]["title"],
            "abstract": e["paper"]["summary"],
            "upvotes": 1000 + i,
            "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for i, e in enumerate(daily[:6])
    ]
    assert httpx.post(f"{svc.url}/v1/admin/papers", json=records, headers=admin).status_code == 200
    yield svc
    if svc.process and svc.process.poll() is None:
        svc.stop()


@pytest.fixture(scope="module")
def browser(
    service: Service, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        RUNNING["playwright"] = playwright  # for a test's own browser (one per thread)
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                f"--disable-extensions-except={EXTENSION}",
                f"--load-extension={EXTENSION}",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        worker = context.service_workers[0] if context.service_workers else None
        if worker is None:
            worker = context.wait_for_event("serviceworker", timeout=15_000)
        extension_id = worker.url.split("/")[2]
        worker.evaluate(f"chrome.storage.local.set({{backendUrl: {service.url!r}}})")
        for name in ("arxiv-abs.html", "hf-paper.html", "hf-list.html"):
            assert (PAGES / name).exists()
        context.route("https://arxiv.org/**", lambda route: fulfill(route, "arxiv-abs.html"))
        context.route(
            "https://huggingface.co/papers/**", lambda route: fulfill(route, "hf-paper.html")
        )
        context.route("https://huggingface.co/papers", lambda route: fulfill(route, "hf-list.html"))
        yield context, extension_id
        context.close()


RUNNING: dict[str, Any] = {}
"""The module's Playwright (a second one cannot run beside it)."""


def fulfill(route: Any, name: str) -> None:
    route.fulfill(status=200, content_type="text/html", body=(PAGES / name).read_text())


@contextlib.contextmanager
def service_unreachable(context: Any, service: Service) -> Iterator[None]:
    """The extension pointed at an address where nothing answers, then back at the
    service."""
    worker_of(context).evaluate("chrome.storage.local.set({backendUrl: 'http://127.0.0.1:9'})")
    try:
        yield
    finally:
        worker_of(context).evaluate(f"chrome.storage.local.set({{backendUrl: {service.url!r}}})")


def worker_of(context: Any) -> Any:
    return context.service_workers[0]


def storage(context: Any, key: str) -> Any:
    return worker_of(context).evaluate(
        f"chrome.storage.local.get({key!r}).then((got) => got[{key!r}] ?? null)"
    )


def ensure_install(context: Any, extension_id: str) -> None:
    """The extension registered (opening the popup does it, as for a new reader)."""
    if not storage(context, "token"):
        open_popup(context, extension_id).close()


def token(context: Any) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = storage(context, "token")
        if value:
            return str(value)
        time.sleep(0.1)
    raise AssertionError("the extension did not register an install")


def export(service: Service, context: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{service.url}/v1/me/export", headers={"Authorization": f"Bearer {token(context)}"}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def open_popup(context: Any, extension_id: str, dark: bool = False, tab: str | None = None) -> Any:
    """The popup at its size, on ``tab`` (default: For you), once it shows papers."""
    page = context.new_page()
    page.set_viewport_size({"width": 440, "height": 600})
    page.emulate_media(color_scheme="dark" if dark else "light")
    page.goto(f"chrome-extension://{extension_id}/popup/popup.html")
    if tab is not None:
        page.get_by_role("tab", name=tab).click()
    page.wait_for_selector("article.paper")
    return page


def test_popup_shows_the_feed_and_actions_reach_redis(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    titles = page.locator("article.paper .title").all_inner_texts()
    assert len(titles) >= 10
    first = page.locator("article.paper").first
    assert first.locator(".reasons li").count() >= 1
    assert first.locator(".links a").count() >= 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "popup-light.png"))

    upvoted = page.locator("article.paper").nth(0).get_attribute("data-paper-id")
    saved = page.locator("article.paper").nth(1).get_attribute("data-paper-id")
    dismissed = page.locator("article.paper").nth(2).get_attribute("data-paper-id")
    page.locator("article.paper").nth(0).locator('[data-action="upvote"]').click()
    assert (
        page.locator("article.paper")
        .nth(0)
        .locator('[data-action="upvote"]')
        .get_attribute("aria-pressed")
        == "true"
    )
    # Keyboard: j moves to the second paper, s saves it.
    page.locator("article.paper").nth(0).focus()
    page.keyboard.press("j")
    page.keyboard.press("s")
    page.locator("article.paper").nth(2).locator('[data-action="dismiss"]').click()
    assert page.locator(".dismissed").count() == 1

    def applied() -> dict[str, Any] | None:
        papers = export(service, context)["papers"]
        done = all(p in papers for p in (upvoted, saved, dismissed))
        return papers if done else None

    papers = wait_for(applied)
    assert papers, "the actions reached the service"
    assert papers[upvoted]["upvoted"]
    assert papers[saved]["saved"]
    assert papers[dismissed]["dismissed"]
    shown = wait_for(
        lambda: [e for e in export(service, context)["events"] if e["type"] == "impression"]
    )
    assert shown, "the cards in view were recorded as shown"

    page.reload()
    page.wait_for_selector("article.paper")
    ids = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => n.dataset.paperId)"
    )
    assert dismissed not in ids
    dark = open_popup(context, extension_id, dark=True)
    dark.screenshot(path=str(SCREENSHOTS / "popup-dark.png"))
    background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    dark.close()
    page.close()


def test_opening_a_paper_reports_a_click(browser: tuple[Any, str], service: Service) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    paper = page.locator("article.paper").nth(4).get_attribute("data-paper-id")
    page.locator("article.paper").nth(0).focus()
    for _ in range(4):
        page.keyboard.press("j")
    with context.expect_page() as opened:  # a new tab with the paper
        page.keyboard.press("o")

    def clicked() -> bool:
        events = export(service, context)["events"]
        return any(e["type"] == "click" and e["paper_id"] == paper for e in events)

    assert wait_for(clicked)
    opened.value.close()
    page.close()


def badge_check(worker: Any) -> None:
    """The badge's alarm fired now, and its check of the feed landed (the badge and its
    tooltip are then the feed's of this moment)."""
    asked = worker.evaluate("Date.now()")
    worker.evaluate("chrome.alarms.create('badge', {when: Date.now() + 50})")

    def checked() -> bool:
        stored = worker.evaluate("chrome.storage.local.get('badgeCheckedAt')")
        return int(stored.get("badgeCheckedAt") or 0) >= asked

    assert wait_for(checked), "the badge alarm did not check the feed"


def test_the_badge_counts_new_recommendations(browser: tuple[Any, str], service: Service) -> None:
    context, extension_id = browser
    open_popup(context, extension_id).close()  # the reader has seen their feed
    worker = worker_of(context)

    def badge_after_tick() -> str:
        badge_check(worker)
        return str(worker.evaluate("chrome.action.getBadgeText({})"))

    assert badge_after_tick() == ""
    # Three new papers on the topic of the paper the reader upvoted in the popup.
    upvoted = next(
        e["paper_id"] for e in export(service, context)["events"] if e["type"] == "upvote"
    )
    liked = httpx.get(f"{service.url}/v1/papers/{upvoted}").json()
    fresh = [
        {"id": f"2411.8000{n}", "title": f"{liked['title']}, part {n + 2}",
         "abstract": liked.get("abstract") or "", "upvotes": 50 + n,
         "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for n in range(3)
    ]  # fmt: skip
    admin = {"Authorization": "Bearer embedded-admin"}
    assert httpx.post(f"{service.url}/v1/admin/papers", json=fresh, headers=admin).is_success
    assert wait_for(lambda: badge_after_tick() == "3", timeout=20)
    open_popup(context, extension_id).close()
    assert wait_for(lambda: worker.evaluate("chrome.action.getBadgeText({})") == "")


def test_trending_tab_has_windows(browser: tuple[Any, str]) -> None:
    """The window is a segmented control beside the tabs (it was a bare dropdown on a row
    of its own); each paper says its place in the window."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    assert page.locator("#windows").is_hidden()
    page.get_by_role("tab", name="Trending").click()
    page.wait_for_selector("#windows:not([hidden])")
    page.wait_for_selector("article.paper .reasons li:has-text('this week')")
    page.locator("#windows").get_by_role("button", name="Day").click()
    page.wait_for_selector("article.paper .reasons li:has-text('#1 today')")
    assert page.locator("article.paper").count() >= 10
    pressed = page.locator("#windows button[aria-pressed='true']").all_inner_texts()
    assert pressed == ["Day"]
    tabs = page.locator("nav").bounding_box()
    windows = page.locator("#windows").bounding_box()
    assert tabs is not None
    assert windows is not None
    assert abs(windows["y"] - tabs["y"]) < 8, (tabs, windows)  # one row, beside the tabs
    today = page.locator("#windows button[aria-pressed='true']")
    assert today.evaluate("(b) => getComputedStyle(b).backgroundColor") == "rgb(109, 40, 217)"
    assert page.locator("select").count() == 0
    page.close()


def test_impressions_are_the_cards_actually_seen(
    browser: tuple[Any, str], service: Service
) -> None:
    """A card counts as shown once at least half of it was in view for a second: on
    opening, the few cards in view, not the thirty of the list; more as the reader
    scrolls."""
    context, extension_id = browser
    token(context)
    opened = time.time()
    page = open_popup(context, extension_id)
    cards = page.locator("article.paper").evaluate_all(
        """(nodes) => nodes.map((n) => {
            const box = n.getBoundingClientRect();
            const inView = Math.min(box.bottom, innerHeight) - Math.max(box.top, 0);
            return [n.dataset.paperId, inView / box.height];
        })"""
    )
    visible = {pid for pid, share in cards if share >= 0.5}
    assert 1 <= len(visible) < len(cards) - 10

    def since_opened() -> list[dict[str, Any]]:
        events = export(service, context)["events"]
        return [e for e in events if e["type"] == "impression" and e["ts"] >= opened - 1]

    def impressed() -> set[str]:
        return {e["paper_id"] for e in since_opened()}

    assert wait_for(lambda: visible <= impressed()), "the cards in view count as shown"
    assert impressed() <= visible | {pid for pid, share in cards if share > 0}
    last = cards[-1][0]
    assert last not in impressed()
    page.locator("article.paper").last.scroll_into_view_if_needed()
    assert wait_for(lambda: last in impressed()), "a card scrolled to counts once seen"
    counts: dict[str, int] = {}
    for event in since_opened():
        counts[event["paper_id"]] = counts.get(event["paper_id"], 0) + 1
    assert set(counts.values()) == {1}, "each card once per opening"
    assert len(counts) < len(cards)
    page.close()


def test_the_popup_fits_its_width_on_every_tab(browser: tuple[Any, str]) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    for tab in ("For you", "Trending"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_selector("article.paper")
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert widths[0] <= widths[1], (tab, widths)
        heights = page.locator("nav button:not([hidden])").evaluate_all(
            "(buttons) => buttons.map((b) => b.getBoundingClientRect().height)"
        )
        assert max(heights) - min(heights) < 2, heights  # "For you" on one line
        options = page.locator("a.options").bounding_box()
        assert options is not None
        assert options["x"] + options["width"] <= widths[1]
        # Nothing of the header is cut at the right edge (the window control included).
        edges = page.locator("header button:visible, header input").evaluate_all(
            "(nodes) => nodes.map((n) => n.getBoundingClientRect().right)"
        )
        assert max(edges) <= widths[1], (tab, edges)
    page.close()


def test_trending_is_kept_for_offline_like_the_feed(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    page.get_by_role("tab", name="Trending").click()
    page.wait_for_selector("article.paper")
    online = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => n.dataset.paperId)"
    )
    page.close()
    with service_unreachable(context, service):
        page = open_popup(context, extension_id)  # the For-you tab: its last feed
        assert "Offline" in page.locator("#status").inner_text()
        page.get_by_role("tab", name="Trending").click()
        page.wait_for_selector("#status:has-text('trending as it was')")
        offline = page.locator("article.paper").evaluate_all(
            "(nodes) => nodes.map((n) => n.dataset.paperId)"
        )
        assert offline == online
        page.close()


def test_first_run_says_where_it_looks_and_options_test_the_connection(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    dead = "http://127.0.0.1:9"
    kept = worker_of(context).evaluate(
        "chrome.storage.local.get(['cachedFeed']).then((got) => got.cachedFeed ?? null)"
    )
    worker_of(context).evaluate(
        f"chrome.storage.local.set({{backendUrl: {dead!r}}})"
        ".then(() => chrome.storage.local.remove(['cachedFeed']))"
    )
    try:
        page = context.new_page()
        page.set_viewport_size({"width": 440, "height": 600})
        page.goto(f"chrome-extension://{extension_id}/popup/popup.html")
        page.wait_for_selector(".first-run")
        assert page.locator(".first-run .backend").inner_text() == dead
        assert "make run" in page.locator(".first-run").inner_text()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "popup-first-run.png"))
        with context.expect_page() as opened:
            page.get_by_role("button", name="Open options").click()
        options = opened.value
        options.wait_for_load_state()
        assert options.url.endswith("/options/options.html")
        # (wait_for_function polls by eval, which an extension page's CSP refuses)
        assert wait_for(lambda: options.locator("#backend").input_value())
        assert options.locator("#backend").input_value() == dead
        options.get_by_role("button", name="Test connection").click()
        options.wait_for_selector("#connection[data-ok='false']")
        assert (
            "Nothing answers at http://127.0.0.1:9" in options.locator("#connection").inner_text()
        )
        options.fill("#backend", service.url)
        options.get_by_role("button", name="Test connection").click()
        options.wait_for_selector("#connection[data-ok='true']")
        assert "Connected: paperfeed" in options.locator("#connection").inner_text()
        options.close()
        page.close()
    finally:
        restore = {"backendUrl": service.url, "cachedFeed": kept}
        worker_of(context).evaluate(f"chrome.storage.local.set({json.dumps(restore)})")


def test_the_saved_tab_and_the_hidden_list_follow_the_readers_actions(
    browser: tuple[Any, str], service: Service
) -> None:
    """Save is not a dead end: the Saved tab lists it (with unsave), the options page's
    Hidden list the dismissed papers (with undo); both keep their last copy offline."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    cards = page.locator("article.paper")
    saved = [cards.nth(n).get_attribute("data-paper-id") for n in (4, 5)]
    hidden, also_hidden = (cards.nth(n).get_attribute("data-paper-id") for n in (6, 7))
    for n in (4, 5):
        cards.nth(n).locator('[data-action="save"]').click()
    for paper in (hidden, also_hidden):
        page.locator(f"article.paper[data-paper-id='{paper}'] [data-action='dismiss']").click()

    def library(kind: str) -> list[str]:
        response = httpx.get(
            f"{service.url}/v1/me/library",
            params={"kind": kind},
            headers={"Authorization": f"Bearer {token(context)}"},
        )
        return [item["paper"]["id"] for item in response.json()["items"]]

    assert wait_for(lambda: set(saved) <= set(library("saved")))
    assert wait_for(lambda: {hidden, also_hidden} <= set(library("dismissed")))
    page.get_by_role("tab", name="Saved").click()
    page.wait_for_selector("article.paper")
    listed = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => n.dataset.paperId)"
    )
    assert listed[:2] == [saved[1], saved[0]]  # newest first
    first = page.locator("article.paper").first
    assert first.locator('[data-action="save"]').get_attribute("aria-pressed") == "true"
    assert first.locator(".reasons li").first.inner_text().startswith("saved ")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "popup-saved.png"))
    first.locator('[data-action="save"]').click()  # unsave
    assert wait_for(lambda: saved[1] not in library("saved"))
    page.close()

    options = context.new_page()
    options.goto(f"chrome-extension://{extension_id}/options/options.html")
    options.wait_for_selector(f"#hidden-list li[data-paper-id='{hidden}']")
    with service_unreachable(context, service):
        offline = open_popup(context, extension_id, tab="Saved")
        assert "Offline" in offline.locator("#status").inner_text()
        kept = offline.locator("article.paper").evaluate_all(
            "(nodes) => nodes.map((n) => n.dataset.paperId)"
        )
        assert kept == listed  # the list as it was last read
        offline.close()
        options.reload()
        options.wait_for_selector(f"#hidden-list li[data-paper-id='{hidden}']")
        assert "Offline" in options.locator("#hidden-state").inner_text()
    options.reload()
    options.wait_for_selector(f"#hidden-list li[data-paper-id='{also_hidden}']")
    # Both Undos at once: the list kept for offline loses both papers.
    options.evaluate(
        """(papers) => papers.forEach((paper) => document
            .querySelector(`#hidden-list li[data-paper-id='${paper}'] button`).click())""",
        [hidden, also_hidden],
    )
    assert wait_for(lambda: not {hidden, also_hidden} & set(library("dismissed")))
    assert "back in your feed" in options.locator("#hidden-state").inner_text()

    def neither_kept_hidden() -> bool:
        cached = storage(context, "cachedHidden")
        kept = {item["paper"]["id"] for item in cached["items"]} if cached else {hidden}
        return not {hidden, also_hidden} & kept

    assert wait_for(neither_kept_hidden), "an undone paper is still kept as hidden"
    options.close()


def test_a_long_library_comes_a_page_at_a_time_in_the_popup_and_the_options(
    browser: tuple[Any, str], service: Service
) -> None:
    """A reader with 105 saved and 105 dismissed papers sees the first 100 of each and
    a button for the rest, in order, nothing twice (another install, so the module's
    reader keeps their feed)."""
    context, extension_id = browser
    install = httpx.post(f"{service.url}/v1/installs").json()
    auth = {"Authorization": f"Bearer {install['token']}"}
    now = time.time()
    saves = [f"2412.8{n:04d}" for n in range(105)]
    dismissals = [f"2412.9{n:04d}" for n in range(105)]
    for kind, papers in (("save", saves), ("dismiss", dismissals)):
        events = [
            {"event_id": f"{kind}-{n}", "type": kind, "paper_id": pid, "ts": now - n}
            for n, pid in enumerate(papers)
        ]
        for start in range(0, len(events), 100):
            batch = {"events": events[start : start + 100]}
            sent = httpx.post(f"{service.url}/v1/events", json=batch, headers=auth)
            assert sent.status_code == 200, sent.text
    kept = worker_of(context).evaluate("chrome.storage.local.get(['token', 'userId'])")
    switch = {"token": install["token"], "userId": install["user_id"]}
    worker_of(context).evaluate(
        f"chrome.storage.local.set({json.dumps(switch)})"
        ".then(() => chrome.storage.local.remove(['cachedSaved', 'cachedHidden']))"
    )
    try:
        page = open_popup(context, extension_id, tab="Saved")
        cards = page.locator("article.paper")
        assert cards.count() == 100
        page.get_by_role("button", name="Show more saved papers").click()
        page.wait_for_selector("article.paper:nth-of-type(105)")
        listed = cards.evaluate_all("(nodes) => nodes.map((n) => n.dataset.paperId)")
        assert listed == saves  # newest first, each once
        assert page.get_by_role("button", name="Show more saved papers").count() == 0
        page.close()

        options = context.new_page()
        options.goto(f"chrome-extension://{extension_id}/options/options.html")
        options.wait_for_selector("#hidden-list li:nth-child(100)")
        more = options.locator("#hidden-more")
        assert more.is_visible()
        more.click()
        options.wait_for_selector("#hidden-list li:nth-child(105)")
        rows = options.locator("#hidden-list li").evaluate_all(
            "(nodes) => nodes.map((n) => n.dataset.paperId)"
        )
        assert rows == dismissals
        assert wait_for(lambda: not more.is_visible())
        options.close()
    finally:
        worker_of(context).evaluate(
            f"chrome.storage.local.set({json.dumps(kept)})"
            ".then(() => chrome.storage.local.remove(['cachedSaved', 'cachedHidden']))"
        )


def test_the_popup_searches_with_slash_and_shows_the_same_cards(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    wanted = page.locator("article.paper").nth(2)
    title = wanted.locator(".title").inner_text()
    paper = wanted.get_attribute("data-paper-id")
    before = [e for e in export(service, context)["events"] if e["type"] in ("save", "dismiss")]
    page.locator("body").press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type(title)
    page.keyboard.press("Enter")
    page.wait_for_selector(f"article.paper:first-of-type[data-paper-id='{paper}']")
    first = page.locator("article.paper").first
    assert first.locator('[data-action="save"]').count() == 1  # the same card and actions
    selected = page.locator('[role="tab"][aria-selected="true"]').all_inner_texts()
    assert selected == ["Search"]  # a search is a tab of its own
    page.screenshot(path=str(SCREENSHOTS / "popup-search.png"))
    # Typing in the box is not a key command: nothing was saved or dismissed (a paper
    # dismissed before shows as such, from the service's answer: "Dismissed: <title>").
    assert page.locator(".dismissed .what:text-is('Dismissed.')").count() == 0
    # (an event sent is still queued, or the service has it: it is in neither)
    typed = [e for e in storage(context, "queue") or [] if e["type"] in ("save", "dismiss")]
    assert typed == []
    actions = [e for e in export(service, context)["events"] if e["type"] in ("save", "dismiss")]
    assert actions == before
    page.close()


def test_the_options_page_pairs_this_browser_with_another(
    browser: tuple[Any, str], service: Service
) -> None:
    """The other browser is an install made over HTTP: its code links this extension to
    its reader, and this extension's code links another install to this one's reader."""
    context, extension_id = browser
    api = httpx.Client(base_url=service.url)
    other = api.post("/v1/installs").json()
    other_auth = {"Authorization": f"Bearer {other['token']}"}
    code = api.post("/v1/me/pairing-codes", headers=other_auth).json()["code"]
    options = context.new_page()
    options.goto(f"chrome-extension://{extension_id}/options/options.html")
    options.fill("#pairing-input", code)
    options.get_by_role("button", name="Link this browser", exact=True).click()
    options.wait_for_selector("#pairing-state[data-ok='true']")
    # This extension's token now stands for the other install's reader.
    assert export(service, context)["user_id"] == other["user_id"]
    assert storage(context, "userId") == other["user_id"]
    # A wrong code says so, without telling whether it exists.
    options.fill("#pairing-input", "ABCD-EFGH")
    options.get_by_role("button", name="Link this browser", exact=True).click()
    options.wait_for_selector("#pairing-state[data-ok='false']")
    assert "not valid" in options.locator("#pairing-state").inner_text()
    # This browser shows a code; a third install links with it.
    options.get_by_role("button", name="Show a pairing code").click()
    options.wait_for_selector("#pairing-code:not(:empty)")
    shown = options.locator("#pairing-code").inner_text()
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", shown), shown
    third = api.post("/v1/installs").json()
    linked = api.post(
        "/v1/me/link", json={"code": shown}, headers={"Authorization": f"Bearer {third['token']}"}
    )
    assert linked.status_code == 200
    assert linked.json()["user_id"] == other["user_id"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    options.screenshot(path=str(SCREENSHOTS / "options-pairing.png"), full_page=True)
    # Unlinking this browser revokes its token; the reader stays with the others.
    options.get_by_role("button", name="Unlink this browser").click()
    options.wait_for_selector("#pairing-state:has-text('Unlinked')")
    assert storage(context, "token") is None
    assert api.get("/v1/feed", headers=other_auth).status_code == 200
    options.close()
    api.close()
    open_popup(context, extension_id).close()  # registers afresh, as a reader would


def test_the_extension_reaches_paper_sites_through_its_content_scripts_only(
    browser: tuple[Any, str],
) -> None:
    """Host access: the service's addresses, and the paper sites only where the content
    scripts run (their matches grant that); no blanket access to arxiv.org or
    huggingface.co, which nothing needs (the service worker fetches the service only)."""
    context, _ = browser
    worker = worker_of(context)
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    scripts = {match for script in manifest["content_scripts"] for match in script["matches"]}
    granted = worker.evaluate("chrome.permissions.getAll()")
    assert set(granted["origins"]) == {"http://127.0.0.1/*", "http://localhost/*"} | scripts
    assert sorted(granted["permissions"]) == ["alarms", "storage"]
    for site in ("https://arxiv.org/*", "https://huggingface.co/*"):
        assert worker.evaluate(f"chrome.permissions.contains({{origins: [{site!r}]}})") is False


def test_one_install_however_many_ask_at_the_same_moment(
    browser: tuple[Any, str], service: Service
) -> None:
    """The popup, the options page and a Hugging Face list all ask the service worker for
    the install; asked at once, it registers once and every one gets that install (each
    registered its own before: the token kept was one of them, the others orphans)."""
    context, extension_id = browser
    ensure_install(context, extension_id)
    worker = worker_of(context)
    kept = worker.evaluate("chrome.storage.local.get(['token', 'userId', 'forYou'])")
    worker.evaluate("chrome.storage.local.remove(['token', 'userId', 'forYou'])")
    page = context.new_page()
    try:
        page.goto(f"chrome-extension://{extension_id}/options/options.html")
        answers = page.evaluate(
            """() => Promise.all([
                chrome.runtime.sendMessage({ kind: "install" }),
                chrome.runtime.sendMessage({ kind: "for-you" }),
                chrome.runtime.sendMessage({ kind: "install" }),
                chrome.runtime.sendMessage({ kind: "install" }),
            ])"""
        )
        assert all("error" not in answer for answer in answers), answers
        tokens = {answer["token"] for answer in answers if "token" in answer}
        assert tokens == {storage(context, "token")}
        assert answers[1]["papers"], "the list's papers came with that install"
    finally:
        page.close()
        worker.evaluate(f"chrome.storage.local.set({json.dumps(kept)})")


def test_an_answer_that_comes_after_the_reader_left_its_tab_is_not_shown(
    browser: tuple[Any, str], service: Service
) -> None:
    """The For-you feed is slow to come; the reader opens Trending meanwhile. When the
    feed's answer arrives it is kept (for offline use) but not drawn over Trending."""
    context, extension_id = browser
    ensure_install(context, extension_id)
    worker_of(context).evaluate("chrome.storage.local.remove('cachedFeed')")
    page = context.new_page()
    page.set_viewport_size({"width": 440, "height": 600})
    held: list[Any] = []
    page.route(re.compile(r".*/v1/feed\?.*"), lambda route: held.append(route))
    page.goto(f"chrome-extension://{extension_id}/popup/popup.html")
    # (Playwright hands the route over while the test calls it: each check asks the page.)
    assert wait_for(lambda: page.locator("#status").count() and held), "the feed waits"
    assert len(held) == 1
    page.get_by_role("tab", name="Trending").click()
    page.wait_for_selector("article.paper")
    trending = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => { n.dataset.drawn = 'trending'; return n.dataset.paperId; })"
    )
    held[0].continue_()

    def feed_kept() -> bool:  # read by the popup itself: its load has gone on by then
        return bool(
            page.evaluate("chrome.storage.local.get('cachedFeed').then((g) => !!g.cachedFeed)")
        )

    assert wait_for(feed_kept), "the late feed was kept"
    cards = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => [n.dataset.paperId, n.dataset.drawn ?? null])"
    )
    assert cards == [[paper, "trending"] for paper in trending]
    assert page.get_by_role("tab", name="Trending").get_attribute("aria-selected") == "true"
    assert not page.locator("#windows").is_hidden()
    page.close()


def test_paper_pages_record_a_view_with_metadata(
    browser: tuple[Any, str], service: Service
) -> None:
    context, _ = browser
    page = context.new_page()
    page.goto("https://arxiv.org/abs/2312.17653v2")
    page.wait_for_timeout(1500)
    page.goto("https://huggingface.co/papers/2401.00368")
    page.wait_for_timeout(1500)
    # A paper the catalog lacks (the same recorded page under another id).
    page.goto("https://arxiv.org/abs/2612.99990")
    page.wait_for_timeout(1500)
    page.goto("about:blank")

    def viewed() -> list[dict[str, Any]]:
        events = export(service, context)["events"]
        return [e for e in events if e["type"] == "view"]

    views = wait_for(lambda: len(viewed()) >= 3 and viewed())
    by_paper = {v["paper_id"]: v for v in views}
    arxiv = by_paper["2312.17653"]
    assert arxiv["source"] == "arxiv"
    assert arxiv["dwell_ms"] >= 1000
    assert by_paper["2401.00368"]["source"] == "huggingface"
    # Only the title of a paper the catalog lacks is kept, as this reader's hint; no
    # abstract or url of the page is sent or kept.
    titles = export(service, context)["page_titles"]
    assert "2312.17653" not in titles  # catalogued: its own text is the catalog's
    assert titles["2612.99990"].startswith("LARP")
    assert all(set(v) <= {"type", "paper_id", "ts", "dwell_ms", "source"} for v in views)
    page.close()


def test_the_hugging_face_list_gets_for_you_marks(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    ensure_install(context, extension_id)
    # The list shows three papers of the reader's feed among five others.
    feed = httpx.get(
        f"{service.url}/v1/feed",
        params={"limit": 50},
        headers={"Authorization": f"Bearer {token(context)}"},
    ).json()["items"]
    arxiv_ids = [
        i["paper"]["id"] for i in feed[:15] if re.fullmatch(r"\d{4}\.\d{4,5}", i["paper"]["id"])
    ]
    picked = arxiv_ids[:3]
    assert len(picked) == 3, feed
    listing = (PAGES / "hf-list.html").read_text()
    for listed, ours in zip(("2312.17681", "2312.17276", "2312.17742"), picked, strict=True):
        listing = listing.replace(f"/papers/{listed}", f"/papers/{ours}")
    page = context.new_page()
    page.route(
        "https://huggingface.co/papers",
        lambda route: route.fulfill(status=200, content_type="text/html", body=listing),
    )
    page.goto("https://huggingface.co/papers")
    page.wait_for_selector(".paperfeed-for-you", timeout=15_000)
    marked = page.locator(".paperfeed-for-you").evaluate_all(
        "(nodes) => nodes.map((n) => n.previousElementSibling.getAttribute('href'))"
    )
    on_page = set(
        page.locator("article a.title").evaluate_all(
            "(nodes) => nodes.map((n) => n.getAttribute('href'))"
        )
    )
    for_you = {f"/papers/{p['id']}" for p in storage(context, "forYou")["papers"]}
    # Exactly the listed papers that the reader's feed ranks highly, each marked once.
    assert sorted(marked) == sorted(on_page & for_you)
    assert {f"/papers/{p}" for p in picked} <= set(marked)
    # The page itself is intact: every original link is still there.
    assert page.locator("article a.title").count() == 8
    assert page.locator(".paperfeed-for-you").first.inner_text() == "for you"
    page.close()


HF_LISTS = (
    "https://huggingface.co/papers/trending",
    "https://huggingface.co/papers/date/2024-01-03",
    "https://huggingface.co/papers/week/2024-W01",
    "https://huggingface.co/papers/month/2024-01",
    "https://huggingface.co/papers?date=2024-01-03",
)


def test_every_hugging_face_list_is_marked_and_client_side_changes_followed(
    browser: tuple[Any, str], service: Service
) -> None:
    """Trending, date, week and month lists are marked as the daily list is; when the
    page moves to another day without reloading, the new cards get their marks and no
    card gets two."""
    context, extension_id = browser
    ensure_install(context, extension_id)

    def for_you() -> list[str]:
        papers = (storage(context, "forYou") or {}).get("papers", [])
        return [p["id"] for p in papers if re.fullmatch(r"\d{4}\.\d{4,5}", p["id"])]

    strangers = ["2401.09901", "2401.09902", "2401.09903"]  # in nobody's feed

    def card(paper: str) -> str:
        return (
            f'<article><h3><a class="title" href="/papers/{paper}">Paper {paper}</a></h3>'
            f'<a class="thumb" href="/papers/{paper}"><img alt=""></a></article>'
        )

    # A first list page asks the extension for the reader's papers (it keeps them).
    first = context.new_page()
    first.route(
        HF_LISTS[0],
        lambda route: route.fulfill(status=200, content_type="text/html", body=card(strangers[0])),
    )
    first.goto(HF_LISTS[0])
    ours = wait_for(lambda: for_you() if len(for_you()) >= 3 else None)
    first.close()
    assert ours, "the reader's for-you list holds three arXiv papers"

    listing = (
        "<!doctype html><html><body><h1>Daily Papers</h1>"
        + "".join(card(p) for p in (strangers[0], ours[0], strangers[1]))
        + "</body></html>"
    )
    for url in HF_LISTS:
        page = context.new_page()
        page.route(
            url, lambda route: route.fulfill(status=200, content_type="text/html", body=listing)
        )
        page.goto(url)
        page.wait_for_selector(".paperfeed-for-you", timeout=15_000)
        marked = page.locator(".paperfeed-for-you").evaluate_all(
            "(nodes) => nodes.map((n) => n.previousElementSibling.getAttribute('href'))"
        )
        assert marked == [f"/papers/{ours[0]}"], url
        page.close()

    page = context.new_page()
    url = HF_LISTS[1]
    page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=listing))
    page.goto(url)
    page.wait_for_selector(".paperfeed-for-you", timeout=15_000)
    # The site moves to the next day on the client: new cards replace the list ...
    page.evaluate(
        """(cards) => {
            history.pushState({}, "", "/papers/date/2024-01-04");
            for (const card of document.querySelectorAll("article")) card.remove();
            document.body.insertAdjacentHTML("beforeend", cards);
        }""",
        card(strangers[2]) + card(ours[1]) + card(ours[0]),
    )
    for paper in (ours[1], ours[0]):
        page.wait_for_selector(f"a[href='/papers/{paper}'] + .paperfeed-for-you", timeout=15_000)
    # ... and a card is added to the current list, the way a client-rendered list grows.
    page.evaluate("(more) => document.body.insertAdjacentHTML('beforeend', more)", card(ours[2]))
    page.wait_for_selector(f"a[href='/papers/{ours[2]}'] + .paperfeed-for-you", timeout=15_000)
    marks = page.locator("article a.title").evaluate_all(
        """(links) => links.map((a) => [a.getAttribute('href'),
            a.parentElement.querySelectorAll('.paperfeed-for-you').length])"""
    )
    assert dict(marks) == {
        f"/papers/{strangers[2]}": 0,
        f"/papers/{ours[1]}": 1,
        f"/papers/{ours[0]}": 1,
        f"/papers/{ours[2]}": 1,
    }
    page.close()


def test_events_made_offline_are_delivered_exactly_once_after_restart(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    page = open_popup(context, extension_id)
    target = page.locator("article.paper").nth(3).get_attribute("data-paper-id")
    assert service.stop() == 0
    page.locator("article.paper").nth(3).locator('[data-action="save"]').click()
    queued = wait_for(lambda: [e for e in storage(context, "queue") or [] if e["type"] == "save"])
    assert queued, "the save waits in the persisted queue"
    saved_id = queued[0]["event_id"]
    service.start()
    # Coming back online (or the next alarm) delivers the queue.
    worker_of(context).evaluate("self.dispatchEvent(new Event('online'))")
    assert wait_for(lambda: not storage(context, "queue")), "the queue drained"
    # The service took the batch but its answer was lost: the extension still holds the
    # event and sends it again. The service counts it once.
    worker_of(context).evaluate("(event) => chrome.storage.local.set({queue: [event]})", queued[0])
    worker_of(context).evaluate("self.dispatchEvent(new Event('online'))")
    assert wait_for(lambda: not storage(context, "queue")), "the resend was answered"
    # (the export lists events without their ids: one save of the paper, not two)
    events = export(service, context)["events"]
    assert saved_id
    assert [(e["type"], e["paper_id"]) for e in events].count(("save", target)) == 1
    assert export(service, context)["papers"][target]["saved"]
    page.close()


def test_options_page_exports_and_deletes(browser: tuple[Any, str], service: Service) -> None:
    context, extension_id = browser
    user_token = token(context)
    page = context.new_page()
    page.set_viewport_size({"width": 640, "height": 560})
    page.goto(f"chrome-extension://{extension_id}/options/options.html")
    assert page.input_value("#backend") == service.url
    page.screenshot(path=str(SCREENSHOTS / "options.png"))
    with page.expect_download() as download:
        page.click("#export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["user_id"]
    questions: list[str] = []

    def accept(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.accept()

    # Only the service's answer says the data is gone: with the service down, the page
    # says nothing was confirmed and keeps the token for another try.
    assert service.stop() == 0
    page.once("dialog", accept)
    page.click("#delete")
    page.wait_for_selector("#status:has-text('Nothing was confirmed deleted')")
    assert storage(context, "token") == user_token
    service.start()
    page.once("dialog", accept)
    page.click("#delete")
    page.wait_for_selector("#status:has-text('Deleted at the service')")
    assert "every browser linked" in questions[0]
    gone = httpx.get(
        f"{service.url}/v1/me/export", headers={"Authorization": f"Bearer {user_token}"}
    )
    assert gone.status_code == 401
    assert storage(context, "token") is None
    page.check("#paused")
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#settings-state:has-text('Saved')")
    assert storage(context, "paused") is True
    page.close()


def test_a_feed_that_arrives_after_the_reader_deleted_their_data_is_not_kept(
    browser: tuple[Any, str], service: Service
) -> None:
    """The popup asked for the feed; the service answered, but before the answer reached
    the popup the reader deleted their data in the options page. The late answer is not
    kept: offline, the popup never shows a deleted reader's papers as their last feed."""
    context, extension_id = browser
    ensure_install(context, extension_id)
    deleted = token(context)
    worker_of(context).evaluate("chrome.storage.local.remove('cachedFeed')")
    popup = context.new_page()
    held: list[Any] = []
    popup.route(re.compile(r".*/v1/feed\?.*"), lambda route: held.append(route))
    popup.goto(f"chrome-extension://{extension_id}/popup/popup.html")
    assert wait_for(lambda: popup.locator("#status").count() and held), "the feed waits"
    answer = held[0].fetch()  # the service answers before the deletion ...
    assert answer.status == 200
    options = context.new_page()
    options.goto(f"chrome-extension://{extension_id}/options/options.html")
    options.once("dialog", lambda dialog: dialog.accept())
    options.click("#delete")
    options.wait_for_selector("#status:has-text('Deleted at the service')")
    held[0].fulfill(response=answer)  # ... and reaches the popup after it
    popup.wait_for_selector("article.paper")  # its load went on past keeping the answer
    assert storage(context, "token") != deleted  # (a retry may have registered anew)
    assert storage(context, "cachedFeed") is None
    popup.close()
    options.close()
    with service_unreachable(context, service):
        offline = context.new_page()
        offline.goto(f"chrome-extension://{extension_id}/popup/popup.html")
        offline.wait_for_selector(".first-run")
        assert offline.locator("article.paper").count() == 0
        offline.close()


def test_a_reader_deleted_in_another_browser_leaves_nothing_of_theirs_here(
    browser: tuple[Any, str], service: Service
) -> None:
    """The reader's data was deleted from another browser linked to this one: the first
    answer the extension gets for its token is a 401. It forgets the token and all it
    kept of that reader (the feed for offline use, the for-you marks, the events not yet
    sent: sent to a new reader they would bring part of the erased data back), and
    registers anew. The popup that meets the 401 starts afresh by itself."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    deleted = token(context)
    assert storage(context, "cachedFeed")
    paper = page.locator("article.paper").first.get_attribute("data-paper-id")
    page.close()
    gone = httpx.delete(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {deleted}"})
    assert gone.status_code in (200, 202, 204), gone.text
    options = context.new_page()  # an extension page: its messages are the reader's own
    options.goto(f"chrome-extension://{extension_id}/options/options.html")
    options.evaluate(
        """(paper) => chrome.runtime.sendMessage({
            kind: "track", site: "options", events: [{ type: "save", paper_id: paper }] })""",
        paper,
    )
    assert wait_for(lambda: storage(context, "token") != deleted), "the 401 forgot nothing"
    assert storage(context, "cachedFeed") is None
    assert storage(context, "seenFeedIds") is None
    assert storage(context, "queue") is None  # the erased reader's save is not sent again
    options.evaluate("chrome.runtime.sendMessage({ kind: 'flush' })")  # a new install, now
    fresh = token(context)
    saved = httpx.get(
        f"{service.url}/v1/me/library",
        params={"kind": "saved"},
        headers={"Authorization": f"Bearer {fresh}"},
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["items"] == []
    options.close()

    # The popup meets the 401 itself (nothing queued): it starts afresh, not stuck on
    # "This install is not known to the service."
    gone = httpx.delete(f"{service.url}/v1/me", headers={"Authorization": f"Bearer {fresh}"})
    assert gone.status_code in (200, 202, 204), gone.text
    page = open_popup(context, extension_id)
    assert storage(context, "token") not in (fresh, deleted, None)
    assert "not known" not in page.locator("#status").inner_text()
    page.close()


def test_a_network_past_its_new_installs_is_told_when_to_try_again(
    browser: tuple[Any, str],
) -> None:
    """The service refuses a new install: the address made its 30 of the hour (a shared
    or NAT address). The popup says when to try again, and that Trending works; it said
    "Too many requests; trying again soon." for an hour. (The service worker's fetch of
    /v1/installs answers that 429 here, with the service's own body and headers.)"""
    context, extension_id = browser
    worker = worker_of(context)
    kept = worker.evaluate("chrome.storage.local.get(['token', 'userId'])")
    worker.evaluate(
        """() => {
        globalThis.realFetch ??= globalThis.fetch;
        globalThis.fetch = (input, init) => String(input).endsWith("/v1/installs")
          ? Promise.resolve(new Response(JSON.stringify({
              status_code: 429,
              detail: "rate limit reached: at most 30 new installs an hour from an address",
            }), {
              status: 429,
              headers: { "Retry-After": "3491", "Content-Type": "application/json" },
            }))
          : globalThis.realFetch(input, init);
        return chrome.storage.local.remove(["token", "userId", "cachedFeed"]);
      }"""
    )
    try:
        page = context.new_page()
        page.goto(f"chrome-extension://{extension_id}/popup/popup.html")
        page.wait_for_selector("#status:has-text('try again')")
        assert page.locator("#status").inner_text() == (
            "Too many requests (at most 30 new installs an hour from an address): "
            "try again in about 59 minutes. Trending works meanwhile."
        )
        page.get_by_role("tab", name="Trending").click()
        page.wait_for_selector("article.paper")
        page.close()
    finally:
        worker.evaluate("() => { globalThis.fetch = globalThis.realFetch; }")
        worker.evaluate(f"chrome.storage.local.set({json.dumps(kept)})")


def test_options_page_subscribes_to_the_digest_and_shows_its_state(
    browser: tuple[Any, str], service: Service, ext_mailbox: Mailbox
) -> None:
    context, extension_id = browser
    page = context.new_page()
    page.set_viewport_size({"width": 640, "height": 760})
    page.goto(f"chrome-extension://{extension_id}/options/options.html")
    page.wait_for_selector("#digest-state:has-text('Not subscribed')")
    page.fill("#digest-email", "reader@example.org")
    page.select_option("#digest-frequency", "weekly")
    page.fill("#digest-size", "7")
    page.click("#digest button[type=submit]")
    page.wait_for_selector("#digest-state:has-text('Waiting for your confirmation')")
    assert "reader@example.org" in page.inner_text("#digest-state")

    confirmation = ext_mailbox.wait_for(1)[-1]
    assert confirmation["To"] == "reader@example.org"
    body = confirmation.get_body(preferencelist=("plain",))
    assert body is not None
    link = next(w for w in str(body.get_content()).split() if "/v1/digest/confirm?" in w)
    assert "<form method='post'" in httpx.get(link).text  # the link's page asks ...
    assert httpx.post(link).status_code == 200  # ... and its button confirms
    page.reload()
    page.wait_for_selector("#digest-state:has-text('Confirmed')")
    assert page.inner_text("#digest-state") == (
        "Confirmed: a weekly digest of 7 papers goes to reader@example.org."
    )
    page.screenshot(path=str(SCREENSHOTS / "options-digest.png"), full_page=True)
    answer = httpx.get(
        f"{service.url}/v1/me/digest", headers={"Authorization": f"Bearer {token(context)}"}
    )
    assert answer.json()["confirmed"] is True

    page.click("#digest-stop")
    page.wait_for_selector("#digest-state:has-text('Stopped')")
    gone = httpx.get(
        f"{service.url}/v1/me/digest", headers={"Authorization": f"Bearer {token(context)}"}
    )
    assert (gone.status_code, gone.json()) == (200, None)
    page.close()


def test_events_sent_at_the_same_moment_are_all_delivered(
    browser: tuple[Any, str], service: Service
) -> None:
    """Forty events queued at once from a page of the extension, while the service
    worker is flushing earlier ones: every one reaches the service (none overwritten in
    the queue)."""
    context, extension_id = browser
    worker_of(context).evaluate("chrome.storage.local.set({paused: false})")  # tracking on
    page = open_popup(context, extension_id)
    papers = page.locator("article.paper").evaluate_all(
        "(nodes) => nodes.map((n) => n.dataset.paperId)"
    )
    # Each event marked by a dwell of its own (the service keeps no client text).
    marks = range(777_000, 777_040)
    page.evaluate(
        """(papers) => Promise.all(Array.from({ length: 40 }, (_, n) =>
            chrome.runtime.sendMessage({ kind: "track", site: "popup",
              events: [{ type: "impression", paper_id: papers[n % papers.length],
                         dwell_ms: 777000 + n }] })))""",
        papers,
    )

    def delivered() -> int:
        events = export(service, context)["events"]
        return len({e.get("dwell_ms") for e in events} & set(marks))

    assert wait_for(lambda: delivered() == 40, timeout=30), delivered()
    # (the popup's own impressions may still be on their way: the queue empties)
    assert wait_for(lambda: storage(context, "queue") == []), storage(context, "queue")
    page.close()


def test_a_long_read_reports_its_reading_time_after_the_checkpoint(
    browser: tuple[Any, str], service: Service
) -> None:
    """The view goes out at the 15 s checkpoint; the reading after it arrives as a
    `read` event when the page is left, and adds to the paper's dwell time."""
    context, _ = browser
    worker_of(context).evaluate("chrome.storage.local.set({paused: false})")  # tracking on
    page = context.new_page()
    page.goto("https://arxiv.org/abs/2312.17001")

    def events_of(kind: str) -> list[dict[str, Any]]:
        events = export(service, context)["events"]
        return [e for e in events if e["type"] == kind and e["paper_id"] == "2312.17001"]

    views = wait_for(lambda: events_of("view"), timeout=30)
    assert views
    assert views[0]["dwell_ms"] >= 14_000
    page.wait_for_timeout(2_000)  # the reader keeps reading
    page.goto("about:blank")  # and leaves: the page is hidden
    reads = wait_for(lambda: events_of("read"))
    assert reads
    assert reads[0]["dwell_ms"] >= 1_500
    record = export(service, context)["papers"]["2312.17001"]
    assert record["views"] == 1
    assert record["dwell_ms"] == views[0]["dwell_ms"] + reads[0]["dwell_ms"]
    page.close()


def test_no_key_acts_before_a_paper_is_marked_and_the_first_j_marks_the_first(
    browser: tuple[Any, str],
) -> None:
    """A popup just opened marks no paper: u does nothing (it upvoted the first paper,
    unmarked), and the first j marks the first paper (it marked the second)."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    first = page.locator("article.paper").first
    page.keyboard.press("u")
    page.keyboard.press("j")
    assert page.locator("article.paper.current").count() == 1
    assert page.locator("article.paper.current").get_attribute(
        "data-paper-id"
    ) == first.get_attribute("data-paper-id")
    assert first.locator('[data-action="upvote"]').get_attribute("aria-pressed") == "false"
    page.close()


def test_keys_never_act_on_a_paper_the_reader_dismissed(
    browser: tuple[Any, str], service: Service
) -> None:
    """Dismiss the second card, focus the first, press j then u: the upvote goes to the
    third paper (the next one shown), never to the hidden one; keys on the Undo row do
    nothing. (Last in this module: the upvote and the dismissal change the feed that the
    tests above expect.)"""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    cards = page.locator("article.paper")
    first, hidden, third = (cards.nth(n).get_attribute("data-paper-id") for n in range(3))
    page.locator(f'article.paper[data-paper-id="{hidden}"] [data-action="dismiss"]').click()
    assert page.locator(".dismissed").count() == 1
    page.locator(f'article.paper[data-paper-id="{first}"]').focus()
    page.keyboard.press("j")
    current = page.locator("article.paper.current").get_attribute("data-paper-id")
    assert current == third
    page.keyboard.press("u")
    upvote = f'article.paper[data-paper-id="{third}"] [data-action="upvote"]'
    page.wait_for_selector(f'{upvote}[aria-pressed="true"]')
    # On the Undo row (focused by a keyboard dismissal), an action key does nothing.
    page.locator(".dismissed button").focus()
    page.keyboard.press("s")

    def applied() -> dict[str, Any] | None:
        papers = export(service, context)["papers"]
        return papers if third in papers and papers[third]["upvoted"] else None

    papers = wait_for(applied)
    assert papers, "the upvote reached the service"
    assert papers[hidden]["dismissed"]
    assert not papers[hidden]["upvoted"]
    assert not papers[hidden]["saved"]
    page.close()


def ids_of(page: Any) -> list[str]:
    return list(
        page.locator("article.paper").evaluate_all("(nodes) => nodes.map((n) => n.dataset.paperId)")
    )


def pressed(page: Any, paper: str, action: str) -> str | None:
    button = page.locator(f'article.paper[data-paper-id="{paper}"] [data-action="{action}"]')
    return str(button.get_attribute("aria-pressed"))


def test_the_readers_own_actions_show_again_after_reopening(
    browser: tuple[Any, str], service: Service
) -> None:
    """Upvote, save and dismiss on Trending, close the popup, reopen it: Trending (and a
    search) show them pressed and the dismissed paper as dismissed, from the service's
    answer; one click on a pressed Upvote undoes it (it sent a second upvote before)."""
    context, extension_id = browser
    page = open_popup(context, extension_id, tab="Trending")
    page.wait_for_selector("article.paper .reasons li:has-text('this week')")
    ids = ids_of(page)
    upvoted, saved, dismissed = ids[3], ids[4], ids[5]
    for paper, action in ((upvoted, "upvote"), (saved, "save"), (dismissed, "dismiss")):
        page.locator(f'article.paper[data-paper-id="{paper}"] [data-action="{action}"]').click()

    def applied() -> bool:
        papers = export(service, context)["papers"]
        return all(p in papers for p in (upvoted, saved, dismissed)) and bool(
            papers[upvoted]["upvoted"] and papers[saved]["saved"] and papers[dismissed]["dismissed"]
        )

    assert wait_for(applied), "the actions reached the service"
    assert wait_for(lambda: not storage(context, "queue")), "nothing waits in the queue"
    page.close()

    page = open_popup(context, extension_id, tab="Trending")
    page.wait_for_selector(f'article.paper[data-paper-id="{upvoted}"]')
    assert pressed(page, upvoted, "upvote") == "true"
    assert pressed(page, saved, "save") == "true"
    assert pressed(page, saved, "upvote") == "false"
    row = page.locator(f'.dismissed[data-paper-id="{dismissed}"]')
    assert row.count() == 1
    assert "Dismissed" in row.inner_text()
    undo = row.get_by_role("button", name="Undo").bounding_box()
    assert undo is not None
    assert undo["height"] < 32  # on one line, beside the title
    assert page.locator(f'article.paper[data-paper-id="{dismissed}"]').count() == 0
    page.locator(f'article.paper[data-paper-id="{upvoted}"]').scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "popup-trending.png"))
    # One click undoes the upvote: an unvote, not a second upvote.
    page.locator(f'article.paper[data-paper-id="{upvoted}"] [data-action="upvote"]').click()
    assert pressed(page, upvoted, "upvote") == "false"

    def unvoted() -> bool:
        data = export(service, context)
        kinds = [e["type"] for e in data["events"] if e["paper_id"] == upvoted]
        return kinds.count("unvote") == 1 and not data["papers"][upvoted]["upvoted"]

    assert wait_for(unvoted), "one click, one unvote"
    kinds = [e["type"] for e in export(service, context)["events"] if e["paper_id"] == upvoted]
    assert kinds.count("upvote") == 1
    # Undo of the dismissal, from the reopened popup.
    row.get_by_role("button", name="Undo").click()
    page.wait_for_selector(f'article.paper[data-paper-id="{dismissed}"]')
    assert wait_for(lambda: not export(service, context)["papers"][dismissed]["dismissed"])
    page.close()

    # A search shows the same state (the saved paper found by its id).
    page = open_popup(context, extension_id)
    page.fill("#search", saved)
    page.keyboard.press("Enter")
    page.wait_for_selector(f'article.paper:first-of-type[data-paper-id="{saved}"]')
    assert pressed(page, saved, "save") == "true"
    page.close()


def test_for_you_and_trending_show_more_than_thirty_papers_and_an_upvoted_tab(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    for tab in ("For you", "Trending"):
        page = open_popup(context, extension_id, tab=tab)
        # (a paper dismissed by an earlier test is a "Dismissed" row in Trending)
        listed = "#list > article.paper, #list > .dismissed"
        assert page.locator(listed).count() == 30, tab
        first_page = ids_of(page)
        page.get_by_role("button", name="Show more papers").click()
        page.wait_for_selector(f"{listed.split(',')[0]}:nth-of-type({len(first_page) + 1})")
        ids = ids_of(page)
        assert len(ids) > len(first_page), tab
        assert ids[: len(first_page)] == first_page
        assert len(ids) == len(set(ids)), f"{tab}: no paper twice"
        # The keyboard reaches the papers of the next page.
        page.locator("article.paper").nth(len(first_page) - 1).focus()
        page.keyboard.press("j")
        current = page.locator("article.paper.current").get_attribute("data-paper-id")
        assert current == ids[len(first_page)], tab
        page.close()

    page = open_popup(context, extension_id, tab="Trending")
    paper = ids_of(page)[7]
    page.locator(f'article.paper[data-paper-id="{paper}"] [data-action="upvote"]').click()
    page.close()
    assert wait_for(lambda: export(service, context)["papers"].get(paper, {}).get("upvoted"))
    page = open_popup(context, extension_id, tab="Upvoted")
    assert ids_of(page)[0] == paper  # newest first
    first = page.locator("article.paper").first
    assert first.locator(".reasons li").first.inner_text().startswith("upvoted ")
    assert pressed(page, paper, "upvote") == "true"
    assert page.get_by_role("tab", name="Upvoted").get_attribute("aria-selected") == "true"
    page.close()


def test_search_by_paper_address_is_a_tab_that_clearing_leaves(
    browser: tuple[Any, str], service: Service
) -> None:
    """A Hugging Face paper URL finds its paper (it matched other papers on the URL's
    words); an address of a paper the catalog lacks says so; the search is a tab of its
    own, and clearing the box then Enter goes back to the tab before it."""
    context, extension_id = browser
    daily = json.loads((FIXTURES / "daily_papers.json").read_text())
    wanted = daily[2]["paper"]["id"]  # catalogued by the module's service
    page = open_popup(context, extension_id, tab="Trending")
    trending = ids_of(page)
    page.locator("body").press("/")
    page.keyboard.type(f"https://huggingface.co/papers/{wanted}")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'article.paper[data-paper-id="{wanted}"]')
    assert ids_of(page) == [wanted]
    selected = page.locator('[role="tab"][aria-selected="true"]').all_inner_texts()
    assert selected == ["Search"]
    assert page.locator("#windows").is_hidden()
    page.screenshot(path=str(SCREENSHOTS / "popup-search-url.png"))

    page.fill("#search", "https://arxiv.org/abs/2612.99999v1")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('not in the catalog yet')")
    assert "2612.99999" in page.locator("#status").inner_text()
    assert page.locator("article.paper").count() == 0

    page.fill("#search", "")
    page.keyboard.press("Enter")
    page.wait_for_selector("#tab-trending[aria-selected='true']")
    page.wait_for_selector("article.paper")
    assert page.locator("#tab-search").is_hidden()
    assert ids_of(page) == trending
    page.close()


def test_a_paper_the_catalog_lacks_is_asked_for_from_the_search(
    browser: tuple[Any, str], service: Service
) -> None:
    """A search by the address of a paper the catalog lacks offers "Ask for it"; a click
    sends the request (the service records it for this reader) and says the paper will
    appear once arXiv confirms it; the button is not offered again for that id."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    wanted, other = "2401.00777", "2401.00778"
    page.locator("body").press("/")
    page.keyboard.type(f"https://arxiv.org/abs/{wanted}v2")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status:has-text('not in the catalog yet')")
    ask = page.locator("#status").get_by_role("button", name="Ask for it")
    assert ask.is_visible()
    ask.click()
    page.wait_for_selector("#status:has-text('once arXiv confirms it')")
    assert wanted in page.locator("#status").inner_text()
    assert page.get_by_role("button", name="Ask for it").count() == 0
    assert wanted in export(service, context)["requested"]

    page.fill("#search", other)  # another paper the catalog lacks: offered
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#status:has-text('{other} is not in the catalog yet')")
    assert page.get_by_role("button", name="Ask for it").count() == 1
    page.fill("#search", wanted)  # the one asked for: not again
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#status:has-text('Asked for arXiv {wanted}')")
    assert page.get_by_role("button", name="Ask for it").count() == 0
    assert list(export(service, context)["requested"]) == [wanted]
    page.close()


def test_a_saved_paper_dismissed_in_for_you_is_a_card_in_saved(
    browser: tuple[Any, str], service: Service
) -> None:
    """Save a paper, then dismiss it in For you: the Saved tab lists it as a saved card,
    not as a stray "Dismissed. Undo" row (the dismissal is For you's business)."""
    context, extension_id = browser
    page = open_popup(context, extension_id)
    paper = ids_of(page)[1]
    card = page.locator(f'article.paper[data-paper-id="{paper}"]')
    card.locator('[data-action="save"]').click()
    card.locator('[data-action="dismiss"]').click()
    assert page.locator(f'.dismissed[data-paper-id="{paper}"]').count() == 1

    def applied() -> bool:
        record = export(service, context)["papers"].get(paper, {})
        return bool(record.get("saved") and record.get("dismissed"))

    assert wait_for(applied)
    page.get_by_role("tab", name="Saved").click()
    page.wait_for_selector(f'article.paper[data-paper-id="{paper}"]')
    assert page.locator(".dismissed").count() == 0
    assert pressed(page, paper, "save") == "true"
    page.close()


def test_the_popup_says_when_the_catalog_sync_is_failing(
    browser: tuple[Any, str], service: Service
) -> None:
    context, extension_id = browser
    socket = Path(service.env["PAPERFEED_DATA_DIR"]) / "redis.sock"
    state = redis.Redis(unix_socket_path=str(socket))
    page = open_popup(context, extension_id)
    assert page.locator("#notice").is_hidden()
    page.close()
    state.hset(
        "pf:sync:state",
        mapping={"hf:failures": 4, "hf:last_success": time.time() - 3 * 86_400},
    )
    try:
        page = open_popup(context, extension_id)
        page.wait_for_selector("#notice:not([hidden])")
        text = page.locator("#notice").inner_text()
        assert "catalog sync is failing" in text
        assert "Hugging Face" in text
        assert ": failing since " in text
        page.close()
    finally:
        state.hdel("pf:sync:state", "hf:failures", "hf:last_success")
        state.close()


def test_options_save_answers_beside_its_button_and_load_without_errors(
    browser: tuple[Any, str], service: Service
) -> None:
    """ "Saved." next to Save (it was ~1,190 px below it); no failed request when the
    page opens (GET /v1/me/digest was a 404 at each opening); "Unlink this browser"
    only for a browser linked by a code."""
    context, extension_id = browser
    ensure_install(context, extension_id)
    page = context.new_page()
    page.set_viewport_size({"width": 640, "height": 560})
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)))
    page.goto(f"chrome-extension://{extension_id}/options/options.html")
    page.wait_for_selector("#digest-state:has-text('Not subscribed')")
    assert wait_for(lambda: any("/v1/me/pairing" in url for url, _ in answers))
    assert [a for a in answers if a[1] >= 400] == []
    assert any("/v1/me/digest" in url and status == 200 for url, status in answers)
    assert page.locator("#pairing-unlink").is_hidden()  # this browser is its reader's first
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#settings-state:has-text('Saved.')")
    button = page.locator("#settings button[type=submit]").bounding_box()
    answer = page.locator("#settings-state").bounding_box()
    assert button is not None
    assert answer is not None
    assert abs(answer["y"] - button["y"]) < 20, (button, answer)
    assert answer["x"] > button["x"]
    # An address typed without its scheme is the service's at http:// (it was a page
    # error: "Invalid value for origin pattern null/*", and nothing saved).
    before = token(context)
    page.fill("#backend", service.url.removeprefix("http://"))
    page.get_by_role("button", name="Test connection").click()
    page.wait_for_selector("#connection[data-ok='true']")
    assert f"answers at {service.url}" in page.locator("#connection").inner_text()
    page.evaluate("document.getElementById('settings-state').textContent = ''")
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#settings-state:has-text('Saved.')")
    assert page.locator("#backend").input_value() == service.url
    assert storage(context, "backendUrl") == service.url
    assert storage(context, "token") == before  # the same service: the same install
    page.fill("#backend", "ftp://example.org")
    page.click("#settings button[type=submit]")
    page.wait_for_selector("#settings-state[data-ok='false']:has-text('not a web address')")
    assert storage(context, "backendUrl") == service.url
    page.close()


def test_the_api_documentation_renders_offline(browser: tuple[Any, str], service: Service) -> None:
    """Swagger UI and ReDoc load every script from the service (they came from CDNs and
    were blank offline): with every other host refused, both render the api."""
    context, _ = browser
    page = context.new_page()
    refused: list[str] = []

    def only_the_service(route: Any) -> None:
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.goto(f"{service.url}/schema/swagger")
    page.wait_for_selector(".swagger-ui .info .title:has-text('paperfeed')")
    page.wait_for_selector(".swagger-ui .opblock-summary-path:has-text('/v1/trending')")
    page.goto(f"{service.url}/schema/redoc")
    page.wait_for_selector("h1:has-text('paperfeed')")
    assert refused == []
    page.close()


def test_the_queue_is_sent_when_the_service_worker_starts(
    browser: tuple[Any, str], service: Service, tmp_path: Path
) -> None:
    """Events queued while the service was down are sent as soon as the browser starts
    again (the service worker's start), not a minute later at the alarm, and whatever
    the backoff said (the service may have come back meanwhile). A browser of its own,
    started twice on one profile."""
    playwright = RUNNING["playwright"]
    profile = tmp_path / "profile"
    args = [
        f"--disable-extensions-except={EXTENSION}",
        f"--load-extension={EXTENSION}",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
    ]

    def launch() -> tuple[Any, Any]:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=args
        )
        worker = context.service_workers[0] if context.service_workers else None
        if worker is None:
            worker = context.wait_for_event("serviceworker", timeout=15_000)
        return context, worker

    def waiting(worker: Any) -> int:
        return len(worker.evaluate("chrome.storage.local.get('queue')").get("queue") or [])

    context, worker = launch()
    worker.evaluate(f"chrome.storage.local.set({{backendUrl: {service.url!r}}})")
    extension_id = worker.url.split("/")[2]
    open_popup(context, extension_id).close()  # registered, with a feed
    assert wait_for(lambda: worker.evaluate("chrome.storage.local.get('token')").get("token"))
    assert service.stop() == 0
    queued = [
        {"event_id": f"offline-{n}", "type": "save", "paper_id": pid, "ts": time.time()}
        for n, pid in enumerate(["2312.17001", "2312.17002", "2312.17003"])
    ]
    # Waiting for its backoff: the next try half an hour away.
    later = {"failures": 9, "nextAttemptAt": time.time() * 1000 + 30 * 60_000}
    worker.evaluate(
        "([queue, state]) => chrome.storage.local.set({queue, queueState: state})",
        [queued, later],
    )
    context.close()
    service.start()
    context, worker = launch()
    try:
        started = time.monotonic()
        assert wait_for(lambda: waiting(worker) == 0, timeout=30), waiting(worker)
        assert time.monotonic() - started < 30  # well before the minute's alarm
    finally:
        context.close()
    worker_of(browser[0]).evaluate(f"chrome.storage.local.set({{backendUrl: {service.url!r}}})")
