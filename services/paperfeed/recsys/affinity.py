"""A reader's affinity to a paper's authors and topic: the signal that follows feed.

A follow is an interaction with an author or a topic, so the signal is one the trainer
can measure on any reading history, and learn the weight of like the blend's others
(``training.learn``); at serving, a reader's follows feed the same signal as papers of
theirs would. For a reader and a paper::

    affinity = log1p(authors) + topic_share

- ``authors``: for each author of the paper, the reader's liked papers by that author
  (the same person by ``authors.same_author``: "Y. LeCun" is "Yann LeCun"), summed;
  each followed author who is one of the paper's counts ``FOLLOW_PAPERS`` papers more;
- ``topic_share``: the share of the reader's liked papers in the paper's topic
  (``recsys.topics``; 0 for a paper without one), a followed topic counting as
  ``FOLLOW_PAPERS`` liked papers in it.

The log keeps one prolific author from drowning the rest; the share makes the topic
part bounded (0 to 1) whatever the history's length. Both pipelines of the feed
(``feed.COMPILED``, ``feed.REFERENCE``) compute it with this one code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.authors import AuthorName, author_name, same_author
from paperfeed.recsys.content import row_entries

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

FOLLOW_PAPERS = 5.0
"""Liked papers a follow counts as: a reader who asked for an author says more than one
who read one of theirs; 5 puts a followed author above one of whom they read four
papers (log1p(5) = 1.8 against 1.6)."""


class Affinity(NamedTuple):
    """The papers' authors and topics (the columns of a matrix, or a catalog's
    positions): what the signal is computed from."""

    papers: sparse.csr_matrix
    """(n_papers, n_names) float32: 1 where a paper has an author written as that name
    (names normalised, ``authors.author_name``)."""
    same: sparse.csr_matrix
    """(n_names, n_names) float32: 1 where two names are the same author."""
    names: list[AuthorName]
    by_key: dict[str, list[int]]
    """Each key's names (columns of ``papers``)."""
    topic_of: IntArray
    """(n_papers,) each paper's topic (-1: none)."""
    n_topics: int

    @property
    def has_authors(self) -> bool:
        """Whether any two papers share an author: else the author part is 0 for all."""
        return bool(self.papers.nnz) and bool((np.diff(self.papers.tocsc().indptr) >= 2).any())

    def nbytes(self) -> int:
        matrices = (self.papers, self.same)
        total = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in matrices)
        return int(total + self.topic_of.nbytes + 60 * len(self.names))


def affinity_data(authors: Sequence[Sequence[str]], topic_of: IntArray, n_topics: int) -> Affinity:
    """The ``Affinity`` of papers whose author lists are ``authors`` (as the catalog
    writes them) and topics ``topic_of``."""
    # Each distinct spelling normalised once (a catalog writes an author alike on most
    # of their papers), then one vectorised pass over the (paper, author) pairs.
    column: dict[AuthorName, int] = {}
    col_of: dict[str, int] = {}
    for raw in dict.fromkeys(raw for written in authors for raw in written):
        name = author_name(raw)
        if name is not None:
            col_of[raw] = column.setdefault(name, len(column))
    counts = np.fromiter((len(written) for written in authors), np.int64, len(authors))
    owners = np.repeat(np.arange(len(authors), dtype=np.int64), counts)
    cols = np.fromiter(
        (col_of.get(raw, -1) for written in authors for raw in written),
        np.int64,
        int(counts.sum()),
    )
    known = cols >= 0
    rows = owners[known]
    cols = cols[known]
    names = list(column)
    by_key: dict[str, list[int]] = {}
    for col, name in enumerate(names):
        by_key.setdefault(name.key, []).append(col)
    left: list[int] = []
    right: list[int] = []
    for members in by_key.values():
        for a in members:
            for b in members:
                if same_author(names[a], names[b]):
                    left.append(a)
                    right.append(b)
    n = len(names)
    papers = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(authors), n)
    )
    papers.data[:] = 1.0  # a name twice on one paper (two spellings of one) is one author
    same = sparse.csr_matrix((np.ones(len(left), np.float32), (left, right)), shape=(n, n))
    return Affinity(papers, same, names, by_key, np.asarray(topic_of, np.int64), n_topics)


class ReaderAffinity(NamedTuple):
    """Readers' side of the signal (one row a reader)."""

    authors: sparse.csr_matrix
    """(n_readers, n_names): liked papers (and follows) by each name's author."""
    topics: npt.NDArray[np.float64]
    """(n_readers, n_topics): the share of their liked papers in each topic."""


def followed_columns(data: Affinity, followed: Iterable[AuthorName]) -> dict[int, float]:
    """The names (columns of ``data.papers``) of the followed authors, each with the
    liked papers its follows count as (``FOLLOW_PAPERS`` a follow)."""
    extra: dict[int, float] = {}
    for wanted in followed:
        for col in data.by_key.get(wanted.key, ()):
            if same_author(data.names[col], wanted):
                extra[col] = extra.get(col, 0.0) + FOLLOW_PAPERS
    return extra


