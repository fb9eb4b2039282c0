"""Search: papers matching the words of a query, ranked by BM25, then for a signed-in
reader blended with how well each match fits them and with trending.

The index is part of the catalog index (``CatalogIndex.search``), built in the api's
thread pool when the catalog changes, never per request: each paper's words (title
twice, abstract, authors twice: the English words of scikit-learn's analyzer, stop words
removed), counted into hashed columns (``BUCKETS``; no vocabulary to grow, so the rows of
unchanged papers are kept from the previous index), and transposed to CSC once so that a
query reads only its terms' postings.

Before the words: a paper reference (``paper_reference``: an arXiv id, with or without
version or an ``arXiv:`` prefix, an arxiv.org abstract, PDF or HTML URL, a Hugging Face
paper URL) finds that paper, and only it: a reference to a paper the catalog lacks finds
nothing (never papers that merely share the URL's words); another URL finds nothing
either. A query that is a paper's whole title puts that paper first; an author's full
name puts their papers first (newest first).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.catalog.papers import arxiv_id, slugify
from paperfeed.recsys.content import FloatArray, Tokens, tokenize, words_of

BUCKETS = 1 << 20
K1 = 1.2
B = 0.75
MATCHES = 200
"""Best text matches that a reader's profile and trending may reorder."""
INLINE_WORK = 300_000
"""A search touching at most this many array entries (papers plus the postings of its
words: about half a millisecond) runs on the event loop: handing it to a thread would
cost more than the work (measured in docs/benchmarks.md)."""
PERSONAL_WEIGHT = 0.5
TRENDING_WEIGHT = 0.2

IntArray = npt.NDArray[np.int64]


