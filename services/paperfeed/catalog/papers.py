"""The paper record and its stable id."""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from paperfeed.errors import NotFound, described

# New-style arXiv ids (2007+): YYMM.NNNN or YYMM.NNNNN, optional version.
ARXIV_NEW = re.compile(r"^(\d{4}\.\d{4,5})(v\d+)?$")
# Everything a paper id may be: an arXiv id, a slug, or a data set's own id. No "/",
# so that an id is one URL path segment (pre-2007 arXiv ids are not recognised).
PAPER_ID_PATTERN = described(
    r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
    "a paper id such as 2401.01234: letters, digits and . _ : - (at most 128)",
)
SLUG_MAX = 80

PaperId = Annotated[str, Meta(pattern=PAPER_ID_PATTERN, max_length=128)]


def no_such_paper(paper_id: str) -> NotFound:
    """The 404 of a paper the catalog lacks, repeating at most the 128 characters an id
    may have (a 10,000-character one came back whole)."""
    return NotFound(f"no paper {paper_id[:128]!r}")


class Paper(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A catalogued paper, as stored in Redis and returned by the api."""

    id: str
    title: str
    abstract: str = ""
    authors: list[str] = msgspec.field(default_factory=list)
    published: str | None = None
    """ISO 8601 date or time of publication, when known."""
    upvotes: int = 0
    """Upvotes imported from the source (Hugging Face), not paperfeed's own."""
    url: str | None = None
    pdf_url: str | None = None
    code_url: str | None = None
    project_url: str | None = None
    source: str = "import"
    """``seed``, ``import``, ``admin``, ``reported`` (admitted from extension reports), or
    the catalog sync's ``hf`` and ``arxiv``."""
    added_at: float = 0.0


def arxiv_id(value: str) -> str | None:
    """The version-less arXiv id in ``value`` (an id or an arxiv.org URL), else None."""
    value = value.strip()
    match = re.search(r"arxiv\.org/(?:abs|pdf|html)/([^?#\s]+?)(?:\.pdf)?/?(?:[?#]|$)", value)
    if match:
        value = match.group(1)
    found = ARXIV_NEW.match(value)
    return found.group(1) if found else None


def slugify(title: str) -> str:
    """A stable, readable id from a title: ascii, lower case, dashes, at most 80 chars."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    if len(slug) > SLUG_MAX:
        slug = slug[:SLUG_MAX].rsplit("-", 1)[0]
    return slug or "untitled"


def paper_id_for(raw_id: str | None, title: str) -> str:
    """The stable id: the arXiv id where known, the given id otherwise, else a title slug."""
    if raw_id:
        return arxiv_id(raw_id) or raw_id.strip()
    return slugify(title)


def normalize_paper_id(value: str) -> str:
    """Ids as clients send them: arXiv ids lose their version, others stay as they are."""
    return arxiv_id(value) or value


def arxiv_links(paper_id: str) -> tuple[str | None, str | None]:
    """Abstract and PDF URLs of an arXiv paper, or (None, None) for other ids."""
    if arxiv_id(paper_id) != paper_id:
        return None, None
    return f"https://arxiv.org/abs/{paper_id}", f"https://arxiv.org/pdf/{paper_id}"


def published_ts(paper: Paper) -> float | None:
    """Publication as unix time, or None when unknown or unreadable."""
    return _parse_time(paper.published) if paper.published else None


@functools.lru_cache(maxsize=65_536)
def _parse_time(value: str) -> float | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def clean_text(value: str, limit: int) -> str:
    """Whitespace collapsed, control characters dropped, cut to ``limit`` characters."""
    value = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
    return re.sub(r"\s+", " ", value).strip()[:limit]
