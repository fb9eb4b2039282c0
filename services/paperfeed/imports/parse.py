"""A reader's library file read into entries: maintained parsers, and what each entry names.

Each format is read by a maintained parser: BibTeX by ``bibtexparser`` (its failed
blocks are the entries that could not be read), CSL-JSON by the standard ``json``
decoder (element by element, so that an entry's line is known), RIS by ``rispy`` (record
by record, ``TY`` to ``ER``, for the same reason), and a list of arXiv ids or URLs line
by line. What is kept of an entry is only what matching needs (``docs/import.md``):

- its arXiv id: a new-style id (``2411.01234``, version dropped) from an ``eprint``
  field, an arxiv.org or Hugging Face paper URL, an ``arXiv:`` prefix, arXiv's DOI
  (``10.48550/arXiv.<id>``); an old-style id (``hep-th/9901001``) is recognised too;
- its DOI (lower case, without ``https://doi.org/``);
- its title, cleaned (LaTeX in a BibTeX title decoded).

Nothing here touches Redis: ``parse`` is pure and runs in a worker thread.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import msgspec
import rispy  # type: ignore[import-untyped]
from bibtexparser import middlewares
from bibtexparser.entrypoint import parse_string
from bibtexparser.model import (
    DuplicateBlockKeyBlock,
    DuplicateFieldKeyBlock,
    ParsingFailedBlock,
)
from bibtexparser.model import (
    Entry as BibEntry,
)

from paperfeed.catalog.papers import clean_text

# bibtexparser logs a warning for each block it could not read: client input, which the
# answer reports; not the service's own fault to log.
logging.getLogger("bibtexparser").setLevel(logging.ERROR)

Format = Literal["bibtex", "csl-json", "ris", "arxiv-ids"]
FORMATS: Final[tuple[str, ...]] = get_args(Format)
TITLE_MAX = 500
"""Characters of a title kept for matching (the catalog cuts its titles there too)."""
LABEL_MAX = 80
"""Characters of an entry's name (key, id, text) repeated in a problem."""

NEW_ID = r"\d{4}\.\d{4,5}"
OLD_ID = r"[a-z]+(?:-[a-z]+)*(?:\.[a-z]{2})?/\d{7}"
_ID = rf"(?P<id>{NEW_ID}|{OLD_ID})(?:v\d+)?(?!\d)(?!\.\d)"
# An arXiv id where text says it is one: a paper URL (arxiv.org, Hugging Face), arXiv's
# DOI, or the "arXiv:" prefix ("arXiv preprint arXiv:2106.09685").
ARXIV_IN_TEXT = re.compile(
    r"(?:arxiv\.org/(?:abs|pdf|html|format)/|huggingface\.co/papers/|10\.48550/arxiv\."
    rf"|\barxiv(?:\s*[:.])?\s*){_ID}",
    re.IGNORECASE,
)
# A bare id (a field that holds one, a plain list).
ARXIV_BARE = re.compile(rf"(?<![\w./:-])(?:arxiv:\s*)?{_ID}(?![\w/])", re.IGNORECASE)
DOI = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>]+)", re.IGNORECASE)

# Fields that name the entry's own arXiv id or DOI (not those of papers it cites).
BIBTEX_ID_FIELDS = (
    "eprint", "arxivid", "arxiv", "url", "doi", "journal", "journaltitle", "note",
    "howpublished", "number", "volume",
)  # fmt: skip
BIBTEX_EPRINT_FIELDS = ("eprint", "arxivid", "arxiv")
CSL_ID_FIELDS = ("URL", "DOI", "number", "note", "archive_location", "container-title", "id")
RIS_ID_FIELDS = (
    "urls", "doi", "notes", "note", "journal_name", "secondary_title", "alternate_title1",
    "alternate_title2", "alternate_title3", "number", "accession_number", "id", "volume",
)  # fmt: skip


class Problem(msgspec.Struct, omit_defaults=True):
    """An entry or line the import could not use, and why."""

    line: int
    """The line it starts on (1 is the first)."""
    message: str
    entry: str | None = None
    """The entry's key or id (BibTeX key, CSL ``id``, RIS ``ID``), else its text."""