HF_PAPER_URL = re.compile(
    r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/papers/([^/?#\s]+)/?(?:[?#]\S*)?$",
    re.IGNORECASE,
)
ARXIV_PREFIX = re.compile(r"^arxiv:\s*", re.IGNORECASE)
URL = re.compile(r"^(?:https?://|www\.)\S+$|^(?:[a-z0-9-]+\.)+[a-z]{2,}/\S*$", re.IGNORECASE)


def paper_reference(query: str) -> str | None:
    """The arXiv id a query names (``2312.17681``, ``2312.17681v2``, ``arXiv:2312.17681``,
    ``https://arxiv.org/abs/2312.17681v1`` or ``/pdf/`` or ``/html/``,
    ``https://huggingface.co/papers/2312.17681``), else None."""
    value = query.strip()
    hf = HF_PAPER_URL.match(value)
    if hf:
        return arxiv_id(hf.group(1))
    return arxiv_id(ARXIV_PREFIX.sub("", value))


def is_url(query: str) -> bool:
    """The query is one web address (its words are no search)."""
    return bool(URL.match(query.strip()))


def search_text(title: str, abstract: str, authors: Sequence[str]) -> str:
    names = " ".join(authors)
    return f"{title}. {title}. {abstract} {names} {names}"


def normal_name(value: str) -> str:
    """Lower case, accents and punctuation gone, spaces collapsed."""
    ascii_value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", ascii_value.lower()).split())


def title_key(title: str) -> str | None:
    """A title's slug, or None when nothing of it survives (a title in a script the slug
    drops: it would collide with every other such title)."""
    slug = slugify(title)
    return None if slug == "untitled" else slug


def hashed_counts(tokens: Tokens) -> sparse.csr_matrix:
    """(len(tokens), BUCKETS) float32: how often each word (hashed) occurs in each text."""
    columns = np.fromiter(
        (zlib.crc32(word.encode()) % BUCKETS for word in tokens.words),
        dtype=np.int64,
        count=len(tokens.words),
    )
    counts = sparse.csr_matrix(
        (
            np.ones(len(tokens.ids), dtype=np.float32),
            (tokens.owners(), columns[tokens.ids] if len(columns) else tokens.ids),
        ),
        shape=(len(tokens), BUCKETS),
    )
    counts.sum_duplicates()
    return counts


class SearchIndex(NamedTuple):
    counts: sparse.csr_matrix
    """(n, BUCKETS) each paper's word counts (rows kept across rebuilds)."""
    postings: sparse.csc_matrix
    """The same, by column: a term's papers."""
    lengths: FloatArray
    average_length: float
    idf: FloatArray
    """(BUCKETS,) BM25 idf of each column."""
    by_title: dict[str, int]
    """Slug of each title -> the paper's position (the first of equal titles)."""
    by_author: dict[str, list[int]]
    """Normalised author name -> positions of their papers."""

    def nbytes(self) -> int:
        total = 0
        for matrix in (self.counts, self.postings):
            total += matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
        return total + self.lengths.nbytes + self.idf.nbytes + 100 * len(self.by_title)


def build_search(
    counts: sparse.csr_matrix, titles: Sequence[str], authors: Sequence[Sequence[str]]
) -> SearchIndex:
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    n = counts.shape[0]
    lengths = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
    postings = counts.tocsc()
    df = np.diff(postings.indptr).astype(np.float32)
    idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
    by_title: dict[str, int] = {}
    for position, title in enumerate(titles):
        if key := title_key(title):
            by_title.setdefault(key, position)
    by_author: dict[str, list[int]] = {}
    for position, names in enumerate(authors):
        for name in names:
            if key := normal_name(name):
                by_author.setdefault(key, []).append(position)
    return SearchIndex(
        counts=counts,
        postings=postings,
        lengths=lengths,
        average_length=float(lengths.mean()) if n else 1.0,
        idf=idf,
        by_title=by_title,
        by_author=by_author,
    )


def search_counts(
    titles: Sequence[str], abstracts: Sequence[str], authors: Sequence[Sequence[str]]
) -> sparse.csr_matrix:
    texts = [
        search_text(t, a, names) for t, a, names in zip(titles, abstracts, authors, strict=True)
    ]
    return hashed_counts(tokenize(texts))


def query_columns(query: str) -> list[int]:
    """The index columns of the query's words."""
    return sorted({zlib.crc32(word.encode()) % BUCKETS for word in words_of(query)})


def work(index: SearchIndex, columns: Sequence[int]) -> int:
    """Array entries a search for these columns touches (see ``INLINE_WORK``)."""
    indptr = index.postings.indptr
    postings = sum(int(indptr[c + 1] - indptr[c]) for c in columns)
    return int(index.counts.shape[0]) + 4 * postings


def bm25(index: SearchIndex, columns: Sequence[int]) -> FloatArray:
    """(n,) each paper's BM25 score for the query's words (``query_columns``; 0: no word
    matches)."""
    n = index.counts.shape[0]
    scores = np.zeros(n, dtype=np.float32)
    postings = index.postings
    for column in columns:
        start, end = postings.indptr[column], postings.indptr[column + 1]
        if start == end:
            continue
        papers = postings.indices[start:end]
        tf = postings.data[start:end]
        norm = K1 * (1 - B + B * index.lengths[papers] / index.average_length)
        scores[papers] += index.idf[column] * tf * (K1 + 1) / (tf + norm)
    return scores


class Found(NamedTuple):
    positions: IntArray
    scores: FloatArray


def find(
    index: SearchIndex,
    query: str,
    limit: int,
    positions_of: dict[str, int],
    dates: npt.NDArray[np.float64],
    personal: Callable[[IntArray], FloatArray] | None = None,
    trending: FloatArray | None = None,
    columns: Sequence[int] | None = None,
) -> Found:
    """The ``limit`` best papers for ``query``.

    ``personal`` gives how well papers (positions) fit the reader (None: anonymous),
    ``trending`` (n,) trending scores: both reorder the ``MATCHES`` best text matches,
    text relevance first (z-scores, weights ``PERSONAL_WEIGHT`` and ``TRENDING_WEIGHT``)."""
    first: list[int] = []
    wanted = paper_reference(query)
    if wanted is not None or is_url(query):
        found = positions_of.get(wanted) if wanted is not None else None
        if found is None:  # a paper the catalog lacks, or an address of no paper
            return Found(np.zeros(0, np.int64), np.zeros(0, np.float32))
        return Found(np.array([found], np.int64), np.array([1.0], np.float32))
    key = title_key(query)
    titled = index.by_title.get(key) if key else None
    if titled is not None:
        first.append(titled)
    author = normal_name(query)
    authored = index.by_author.get(author, []) if author else []
    first.extend(sorted(authored, key=lambda p: -dates[p]))
    scores = bm25(index, query_columns(query) if columns is None else columns)
    matches = np.flatnonzero(scores > 0)
    if len(matches) > MATCHES:
        matches = matches[np.argpartition(-scores[matches], MATCHES - 1)[:MATCHES]]
    blended = _z(scores[matches])
    if personal is not None and len(matches):
        blended = blended + PERSONAL_WEIGHT * _z(personal(matches))
    if trending is not None and len(trending) == len(dates) and len(matches):
        blended = blended + TRENDING_WEIGHT * _z(np.log1p(np.maximum(trending[matches], 0)))
    order = matches[np.argsort(-blended, kind="stable")]
    ranked = list(dict.fromkeys([*first, *order.tolist()]))[:limit]
    by_position = dict(zip(matches.tolist(), blended.tolist(), strict=True))
    top = max(by_position.values(), default=0.0) + 1.0
    return Found(
        np.array(ranked, dtype=np.int64),
        np.array([by_position.get(p, top) for p in ranked], dtype=np.float32),
    )


def _z(values: FloatArray) -> FloatArray:
    if len(values) < 2:
        return np.zeros(len(values), dtype=np.float32)
    spread = float(values.std())
    centred: FloatArray = ((values - values.mean()) / (spread if spread > 1e-9 else 1.0)).astype(
        np.float32
    )
    return centred
