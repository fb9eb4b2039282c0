"""Topics of the catalog, learned from its text, for the feed's "new in <topic>" reason.

The papers' TF-IDF vectors (L2-normalised) are clustered by k-means (cosine, in effect):
one topic per ``PAPERS_PER_TOPIC`` papers, at most ``MAX_TOPICS``. A topic is named by
the heaviest terms of its centre ("diffusion · video"); a paper's topic is its nearest
centre. Papers added later are assigned to the centres learned before (no refit at
every import): the centres are fitted again with the text features (a new model) or
when the catalog has grown by ``REFIT_GROWTH`` since.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import sparse

log = logging.getLogger(__name__)

PAPERS_PER_TOPIC = 25
MIN_TOPICS = 2
MAX_TOPICS = 40
NAME_TERMS = 2
CENTRE_TERMS = 300
"""Terms kept of each centre (the rest weigh little): assigning a paper is a sparse
product, and the centres take little memory."""
REFIT_GROWTH = 0.25

IntArray = npt.NDArray[np.int64]


class Topics(NamedTuple):
    of_paper: IntArray
    """(n,) each paper's topic (-1: none, for a paper without known terms)."""
    names: list[str]
    centres: sparse.csr_matrix
    """(topics, terms): the centres' heaviest terms, rows L2-normalised."""
    fitted_on: int
    """Papers the centres were fitted on."""


NO_TOPICS = Topics(np.zeros(0, np.int64), [], sparse.csr_matrix((0, 0), dtype=np.float32), 0)


def learn_topics(text: sparse.csr_matrix, vocabulary: Sequence[str], seed: int = 0) -> Topics:
    """Topics of the papers whose text vectors are ``text`` (n, terms)."""
    # Imported here: fitting topics is the worker's (or a process building its own
    # index); serving reads them and need not load scikit-learn (seconds at start).
    from sklearn.cluster import MiniBatchKMeans

    text = sparse.csr_matrix(text, dtype=np.float32)
    has_text = np.diff(text.indptr) > 0
    count = min(MAX_TOPICS, int(has_text.sum()) // PAPERS_PER_TOPIC)
    if count < MIN_TOPICS:
        return Topics(np.full(text.shape[0], -1, np.int64), [], NO_TOPICS.centres, 0)
    rows = np.flatnonzero(has_text)
    kmeans = MiniBatchKMeans(
        n_clusters=count, random_state=seed, batch_size=2048, n_init=3, max_iter=50
    ).fit(text[rows])
    centres = np.asarray(kmeans.cluster_centers_, dtype=np.float32)
    names = topic_names(centres, vocabulary)
    kept = _heaviest(centres, CENTRE_TERMS)
    of_paper = np.full(text.shape[0], -1, dtype=np.int64)
    of_paper[rows] = kmeans.labels_
    return Topics(of_paper, names, kept, len(rows))


def assign(topics: Topics, text: sparse.csr_matrix) -> IntArray:
    """Each paper's nearest centre (-1 when it shares no term with any)."""
    if not topics.names or text.shape[0] == 0:
        return np.full(text.shape[0], -1, dtype=np.int64)
    scores = np.asarray((sparse.csr_matrix(text) @ topics.centres.T).todense())
    best: IntArray = scores.argmax(axis=1).astype(np.int64)
    best[scores.max(axis=1) <= 0] = -1
    return best


def topic_ids(names: Sequence[str]) -> list[str]:
    """Each topic's id: its name as a slug ("reinforcement learning · robot" is
    "reinforcement-learning-robot"), "-2", "-3"... after a name met before. Named by
    what it is, so that an id a reader followed still names the topic after the
    centres are fitted again with the same names (``paperfeed.follows``)."""
    ids: list[str] = []
    for name in names:
        slug = re.sub(r"[^0-9a-z]+", "-", name.casefold()).strip("-") or "topic"
        unique, n = slug, 1
        while unique in ids:
            n += 1
            unique = f"{slug}-{n}"
        ids.append(unique)
    return ids


def topic_names(centres: npt.NDArray[np.float32], vocabulary: Sequence[str]) -> list[str]:
    """Each centre's name: its heaviest terms, leaving out one that a chosen term already
    says ("language" after "language models", "images" after "image"). No two topics
    share a name, in either order: a name met before takes the next term instead (the
    first-run page offered both "memory · llms" and "llms · memory")."""
    names: list[str] = []
    taken: set[frozenset[str]] = set()
    for centre in centres:
        chosen: list[str] = []
        for index in np.argsort(-centre)[: 20 * NAME_TERMS]:
            term = vocabulary[int(index)]
            if centre[index] <= 0:
                break
            if any(_says(other, term) for other in chosen):
                continue
            if len(chosen) == NAME_TERMS - 1 and frozenset([*chosen, term]) in taken:
                continue
            chosen.append(term)
            if len(chosen) == NAME_TERMS:
                break
        taken.add(frozenset(chosen))
        names.append(" · ".join(chosen))
    return names


def _says(chosen: str, term: str) -> bool:
    """Whether ``chosen`` already says ``term``: they share a word, but for a plural's
    ending ("image"/"images", "process"/"processes", "study"/"studies")."""
    words = set().union(*(_forms(word) for word in chosen.split()))
    return any(_forms(word) & words for word in term.split())


def _forms(word: str) -> set[str]:
    """The word, and what it is if it is a plural."""
    forms = {word}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return forms


def _heaviest(centres: npt.NDArray[np.float32], keep: int) -> sparse.csr_matrix:
    if centres.shape[1] > keep:
        cut = np.argpartition(-centres, keep - 1, axis=1)[:, :keep]
        mask = np.zeros_like(centres, dtype=bool)
        np.put_along_axis(mask, cut, True, axis=1)
        centres = np.where(mask, centres, 0).astype(np.float32)
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    return sparse.csr_matrix(centres / np.maximum(norms, 1e-12), dtype=np.float32)
