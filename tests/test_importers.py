"""The three catalog formats, on real files."""

from __future__ import annotations

import json

import pytest

from paperfeed.catalog import importers
from paperfeed.catalog.papers import arxiv_id, normalize_paper_id, slugify
from tests.conftest import FIXTURES


def test_seed_page_has_136_papers_with_titles_abstracts_and_links() -> None:
    papers = importers.parse_page(importers.seed_page_text())
    assert len(papers) == 136
    assert len({p.id for p in papers}) == 136
    first = papers[0]
    assert first.title == "Streaming Deep Reinforcement Learning Finally Works"
    assert first.id == "streaming-deep-reinforcement-learning-finally-works"
    assert first.abstract.startswith("Natural intelligence processes experience")
    assert all(p.abstract and p.title and p.source == "seed" for p in papers)
    by_id = {p.id: p for p in papers}
    autodiffusion = next(p for p in papers if p.title.startswith("AutoDiffusion"))
    # A trailing full stop belongs to the sentence, not to the URL.
    assert autodiffusion.code_url == "https://github.com/lilijiangg/AutoDiffusion"
    recipe = by_id[
        slugify("A Recipe for Scaling up Text-to-Video Generation with Text-free Videos")
    ]
    assert recipe.project_url == "https://tf-t2v.github.io/"
    assert sum(1 for p in papers if p.code_url) >= 40


def test_page_with_a_missing_abstract_is_refused() -> None:
    text = "Mar 13\n\nA title\n\nAn abstract.\n\nA lonely title\n"
    with pytest.raises(importers.ImportFormatError, match="paragraphs"):
        importers.parse_page(text)


def test_jsonl_set_keeps_arxiv_ids_and_upvotes() -> None:
    papers = importers.parse_file(FIXTURES / "hf-daily-papers.jsonl")
    assert len(papers) == 753
    larp = papers[0]
    assert larp.id == "2312.17653"
    assert larp.title.startswith("LARP")
    assert larp.upvotes == 29
    assert larp.published == "2023-12-24T10:08:59Z"
    assert larp.url == "https://arxiv.org/abs/2312.17653"
    assert larp.pdf_url == "https://arxiv.org/pdf/2312.17653"
    assert larp.project_url == "https://miao-ai-lab.github.io/LARP/"
    assert "\n" not in larp.abstract


def test_daily_papers_json_shape() -> None:
    data = (FIXTURES / "daily_papers.json").read_bytes()
    assert importers.detect_format(data) == "daily_papers"
    papers = importers.parse(data)
    raw = json.loads(data)
    assert len(papers) == len(raw)
    assert papers[0].id == raw[0]["paper"]["id"]
    assert papers[0].authors == [a["name"] for a in raw[0]["paper"]["authors"]]
    assert papers[0].upvotes == raw[0]["paper"]["upvotes"]
    assert papers[0].abstract.startswith("Language agents")


def test_jsonl_errors_name_the_line() -> None:
    lines = [b'{"id": "1234.5678", "title": "ok"}', b'{"id": 5, "title": "bad"}']
    with pytest.raises(importers.ImportFormatError, match="line 2"):
        importers.parse_jsonl(lines)
    with pytest.raises(importers.ImportFormatError, match="id or a title"):
        importers.parse_jsonl([b'{"abstract": "nothing else"}'])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2401.01234", "2401.01234"),
        ("2401.01234v3", "2401.01234"),
        ("https://arxiv.org/abs/2401.01234v2", "2401.01234"),
        ("https://arxiv.org/pdf/2401.01234.pdf", "2401.01234"),
        ("https://arxiv.org/html/2401.01234v1", "2401.01234"),
        ("some-slug", None),
    ],
)
def test_arxiv_ids(raw: str, expected: str | None) -> None:
    assert arxiv_id(raw) == expected


def test_ids_are_stable() -> None:
    assert normalize_paper_id("2401.01234v9") == "2401.01234"
    assert normalize_paper_id("p42") == "p42"
    assert slugify("Ünïcode: Title — With *Symbols*!") == "unicode-title-with-symbols"
    assert len(slugify("word " * 100)) <= 80


def test_configuration_doc_lists_every_setting() -> None:
    from pathlib import Path

    from scripts.settings_doc import render

    doc = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == render(), "regenerate: python scripts/settings_doc.py"


def test_only_web_links_are_kept_at_import() -> None:
    """A catalog link ends up in an href of the popup and of the e-mail digest."""
    record = importers.PaperRecord(
        id="2401.00001",
        title="Links",
        url="javascript:alert(1)",
        pdf_url="data:text/html,<script>alert(1)</script>",
        code_url="//github.com/no-scheme",
        project_url="HTTPS://example.org/project",
    )
    paper = importers.paper_from_record(record, "admin")
    assert paper.url == "https://arxiv.org/abs/2401.00001"  # built from the id instead
    assert paper.pdf_url == "https://arxiv.org/pdf/2401.00001"
    assert paper.code_url is None
    assert paper.project_url == "HTTPS://example.org/project"
    slug_only = importers.paper_from_record(
        importers.PaperRecord(title="No id", url="ftp://example.org/paper"), "admin"
    )
    assert slug_only.url is None


def test_the_demo_page_papers_get_the_pages_date() -> None:
    """The page lists the papers of its date: they are not "new today" forever."""
    from datetime import date

    papers = importers.parse_page(importers.seed_page_text(), today=date(2026, 12, 1))
    assert {p.published for p in papers} == {"2026-03-13"}
    early = importers.parse_page(importers.seed_page_text(), today=date(2026, 3, 1))
    assert {p.published for p in early} == {"2025-03-13"}  # the latest Mar 13 before
    assert importers.page_date("Feb 29", date(2026, 12, 1)) == "2024-02-29"
    assert importers.page_date("Mar 13, 2025", date(2026, 12, 1)) == "2025-03-13"
    undated = importers.parse_page("A title\n\nAn abstract.\n")
    assert undated[0].published is None


def test_a_source_id_the_api_cannot_address_becomes_the_title_slug() -> None:
    for raw in ("cs/0112017", "an id with spaces", "x" * 200):
        paper = importers.paper_from_record(
            importers.PaperRecord(id=raw, title="A Paper About Things"), "import"
        )
        assert paper.id == "a-paper-about-things", raw
