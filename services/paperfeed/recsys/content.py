"""The content model: a paper's title and abstract as a sparse TF-IDF vector.

``TextFeatures``: TF-IDF (sublinear tf, English stop words, L2-normalised rows) over the
words of title and abstract, or over words and word pairs (``bigrams``); which of the
two a deployment uses is learned at training time (``training.learn``). Stored as plain
arrays (vocabulary, idf), so it reloads without pickles and encodes a new paper with no
fitting.

Sparse vectors keep what short texts have: a titles-only catalog loses most of its
signal in a dense reduction (LSA), measured in docs/evaluation.md.

``neighbour_factors``: a paper nobody has touched yet gets collaborative factors from
the papers nearest to it in text that have interactions (their factors averaged,
weighted by text similarity), so it can be ranked for a reader on the day it appears.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.stop_words import ENGLISH_STOP_WORDS

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
TextKind = Literal["words", "bigrams"]
TEXT_KINDS: tuple[TextKind, ...] = ("words", "bigrams")
NGRAMS: dict[TextKind, tuple[int, int]] = {"words": (1, 1), "bigrams": (1, 2)}
MAX_TERMS: dict[TextKind, int] = {"words": 60_000, "bigrams": 200_000}
NEIGHBOURS = 50
PROFILE_TERMS = 300


def paper_text(title: str, abstract: str) -> str:
    # The title says most about a paper in the fewest words: it counts twice.
    return f"{title}. {title}. {abstract}"


def l2_normalize(matrix: FloatArray) -> FloatArray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    normalized: FloatArray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


def normalize_rows(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty), float32 CSR."""
    matrix = sparse.csr_matrix(matrix, dtype=np.float32)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    scale = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    return sparse.csr_matrix(sparse.diags(scale) @ matrix, dtype=np.float32)


