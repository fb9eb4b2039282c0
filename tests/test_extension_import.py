"""The options page's "Bring your library" box (issue 26) in a real headless Chromium,
against ``paperfeed serve``: pasted arXiv ids and a chosen BibTeX file become the
reader's saves, and the page says what matched, what waits and which lines were not
read. The fixtures are test_extension's (a service with six catalog papers, the
extension loaded)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES
from tests.test_embedded import Service
from tests.test_extension import (  # noqa: F401 (fixtures)
    SCREENSHOTS,
    browser,
    ensure_install,
    ext_mailbox,
    service,
    token,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DAILY = json.loads((FIXTURES / "daily_papers.json").read_text())[:6]
IDS = [e["paper"]["id"] for e in DAILY]
TITLES = {e["paper"]["id"]: " ".join(e["paper"]["title"].split()) for e in DAILY}


def saved(svc: Service, context: Any) -> set[str]:
    response = httpx.get(
        f"{svc.url}/v1/me/library",
        params={"kind": "saved"},
        headers={"Authorization": f"Bearer {token(context)}"},
    )
    assert response.status_code == 200, response.text
    return {item["paper"]["id"] for item in response.json()["items"]}


def test_the_options_page_imports_pasted_ids_and_a_bibtex_file(
    browser: tuple[Any, str],  # noqa: F811
    service: Service,  # noqa: F811
) -> None:
    context, extension_id = browser
    ensure_install(context, extension_id)
    page = context.new_page()
    page.set_viewport_size({"width": 760, "height": 900})
    page.goto(f"chrome-extension://{extension_id}/options/options.html")
    state = page.locator("#import-state")

    # Nothing chosen: said at once, nothing sent.
    page.click("#import button[type=submit]")
    assert "Choose a file" in state.inner_text()

    pasted = "\n".join(
        [f"{IDS[0]}v2", f"https://arxiv.org/abs/{IDS[1]}", "2501.99999", "not an id"]
    )
    page.fill("#import-text", pasted)
    page.click("#import button[type=submit]")
    page.wait_for_selector("#import-state:has-text('Imported')")
    assert state.inner_text() == (
        "Imported: 3 papers saved to your library. Your feed follows them from now on."
    )
    assert page.locator("#import-details").inner_text() == (
        "3 entries read as a list of arXiv ids: 2 matched, "
        "1 waiting for arXiv to describe it, 1 unreadable."
    )
    assert page.locator("#import-problems li").all_inner_texts() == [
        "Line 4 (not an id): no arXiv id or URL in this line"
    ]
    assert page.locator("#import-text").input_value() == ""  # done with
    assert {IDS[0], IDS[1], "2501.99999"} <= saved(service, context)

    # A BibTeX file: one paper by its title alone, one imported already, a broken entry.
    bib = (
        f"@article{{lecun,\n  title = {{{TITLES[IDS[3]]}}},\n  year = 2023,\n}}\n\n"
        f"@misc{{again,\n  title = {{x}},\n  eprint = {{{IDS[0]}}},\n}}\n\n"
        "@article{broken,\n  title = {never closed,\n\n"
        f"@misc{{gemini, title = {{{TITLES[IDS[4]]}}}, journal = {{arXiv:{IDS[4]}}}}}\n"
    )
    page.set_input_files(
        "#import-file",
        files=[{"name": "library.bib", "mimeType": "application/x-bibtex", "buffer": bib.encode()}],
    )
    page.select_option("#import-format", "bibtex")
    page.click("#import button[type=submit]")
    page.wait_for_selector("#import-state:has-text('Imported: 2 papers')")
    details = page.locator("#import-details").inner_text()
    assert details.startswith("3 entries read as BibTeX: 3 matched, 1 unreadable."), details
    assert "1 already in your library" in details
    (problem,) = page.locator("#import-problems li").all_inner_texts()
    assert problem.startswith("Line 11 (broken): could not be read"), problem
    assert wait_for(lambda: {IDS[3], IDS[4]} <= saved(service, context))
    assert page.locator("#import-file").input_value() == ""

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("section[aria-labelledby=import-heading]").screenshot(
        path=str(SCREENSHOTS / "options-import.png")
    )

    # The same file again changes nothing, and says so.
    page.set_input_files(
        "#import-file",
        files=[{"name": "library.bib", "mimeType": "text/plain", "buffer": bib.encode()}],
    )
    page.click("#import button[type=submit]")
    page.wait_for_selector("#import-state:has-text('Nothing new')")
    assert state.inner_text() == "Nothing new: 3 papers of this file are in your library already."
    page.close()