@dataclass
class Entry:
    """What matching needs of one entry."""

    line: int
    label: str
    arxiv: str | None = None
    """New-style arXiv id, version dropped."""
    old_arxiv: str | None = None
    """Old-style arXiv id (``hep-th/9901001``): recognised, never catalogued."""
    doi: str | None = None
    title: str | None = None


@dataclass
class Parsed:
    format: Format
    entries: list[Entry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# --- what an entry names ------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def arxiv_ids(values: Iterable[str], bare: bool = False) -> tuple[str | None, str | None]:
    """The first new-style and the first old-style arXiv id named in ``values`` (versions
    dropped); ``bare``: the values are ids themselves (an ``eprint`` field)."""
    new = old = None
    for value in values:
        found = ARXIV_BARE.fullmatch(value.strip()) if bare else None
        matches = [found] if found else ARXIV_IN_TEXT.finditer(value)
        for match in matches:
            if match is None:
                continue
            pid = match.group("id")
            if "/" in pid:
                old = old or _old_style(pid)
            else:
                new = new or pid
        if new:
            break
    return new, old


def _old_style(pid: str) -> str:
    archive, number = pid.split("/")
    name, dot, subject = archive.partition(".")
    return f"{name.lower()}{dot}{subject.upper()}/{number}"


def doi_in(values: Iterable[str]) -> str | None:
    for value in values:
        match = DOI.search(value)
        if match:
            return match.group(1).rstrip(".,;)]}").lower()
    return None


def _label(value: str | None, fallback: str) -> str:
    text = clean_text(value or "", LABEL_MAX)
    return text or fallback


def _title(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return clean_text(value, TITLE_MAX) or None


def _entry(line: int, label: str, id_values: list[str], eprints: list[str], title: Any) -> Entry:
    new, old = arxiv_ids(eprints, bare=True)
    if new is None:
        in_text, old_in_text = arxiv_ids(id_values)
        new, old = in_text, old or old_in_text
    return Entry(
        line=line, label=label, arxiv=new, old_arxiv=old, doi=doi_in(id_values), title=title
    )


# --- the formats ----------------------------------------------------------------------------


def detect_format(text: str) -> Format:
    """The format of a body sent without ``format``: JSON is CSL-JSON, ``@type{`` lines
    BibTeX, a ``TY  -`` line RIS, anything else a list of arXiv ids (whose lines naming
    none are its problems)."""
    start = text.lstrip()
    if start[:1] in ("[", "{"):
        return "csl-json"
    if re.search(r"^[ \t]*@[ \t]*[A-Za-z]+[ \t]*[{(]", text, re.MULTILINE):
        return "bibtex"
    if re.search(r"^TY  ?-", text, re.MULTILINE):
        return "ris"
    return "arxiv-ids"


def parse(text: str, fmt: Format | None = None) -> Parsed:
    """The entries of ``text`` (in ``fmt``, detected when None) and its problems."""
    fmt = fmt or detect_format(text)
    reader = {
        "bibtex": parse_bibtex,
        "csl-json": parse_csl_json,
        "ris": parse_ris,
        "arxiv-ids": parse_arxiv_ids,
    }[fmt]
    return reader(text)


def parse_bibtex(text: str) -> Parsed:
    parsed = Parsed("bibtex")
    # String references are not resolved (an entry's ids and title do not need them) and
    # LaTeX is decoded in titles only (decoding every field costs seconds a large file).
    library = parse_string(text, parse_stack=[middlewares.RemoveEnclosingMiddleware()])
    for block in library.blocks:
        if isinstance(block, DuplicateBlockKeyBlock | DuplicateFieldKeyBlock):
            kept = block.ignore_error_block
            if isinstance(kept, BibEntry):
                parsed.entries.append(_bibtex_entry(kept))
                continue
        if isinstance(block, BibEntry):
            parsed.entries.append(_bibtex_entry(block))
        elif isinstance(block, ParsingFailedBlock):
            parsed.problems.append(_bibtex_problem(block))
    parsed.entries.sort(key=lambda e: e.line)
    parsed.problems.sort(key=lambda p: p.line)
    return parsed


def _bibtex_entry(entry: BibEntry) -> Entry:
    fields = {f.key.lower(): f.value for f in entry.fields if isinstance(f.value, str)}
    eprints = [fields[k] for k in BIBTEX_EPRINT_FIELDS if k in fields]
    prefix = (fields.get("archiveprefix") or fields.get("eprinttype") or "arxiv").lower()
    return _entry(
        (entry.start_line or 0) + 1,
        _label(entry.key, f"@{entry.entry_type}"),
        [fields[k] for k in BIBTEX_ID_FIELDS if k in fields],
        eprints if prefix == "arxiv" else [],
        _title(latex_title(fields["title"])) if "title" in fields else None,
    )


def _bibtex_problem(block: ParsingFailedBlock) -> Problem:
    head = re.match(r"\s*@\s*([A-Za-z]+)\s*[{(]\s*([^,\s{}()]*)", block.raw or "")
    label = None
    if head:
        label = head.group(2) or f"@{head.group(1).lower()}"
    error = block.error
    reason = str(getattr(error, "abort_reason", "") or error).strip() or type(error).__name__
    return Problem(
        line=(block.start_line or 0) + 1,
        entry=_label(label, "") or None,
        message=f"could not be read: {reason}"[:300],
    )


_LATEX = None


def latex_title(value: str) -> str:
    """A BibTeX title as text: LaTeX (accents, commands, math) decoded by pylatexenc
    (bibtexparser's own dependency) when there is any, braces dropped."""
    global _LATEX
    value = value[: TITLE_MAX * 4]
    if "\\" in value or "$" in value:
        try:
            if _LATEX is None:
                from pylatexenc.latex2text import (  # type: ignore[import-untyped]
                    LatexNodes2Text,
                )

                _LATEX = LatexNodes2Text(math_mode="text", strict_latex_spaces=True)
            value = str(_LATEX.latex_to_text(value))
        except Exception:  # malformed LaTeX: its letters still match
            value = re.sub(r"\\[A-Za-z]+|\\.", "", value)
    return value.replace("{", "").replace("}", "")


def parse_csl_json(text: str) -> Parsed:
    """A CSL-JSON array (Zotero's export), or one item. A document that stops being JSON
    part-way keeps the entries before the fault; the fault is a problem at its line."""
    parsed = Parsed("csl-json")
    decoder = json.JSONDecoder()
    lines = _LineIndex(text)
    position = _skip_space(text, 0)
    if text.startswith("{", position):
        items: Iterable[tuple[int, Any]] = _one_item(decoder, text, position, lines, parsed)
    elif text.startswith("[", position):
        items = _array_items(decoder, text, position + 1, lines, parsed)
    else:
        parsed.problems.append(
            Problem(line=lines.line(position), message="not CSL-JSON: an array of items expected")
        )
        return parsed
    for number, (offset, item) in enumerate(items, start=1):
        line = lines.line(offset)
        if not isinstance(item, dict):
            parsed.problems.append(
                Problem(line=line, entry=f"#{number}", message="not an item (a JSON object)")
            )
            continue
        label = _label(next(_strings(item.get("id")), None), f"#{number}")
        ids = [s for key in CSL_ID_FIELDS for s in _strings(item.get(key))]
        title = item.get("title")
        if title is not None and not isinstance(title, str):
            parsed.problems.append(Problem(line=line, entry=label, message="title: not a string"))
            continue
        parsed.entries.append(_entry(line, label, ids, [], _title(title)))
    return parsed


def _one_item(
    decoder: json.JSONDecoder, text: str, at: int, lines: _LineIndex, parsed: Parsed
) -> Iterator[tuple[int, Any]]:
    try:
        item, end = decoder.raw_decode(text, at)
    except (ValueError, RecursionError) as exc:
        parsed.problems.append(_json_problem(exc, at, lines, "#1"))
        return
    yield at, item
    if _skip_space(text, end) < len(text):
        parsed.problems.append(
            Problem(line=lines.line(end), message="not read: text after the item")
        )


def _array_items(
    decoder: json.JSONDecoder, text: str, at: int, lines: _LineIndex, parsed: Parsed
) -> Iterator[tuple[int, Any]]:
    number = 0
    at = _skip_space(text, at)
    if text.startswith("]", at):
        return
    while True:
        number += 1
        try:
            item, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            parsed.problems.append(_json_problem(exc, at, lines, f"#{number}"))
            return
        yield at, item
        at = _skip_space(text, end)
        if text.startswith(",", at):
            at = _skip_space(text, at + 1)
        elif text.startswith("]", at):
            return
        else:
            parsed.problems.append(
                Problem(
                    line=lines.line(at),
                    entry=f"#{number + 1}",
                    message="not valid JSON: ',' or ']' expected; the rest was not read",
                )
            )
            return


def _json_problem(exc: Exception, at: int, lines: _LineIndex, label: str) -> Problem:
    if isinstance(exc, json.JSONDecodeError):
        where = exc.pos
        reason = exc.msg
    else:
        where, reason = at, "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    return Problem(
        line=lines.line(where),
        entry=label,
        message=f"not valid JSON ({reason}); the rest was not read",
    )


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


class _LineIndex:
    """Line numbers of offsets in a text (1 is the first line)."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


RIS_TAG = re.compile(r"^([A-Z][A-Z0-9])  ?-(?: |$)")


def parse_ris(text: str) -> Parsed:
    """RIS records, ``TY  -`` to ``ER  -``, each read by rispy on its own: a broken
    record is a problem at its first line and the others are read. A last record
    without its ``ER`` is read all the same."""
    parsed = Parsed("ris")
    record: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not record:
            if not line.strip():
                continue
            start = number
        record.append(line)
        tag = RIS_TAG.match(line)
        if tag and tag.group(1) == "ER":
            _ris_record(record, start, parsed)
            record = []
    if record:
        _ris_record([*record, "ER  - "], start, parsed)
    return parsed


def _ris_record(lines: list[str], start: int, parsed: Parsed) -> None:
    first = RIS_TAG.match(lines[0])
    if first is None or first.group(1) != "TY":
        parsed.problems.append(
            Problem(
                line=start,
                entry=_label(lines[0], "") or None,
                message="could not be read: an RIS record starts with 'TY  - '",
            )
        )
        return
    try:
        records = rispy.loads("\n".join(lines) + "\n")
    except Exception as exc:  # rispy's own errors: the record is unreadable
        parsed.problems.append(Problem(line=start, message=f"could not be read: {exc}"[:300]))
        return
    if len(records) != 1 or not isinstance(records[0], dict):
        parsed.problems.append(Problem(line=start, message="could not be read as one record"))
        return
    item: dict[str, Any] = records[0]
    title = next(
        (v for k in ("title", "primary_title", "translated_title") for v in _strings(item.get(k))),
        None,
    )
    label = _label(next(_strings(item.get("id")), None) or title, f"line {start}")
    ids = [s for key in RIS_ID_FIELDS for s in _strings(item.get(key))]
    parsed.entries.append(_entry(start, label, ids, [], _title(title)))


def parse_arxiv_ids(text: str) -> Parsed:
    """arXiv ids or URLs, any number a line (lines starting with ``#`` are comments);
    a line naming none is a problem."""
    parsed = Parsed("arxiv-ids")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        found = list(ARXIV_IN_TEXT.finditer(stripped)) or list(ARXIV_BARE.finditer(stripped))
        if not found:
            parsed.problems.append(
                Problem(
                    line=number,
                    entry=_label(stripped, "") or None,
                    message="no arXiv id or URL in this line",
                )
            )
            continue
        for match in found:
            pid = match.group("id")
            new, old = (None, _old_style(pid)) if "/" in pid else (pid, None)
            parsed.entries.append(
                Entry(line=number, label=_label(match.group(0), pid), arxiv=new, old_arxiv=old)
            )
    return parsed