class Tokens:
    """Tokenized texts as arrays: each text's words (lower case, English stop words
    removed) as ids into ``words``, concatenated, with ``indptr`` marking where each
    text starts. A text's word pairs are its consecutive words (as scikit-learn's
    ``ngram_range=(1, 2)`` makes them, after stop words): they are computed from the
    ids when needed, never as strings, so counting pairs over a large catalog costs
    array operations, not millions of dictionary lookups."""

    def __init__(
        self, words: list[str], ids: npt.NDArray[np.int64], indptr: npt.NDArray[np.int64]
    ) -> None:
        self.words = words
        self.ids = ids
        self.indptr = indptr

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def owners(self) -> npt.NDArray[np.int64]:
        """Which text each word belongs to."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    def pair_starts(self) -> npt.NDArray[np.int64]:
        """Positions (in ``ids``) of the first word of each word pair."""
        follows = np.ones(len(self.ids), dtype=bool)
        firsts = self.indptr[:-1]
        follows[firsts[firsts < len(self.ids)]] = False  # a text's first word follows none
        return np.flatnonzero(follows) - 1

    def subset(self, texts: npt.NDArray[np.int64]) -> Tokens:
        """The given texts (in that order), over the same words."""
        starts, ends = self.indptr[texts], self.indptr[texts + 1]
        lengths = ends - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        return Tokens(self.words, self.ids[flat], indptr)


WORD = re.compile(r"(?u)\b\w\w+\b")
"""A word: two or more letters, digits or underscores (scikit-learn's default token)."""


def words_of(text: str) -> list[str]:
    """One text's words, as scikit-learn's ``CountVectorizer(stop_words="english")``
    reads them, without scikit-learn: lower case, ``WORD``s, English stop words removed
    (a test holds it to scikit-learn's analyzer on real abstracts)."""
    return [word for word in WORD.findall(text.lower()) if word not in ENGLISH_STOP_WORDS]


def tokenize(texts: Sequence[str]) -> Tokens:
    """Every text's words as ``Tokens``: the one pass over the text that every kind of
    features counts from."""
    per_text = [words_of(text) for text in texts]
    lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
    vocabulary: dict[str, int] = collections.defaultdict(itertools.count().__next__)
    flat = itertools.chain.from_iterable(per_text)
    ids = np.fromiter(map(vocabulary.__getitem__, flat), dtype=np.int64, count=int(lengths.sum()))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Tokens(list(vocabulary), ids, indptr)


def _document_frequency(
    owners: npt.NDArray[np.int64], terms: npt.NDArray[np.int64], n_terms: int
) -> npt.NDArray[np.int64]:
    """In how many texts each term occurs (``terms[i]`` occurring in text ``owners[i]``)."""
    keys = np.sort(owners * n_terms + terms)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return np.bincount(keys[first] % n_terms, minlength=n_terms)


def _distinct(keys: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``np.unique(keys, return_inverse=True)`` by one sort (numpy's hash-based unique
    is several times slower on millions of keys)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


class TextFeatures:
    """Text -> L2-normalised sparse TF-IDF row over a fixed vocabulary."""

    def __init__(self, kind: TextKind, vocabulary: Sequence[str], idf: FloatArray) -> None:
        self.kind: TextKind = kind
        self.vocabulary = list(vocabulary)
        self.idf = np.asarray(idf, dtype=np.float32)
        # The vocabulary as arrays over its own words, so that texts are counted with
        # array operations: each word's unigram column (or -1), and the word pairs'
        # keys (first word * words + second word), sorted, with their columns.
        parts = [term.split(" ") for term in self.vocabulary]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        self._word_ids: dict[str, int] = collections.defaultdict(itertools.count().__next__)
        ids = np.fromiter(
            map(self._word_ids.__getitem__, itertools.chain.from_iterable(parts)),
            dtype=np.int64,
            count=int(lengths.sum()),
        )
        self._word_ids = dict(self._word_ids)  # reading must not add words
        starts = np.cumsum(lengths) - lengths
        single, pair = lengths == 1, lengths == 2
        self._unigram = np.full(len(self._word_ids), -1, dtype=np.int64)
        self._unigram[ids[starts[single]]] = np.flatnonzero(single)
        keys = ids[starts[pair]] * len(self._word_ids) + ids[starts[pair] + 1]
        order = np.argsort(keys)
        self._pair_keys = keys[order]
        self._pair_columns = np.flatnonzero(pair)[order]

    @property
    def terms(self) -> int:
        return len(self.vocabulary)

    def same_as(self, other: TextFeatures) -> bool:
        """The same kind, vocabulary and idf: both encode any text alike."""
        return (
            self.kind == other.kind
            and self.vocabulary == other.vocabulary
            and np.array_equal(self.idf, other.idf)
        )

    @classmethod
    def fit(
        cls,
        tokens: Tokens,
        seed: int = 0,
        max_papers: int = 30_000,
        kinds: Sequence[TextKind] = TEXT_KINDS,
    ) -> dict[TextKind, TextFeatures]:
        """Every kind of features, fitted on the papers' tokens (a seeded sample of
        ``max_papers`` when there are more: the vocabulary and idf settle long before).

        Terms in at least two papers and at most half of them (a tiny catalog keeps
        all), the most frequent ``MAX_TERMS`` of each kind; smoothed idf."""
        if len(tokens) > max_papers:
            pick = np.random.default_rng(seed).choice(len(tokens), max_papers, replace=False)
            tokens = tokens.subset(np.sort(pick))
        n = len(tokens)
        words = tokens.words
        n_words = len(words)
        owners = tokens.owners()
        word_df = _document_frequency(owners, tokens.ids, n_words)
        pair_keys = np.zeros(0, dtype=np.int64)
        pair_df = np.zeros(0, dtype=np.int64)
        if "bigrams" in kinds:
            starts = tokens.pair_starts()
            keys = tokens.ids[starts] * n_words + tokens.ids[starts + 1]
            pair_keys, inverse = _distinct(keys)
            pair_df = _document_frequency(owners[starts], inverse, len(pair_keys))

        def candidates(kind: TextKind, min_df: int, max_df: float) -> list[tuple[int, str]]:
            found = [
                (int(word_df[i]), words[i])
                for i in np.flatnonzero((word_df >= min_df) & (word_df <= max_df * n))
            ]
            if kind == "bigrams":
                chosen = np.flatnonzero((pair_df >= min_df) & (pair_df <= max_df * n))
                found += [
                    (int(pair_df[i]), f"{words[key // n_words]} {words[key % n_words]}")
                    for i, key in zip(chosen, pair_keys[chosen].tolist(), strict=True)
                ]
            return found

        fitted: dict[TextKind, TextFeatures] = {}
        for kind in kinds:
            chosen: list[tuple[int, str]] = []
            for min_df, max_df in ((2, 0.5), (1, 1.0)):
                chosen = candidates(kind, min_df, max_df)
                if len(chosen) >= 2:
                    break
            if len(chosen) < 2:
                if len(tokens.ids):  # an empty catalog has nothing to say yet
                    log.warning("no text to learn from: the content signal is off")
                fitted[kind] = cls(kind, ["<none>"], np.ones(1, np.float32))
                continue
            chosen.sort(key=lambda pair: (-pair[0], pair[1]))
            chosen = sorted(chosen[: MAX_TERMS[kind]], key=lambda pair: pair[1])
            counts = np.array([c for c, _ in chosen], dtype=np.float64)
            idf = np.log((1.0 + n) / (1.0 + counts)) + 1.0
            fitted[kind] = cls(kind, [t for _, t in chosen], idf.astype(np.float32))
        return fitted

    @classmethod
    def fit_vectors(
        cls, tokens: Tokens, seed: int = 0, kinds: Sequence[TextKind] = TEXT_KINDS
    ) -> dict[TextKind, tuple[TextFeatures, sparse.csr_matrix]]:
        """``fit``, and every paper's vectors under each kind."""
        return {
            kind: (features, features.vectors(tokens))
            for kind, features in cls.fit(tokens, seed, kinds=kinds).items()
        }

    def counts(self, tokens: Tokens) -> sparse.csr_matrix:
        """(len(tokens), terms) float32 CSR: how often each term of the vocabulary occurs
        in each text (other terms are left out)."""
        known = np.fromiter(
            (self._word_ids.get(word, -1) for word in tokens.words),
            dtype=np.int64,
            count=len(tokens.words),
        )
        word = known[tokens.ids] if len(known) else np.zeros(0, dtype=np.int64)
        owners = tokens.owners()
        columns = np.where(word >= 0, self._unigram[np.maximum(word, 0)], -1)
        rows = [owners[columns >= 0]]
        kept = [columns[columns >= 0]]
        if len(self._pair_keys):
            starts = tokens.pair_starts()
            first, second = word[starts], word[starts + 1]
            both = (first >= 0) & (second >= 0)
            keys = first[both] * len(self._word_ids) + second[both]
            where = np.minimum(np.searchsorted(self._pair_keys, keys), len(self._pair_keys) - 1)
            found = self._pair_keys[where] == keys
            rows.append(owners[starts][both][found])
            kept.append(self._pair_columns[where[found]])
        row, column = np.concatenate(rows), np.concatenate(kept)
        counted = sparse.csr_matrix(
            (np.ones(len(row), dtype=np.float32), (row, column)),
            shape=(len(tokens), self.terms),
        )
        counted.sum_duplicates()
        return counted

    def vectors(self, tokens: Tokens) -> sparse.csr_matrix:
        """(len(tokens), terms) float32 CSR, rows L2-normalised (empty for no known term;
        word pairs are simply not in a ``words`` vocabulary)."""
        return self.weigh(self.counts(tokens))

    def weigh(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Term counts -> sublinear TF-IDF rows, L2-normalised."""
        weighted = sparse.csr_matrix(counts, dtype=np.float32, copy=True)
        weighted.data = 1.0 + np.log(weighted.data)
        return normalize_rows(weighted.multiply(self.idf[None, :]).tocsr())

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        return self.vectors(tokenize(texts))

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        # One joined string, not a fixed-width array of strings (200k terms of up to
        # 40 characters would take 32 MB as numpy UCS-4).
        joined = "\n".join(self.vocabulary).encode()
        return {
            "text_kind": np.array(self.kind),
            "text_vocabulary": np.frombuffer(joined, dtype=np.uint8),
            "text_idf": self.idf,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> TextFeatures:
        kind = str(arrays["text_kind"])
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown text features {kind!r}")
        vocabulary = bytes(np.asarray(arrays["text_vocabulary"], dtype=np.uint8)).decode()
        return cls(kind, vocabulary.split("\n"), np.asarray(arrays["text_idf"], dtype=np.float32))


def profiles(text: sparse.csr_matrix, user_items: sparse.csr_matrix) -> sparse.csr_matrix:
    """(n_users, terms): each reader's sum of the text vectors of the papers they liked
    (dismissals left out), weighted by log1p(weight) as ALS confidence is, cut to its
    ``PROFILE_TERMS`` heaviest terms (the rest weigh little and cost much), L2-normalised."""
    liked = sparse.csr_matrix(user_items, dtype=np.float32, copy=True)
    liked.data = np.log1p(np.maximum(liked.data, 0))
    liked.eliminate_zeros()
    summed = sparse.csr_matrix(liked @ text)
    lengths = np.diff(summed.indptr)
    if (lengths > PROFILE_TERMS).any():
        keep = np.ones(summed.nnz, dtype=bool)
        for row in np.flatnonzero(lengths > PROFILE_TERMS):
            start, end = summed.indptr[row], summed.indptr[row + 1]
            light = np.argpartition(-summed.data[start:end], PROFILE_TERMS)[PROFILE_TERMS:]
            keep[start + light] = False
        summed.data = np.where(keep, summed.data, 0).astype(np.float32)
        summed.eliminate_zeros()
    return normalize_rows(summed)


def row_entries(
    matrix: sparse.csr_matrix, rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Where the entries of ``rows`` of a CSR matrix are in its ``indices``/``data``, and
    which of ``rows`` each belongs to: a gather with no matrix built (one reader's ranking
    would otherwise build dozens of small scipy matrices, each costing more than its
    arithmetic)."""
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1].astype(np.int64) - starts
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    before = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return flat, owner


class ReaderProfile(NamedTuple):
    """One reader's row of ``profiles``, as arrays: its terms and their weights."""

    terms: npt.NDArray[np.int64]
    weights: FloatArray


WeightedTerms = Callable[
    [sparse.csr_matrix, npt.NDArray[np.int64], FloatArray],
    tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]],
]
"""(the distinct terms of some rows of a text matrix, ascending; each term's sum of its
entries times the row's weight): the first step of a reader's profile."""