def readers(
    data: Affinity,
    liked: sparse.csr_matrix,
    followed_authors: Iterable[AuthorName] = (),
    followed_topics: Iterable[int] = (),
) -> ReaderAffinity:
    """The readers' side from ``liked`` (n_readers, n_papers: > 0 where liked); the
    follows given are one reader's (``liked`` then has one row)."""
    liked = sparse.csr_matrix(liked > 0, dtype=np.float32)
    # Liked papers by author name, then by the same person under any of their names.
    authors = sparse.csr_matrix(liked @ data.papers @ data.same, dtype=np.float32)
    extra = followed_columns(data, followed_authors)
    if extra:
        assert liked.shape[0] == 1, "follows are one reader's"
        cols = np.fromiter(extra, dtype=np.int64, count=len(extra))
        added = sparse.csr_matrix(
            (np.fromiter(extra.values(), np.float32, len(extra)), (np.zeros_like(cols), cols)),
            shape=authors.shape,
        )
        authors = sparse.csr_matrix(authors + added)
    counts = np.zeros((liked.shape[0], data.n_topics), dtype=np.float64)
    if data.n_topics:
        # Each reader's liked papers by topic (a gather of their rows, not a product
        # with the whole catalog: a ranking reads one reader's few papers).
        owners = np.repeat(np.arange(liked.shape[0]), np.diff(liked.indptr))
        topics = data.topic_of[liked.indices]
        known = topics >= 0
        np.add.at(counts, (owners[known], topics[known]), 1.0)
        for topic in followed_topics:
            assert liked.shape[0] == 1, "follows are one reader's"
            if 0 <= topic < data.n_topics:
                counts[0, topic] += FOLLOW_PAPERS
    total = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    return ReaderAffinity(authors, shares)


def scores(data: Affinity, reader: ReaderAffinity, columns: IntArray | None = None) -> FloatArray:
    """(n_readers, n_columns) the affinity of each reader to the papers ``columns``
    (None: every paper)."""
    papers = data.papers if columns is None else data.papers[columns]
    by_authors = np.asarray((reader.authors @ papers.T).todense(), dtype=np.float64)
    share = np.zeros(by_authors.shape, dtype=np.float64)
    if data.n_topics:
        topic_of = data.topic_of if columns is None else data.topic_of[columns]
        known = topic_of >= 0
        share[:, known] = reader.topics[:, topic_of[known]]
    values: FloatArray = (np.log1p(by_authors) + share).astype(np.float32)
    return values


def one_reader(
    data: Affinity,
    liked: IntArray,
    columns: IntArray,
    followed_authors: Iterable[AuthorName] = (),
    followed_topics: Iterable[int] = (),
) -> FloatArray:
    """``scores(data, readers(...), columns)`` for one reader whose liked papers are
    ``liked`` (papers of ``data``, repeats allowed), as (1, n_columns): the same values
    (every sum is of whole numbers, so the order of additions cannot change them), from
    gathers of the few rows concerned instead of products with whole matrices (a feed
    ranks one reader: 50 microseconds instead of milliseconds)."""
    liked = np.unique(liked)
    # Liked papers by name, then by the same person under each of their names.
    names, counts = np.unique(
        data.papers.indices[row_entries(data.papers, liked)[0]], return_counts=True
    )
    same, owner = row_entries(data.same, names)
    by_name = np.bincount(
        data.same.indices[same], weights=counts[owner].astype(np.float64),
        minlength=0,
    )  # fmt: skip
    person, total = np.flatnonzero(by_name), by_name[by_name > 0]
    extra = followed_columns(data, followed_authors)
    if extra:
        merged = dict(zip(person.tolist(), total.tolist(), strict=True))
        for col, add in extra.items():
            merged[col] = merged.get(col, 0.0) + add
        person = np.fromiter(sorted(merged), np.int64, len(merged))
        total = np.array([merged[c] for c in person.tolist()], dtype=np.float64)
    # Each candidate's names looked up among the reader's.
    entries, owner = row_entries(data.papers, columns)
    wanted_names = data.papers.indices[entries]
    at = np.minimum(np.searchsorted(person, wanted_names), max(len(person) - 1, 0))
    hit = person[at] == wanted_names if len(person) else np.zeros(len(wanted_names), bool)
    by_authors = np.bincount(owner[hit], weights=total[at[hit]], minlength=len(columns))
    share = np.zeros(len(columns), dtype=np.float64)
    if data.n_topics:
        topics = data.topic_of[liked]
        per_topic = np.bincount(topics[topics >= 0], minlength=data.n_topics).astype(np.float64)
        for topic in followed_topics:
            if 0 <= topic < data.n_topics:
                per_topic[topic] += FOLLOW_PAPERS
        whole = per_topic.sum()
        if whole > 0:
            topic_of = data.topic_of[columns]
            known = topic_of >= 0
            share[known] = (per_topic / whole)[topic_of[known]]
    values: FloatArray = (np.log1p(by_authors) + share).astype(np.float32)[None, :]
    return values
