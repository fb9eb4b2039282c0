"""Readers for the three catalog formats; each returns ``Paper`` records, nothing else.

- ``page``: the text of the Hugging Face trending papers page (the demo catalog):
  header lines, then alternating title / abstract paragraphs.
- ``daily_papers``: the Hugging Face ``daily_papers`` JSON, a list of
  ``{"paper": {"id", "title", "summary", "authors": [{"name"}], "publishedAt",
  "upvotes"}, "publishedAt", "numComments", ...}``.
- ``jsonl``: one ``{"id", "title", "abstract", "authors", "published", "upvotes",
  "url"}`` record a line (only ``title`` is required).
- ``arxiv``: an arXiv API answer (Atom), read by ``parse_arxiv_atom`` (catalog sync).
- ``hf paper``: Hugging Face's ``/api/papers/{id}`` answer, one paper in the shape of
  ``daily_papers``' ``paper``, read by ``parse_hf_paper`` (the lookup of reported ids).

Links are kept only when they are http(s): a catalog link ends up in an ``href`` of the
popup and of the e-mail digest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element

import msgspec
from defusedxml import ElementTree as SafeElementTree
from defusedxml.common import DefusedXmlException
from msgspec import Meta

from paperfeed.catalog.papers import (
    PAPER_ID_PATTERN,
    Paper,
    arxiv_id,
    arxiv_links,
    clean_text,
    paper_id_for,
    slugify,
)

Format = Literal["page", "daily_papers", "jsonl"]

TITLE_MAX = 500
ABSTRACT_MAX = 20_000
URL_IN_TEXT = re.compile(r"https?://[^\s<>\"')\]]+")
# The page's header ends with the date line ("Mar 13").
DATE_LINE = re.compile(
    r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,2}(, \d{4})?$"
)
PAGE_HEADER_LINES = {
    "new",
    "get trending papers in your email inbox!",
    "subscribe",
    "byak and the research community",
}


class ImportFormatError(ValueError):
    """The input is not in any catalog format; the message says where it went wrong."""


class PaperRecord(msgspec.Struct, kw_only=True):
    """One paper in the JSON-lines shape (also the body of ``POST /v1/admin/papers``)."""

    id: Annotated[str, Meta(max_length=128)] | None = None
    title: Annotated[str, Meta(max_length=TITLE_MAX)] = ""
    abstract: Annotated[str, Meta(max_length=ABSTRACT_MAX)] = ""
    authors: Annotated[list[Annotated[str, Meta(max_length=300)]], Meta(max_length=5_000)] = []
    published: Annotated[str, Meta(max_length=40)] | None = None
    upvotes: Annotated[int, Meta(ge=0)] = 0
    url: Annotated[str, Meta(max_length=2000)] | None = None
    pdf_url: Annotated[str, Meta(max_length=2000)] | None = None
    code_url: Annotated[str, Meta(max_length=2000)] | None = None
    project_url: Annotated[str, Meta(max_length=2000)] | None = None


class _DailyAuthor(msgspec.Struct):
    name: str = ""


class _DailyPaper(msgspec.Struct):
    id: str
    title: str
    summary: str = ""
    authors: list[_DailyAuthor] = []
    publishedAt: str | None = None
    upvotes: int = 0


class _DailyEntry(msgspec.Struct):
    paper: _DailyPaper
    publishedAt: str | None = None


def links_in(text: str) -> tuple[str | None, str | None]:
    """(code URL, project URL) mentioned in an abstract: GitHub/GitLab/HF is code."""
    code = project = None
    for raw in URL_IN_TEXT.findall(text):
        url = raw.rstrip(".,;:")
        if re.match(r"https?://(www\.)?(github\.com|gitlab\.com|huggingface\.co)/", url):
            code = code or url
        else:
            project = project or url
    return code, project


def web_url(value: str | None) -> str | None:
    """``value`` when it is an http(s) URL with a host, else None (``javascript:``,
    ``data:``, relative paths and the like are dropped)."""
    if not value:
        return None
    value = value.strip()
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def paper_from_record(record: PaperRecord, source: str) -> Paper:
    """A catalog paper from a record; raises ``ImportFormatError`` without id and title."""
    title = clean_text(record.title, TITLE_MAX)
    if not title and not (record.id and record.id.strip()):
        raise ImportFormatError("a paper needs an id or a title")
    abstract = clean_text(record.abstract, ABSTRACT_MAX)
    url = web_url(record.url)
    raw_id = record.id or (arxiv_id(url) if url else None)
    paper_id = paper_id_for(raw_id, title)
    if not re.fullmatch(PAPER_ID_PATTERN, paper_id):
        # A source's id the api could not address (a "/", spaces, too long): the title's.
        paper_id = slugify(title) if title else slugify(paper_id)
    abs_url, pdf_url = arxiv_links(paper_id)
    code, project = links_in(abstract)
    return Paper(
        id=paper_id,
        title=title,
        abstract=abstract,
        authors=[clean_text(a, 200) for a in record.authors if a.strip()],
        published=record.published,
        upvotes=record.upvotes,
        url=web_url(record.url) or abs_url,
        pdf_url=web_url(record.pdf_url) or pdf_url,
        code_url=web_url(record.code_url) or code,
        project_url=web_url(record.project_url) or project,
        source=source,
    )


def parse_page(text: str, today: date | None = None) -> list[Paper]:
    """Papers of the trending page text, in page order (the page's ranking).

    The page's header ends with its date ("Mar 13", or "Mar 13, 2025"): every paper
    gets it as its date (the page lists the day's papers), the year being the latest at
    or before ``today`` (default: today, UTC) when the line has none. Without a date
    line the papers have no date (their import time stands in)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    start = 0
    listed: str | None = None
    for index, paragraph in enumerate(paragraphs[:12]):
        if DATE_LINE.match(paragraph):
            listed = page_date(paragraph, today or datetime.now(UTC).date())
            start = index + 1
        elif paragraph.lower() in PAGE_HEADER_LINES:
            start = index + 1
    body = paragraphs[start:]
    if len(body) % 2:
        raise ImportFormatError(
            f"page text: {len(body)} paragraphs after the header, expected title/abstract pairs"
        )
    return [
        paper_from_record(PaperRecord(title=title, abstract=abstract, published=listed), "seed")
        for title, abstract in zip(body[::2], body[1::2], strict=True)
    ]


def page_date(line: str, today: date) -> str | None:
    """ "Mar 13" -> the latest March 13 at or before ``today``; "Mar 13, 2025" as is."""
    for pattern in ("%b %d, %Y", "%B %d, %Y"):
        try:
            return datetime.strptime(line, pattern).date().isoformat()
        except ValueError:
            continue
    for pattern in ("%b %d %Y", "%B %d %Y"):
        try:
            parsed = datetime.strptime(f"{line} 2000", pattern)  # a leap year: Feb 29 reads
        except ValueError:
            continue
        for year in range(today.year, today.year - 5, -1):
            try:
                candidate = parsed.replace(year=year).date()
            except ValueError:  # February 29 of a year without one
                continue
            if candidate <= today:
                return candidate.isoformat()
    return None


def parse_daily_papers(data: bytes) -> list[Paper]:
    try:
        entries = msgspec.json.decode(data, type=list[_DailyEntry])
    except msgspec.ValidationError as exc:
        raise ImportFormatError(f"daily_papers JSON: {exc}") from exc
    return [_daily_paper(entry.paper, entry.publishedAt, "import") for entry in entries]


def parse_hf_paper(data: bytes) -> Paper:
    """The paper of a Hugging Face ``/api/papers/{id}`` answer (its text is Hugging
    Face's, ``source`` ``hf``); raises ``ImportFormatError`` when it is not one."""
    try:
        paper = msgspec.json.decode(data, type=_DailyPaper)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ImportFormatError(f"Hugging Face paper JSON: {exc}") from exc
    return _daily_paper(paper, None, "hf")


def _daily_paper(p: _DailyPaper, listed_at: str | None, source: str) -> Paper:
    record = PaperRecord(
        id=p.id,
        title=p.title,
        abstract=p.summary,
        authors=[a.name for a in p.authors],
        published=p.publishedAt or listed_at,
        upvotes=max(p.upvotes, 0),
    )
    return paper_from_record(record, source)


ATOM = "{http://www.w3.org/2005/Atom}"


class ArxivError(ImportFormatError):
    """The arXiv API answered with its error entry (a bad query, for one)."""


def parse_arxiv_atom(data: bytes) -> list[Paper]:
    """Papers of an arXiv API answer (Atom), newest first as listed.

    An entry is hostile input: the document is parsed by defusedxml with no DTD allowed
    (no entity of any kind is expanded, nothing external is fetched). Entries whose id is
    not a new-style arXiv id (pre-2007 ids) are left out; arXiv's error entry raises
    ``ArxivError``."""
    try:
        root = SafeElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DefusedXmlException, SyntaxError, ValueError) as exc:
        raise ImportFormatError(f"arXiv Atom: {type(exc).__name__}: {exc}") from exc
    if root.tag != f"{ATOM}feed":
        raise ImportFormatError(f"arXiv Atom: the document is a {root.tag!r}, not an Atom feed")
    papers = []
    for entry in root.iter(f"{ATOM}entry"):
        raw_id = _text(entry, "id")
        if "/api/errors" in raw_id:
            raise ArxivError(f"arXiv API error: {clean_text(_text(entry, 'summary'), 300)}")
        found = arxiv_id(raw_id)
        if found is None:
            continue
        record = PaperRecord(
            id=found,
            title=_text(entry, "title")[:TITLE_MAX],
            abstract=_text(entry, "summary")[:ABSTRACT_MAX],
            authors=[
                name[:300]
                for author in entry.iter(f"{ATOM}author")
                if (name := _text(author, "name"))
            ][:5_000],
            published=_text(entry, "published")[:40] or None,
        )
        papers.append(paper_from_record(record, "arxiv"))
    return papers


def _text(element: Element, name: str) -> str:
    found = element.find(f"{ATOM}{name}")
    return "".join(found.itertext()).strip() if found is not None else ""


def parse_jsonl(lines: Iterable[bytes | str]) -> list[Paper]:
    decoder = msgspec.json.Decoder(PaperRecord)
    papers = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            papers.append(paper_from_record(decoder.decode(line), "import"))
        except (msgspec.DecodeError, ImportFormatError) as exc:
            raise ImportFormatError(f"line {number}: {exc}") from exc
    return papers


def detect_format(data: bytes) -> Format:
    head = data.lstrip()[:1]
    if head == b"[":
        return "daily_papers"
    if head == b"{":
        return "jsonl"
    return "page"


def parse(data: bytes, fmt: Format | None = None) -> list[Paper]:
    """Papers in ``data``, in any of the three formats (detected unless given)."""
    fmt = fmt or detect_format(data)
    if fmt == "daily_papers":
        return parse_daily_papers(data)
    if fmt == "jsonl":
        return parse_jsonl(data.splitlines())
    return parse_page(data.decode("utf-8"))


def parse_file(path: Path, fmt: Format | None = None) -> list[Paper]:
    return parse(path.read_bytes(), fmt)


def seed_page_text() -> str:
    """The demo catalog shipped with the package (a Hugging Face trending page)."""
    return (
        resources.files("paperfeed.catalog")
        .joinpath("data/trending-papers-page.txt")
        .read_text(encoding="utf-8")
    )