def weighted_terms(
    text: sparse.csr_matrix, rows: npt.NDArray[np.int64], weights: FloatArray
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``WeightedTerms`` in numpy (the feed's compiled one is held to it)."""
    flat, owner = row_entries(text, rows)
    terms, where = np.unique(text.indices[flat], return_inverse=True)
    sums = np.asarray(np.bincount(where, weights=text.data[flat] * weights[owner]), np.float64)
    return terms.astype(np.int64), sums


def reader_profile(
    text: sparse.csr_matrix,
    positions: npt.NDArray[np.int64],
    weights: FloatArray,
    terms_of: WeightedTerms = weighted_terms,
) -> ReaderProfile:
    """``profiles`` for one reader (the papers at ``positions`` with their weights),
    the same maths computed on the arrays."""
    keep = weights > 0
    positions = positions[keep]
    confidence = np.log1p(weights[keep]).astype(np.float32)
    if len(positions) == 0:
        return ReaderProfile(np.zeros(0, np.int64), np.zeros(0, np.float32))
    terms, sums = terms_of(text, positions, confidence)
    values = sums.astype(np.float32)
    nonzero = values != 0
    terms, values = terms[nonzero], values[nonzero]
    if len(terms) > PROFILE_TERMS:
        heaviest = np.sort(np.argpartition(-values, PROFILE_TERMS)[:PROFILE_TERMS])
        terms, values = terms[heaviest], values[heaviest]
    norm = float(np.sqrt(np.square(values, dtype=np.float64).sum()))
    if norm <= 0:
        return ReaderProfile(np.zeros(0, np.int64), np.zeros(0, np.float32))
    return ReaderProfile(terms.astype(np.int64), (values / norm).astype(np.float32))


def profile_similarity(by_term: sparse.csr_matrix, profile: ReaderProfile) -> FloatArray:
    """``similarity`` for one reader: cosine with every paper of ``by_term`` (terms,
    papers), read through the postings of the profile's terms."""
    scores: FloatArray = np.asarray(profile.weights @ by_term[profile.terms], dtype=np.float32)
    return scores


def profile_scores(
    text: sparse.csr_matrix, rows: npt.NDArray[np.int64], profile: ReaderProfile
) -> FloatArray:
    """Cosine between one reader's profile and the papers at ``rows`` of ``text``."""
    dense = np.zeros(text.shape[1], dtype=np.float32)
    dense[profile.terms] = profile.weights
    scores: FloatArray = np.asarray(text[rows] @ dense, dtype=np.float32)
    return scores


def similarity(
    user_profiles: sparse.csr_matrix, text: sparse.csr_matrix, batch: int = 64
) -> FloatArray:
    """(n_users, n_papers) cosine between profiles and the papers' text vectors
    (``text``, CSR (n_papers, terms)), dense.

    For each batch of readers only the columns of the terms in their profiles are read:
    those columns times a dense (those terms, readers) block, a row-wise product (about
    twice as fast as reading the same terms' postings column-wise; smaller batches keep
    the union of their terms small)."""
    out = np.zeros((user_profiles.shape[0], text.shape[0]), dtype=np.float32)
    for start in range(0, user_profiles.shape[0], batch):
        part = sparse.csr_matrix(user_profiles[start : start + batch])
        terms = np.unique(part.indices)
        if len(terms) == 0:
            continue
        weights = part[:, terms].toarray()
        out[start : start + batch] = (text[:, terms] @ weights.T).T
    return out


def neighbour_factors(
    new_text: sparse.csr_matrix,
    known_text: sparse.csr_matrix,
    known_factors: FloatArray,
    neighbours: int = NEIGHBOURS,
    batch: int = 64,
) -> FloatArray:
    """(n_new, k): for each new paper, the mean of the factors of its ``neighbours``
    nearest known papers in text, weighted by cosine (zero when no word is shared)."""
    n_new, k = new_text.shape[0], known_factors.shape[1]
    out = np.zeros((n_new, k), dtype=np.float32)
    n_known = known_text.shape[0]
    if n_new == 0 or n_known == 0:
        return out
    known_text = sparse.csr_matrix(known_text)
    take = min(neighbours, n_known)
    for start in range(0, n_new, batch):
        part = sparse.csr_matrix(new_text[start : start + batch])
        terms = np.unique(part.indices)
        # As in ``similarity``: the known papers' columns of these terms, row-wise.
        sims = np.asarray((known_text[:, terms] @ part[:, terms].toarray().T).T)
        if take < n_known:
            top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(n_known), (sims.shape[0], n_known))
        weights = np.maximum(np.take_along_axis(sims, top, axis=1), 0)
        total = weights.sum(axis=1, keepdims=True)
        mixed = np.einsum("nk,nkf->nf", weights, known_factors[top])
        out[start : start + batch] = np.where(total > 0, mixed / np.maximum(total, 1e-12), 0)
    return out
