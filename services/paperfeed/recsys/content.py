"""The content model: title and abstract as a dense vector, and its map into ALS space.

``ContentEncoder``: TF-IDF (sublinear tf, English stop words) over title + abstract,
reduced by truncated SVD (LSA) to ``dims`` dimensions and L2-normalised. It is stored as
plain arrays (vocabulary, idf, SVD components), so it reloads without pickles and
encodes a new paper with no fitting.

``fit_projection``: ridge regression from content vectors to the item factors of
well-known papers, so a paper nobody has touched yet gets factors on the day it appears.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def paper_text(title: str, abstract: str) -> str:
    # The title says most about a paper in the fewest words: it counts twice.
    return f"{title}. {title}. {abstract}"


def l2_normalize(matrix: FloatArray) -> FloatArray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    normalized: FloatArray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized


class ContentEncoder:
    """Text -> L2-normalised float32 vector of ``dims`` dimensions."""

    def __init__(self, vocabulary: Sequence[str], idf: FloatArray, components: FloatArray) -> None:
        self.vocabulary = list(vocabulary)
        self.idf = idf.astype(np.float32)
        self.components = components.astype(np.float32)
        """(dims, len(vocabulary)) float32: the SVD basis."""
        self._counter = CountVectorizer(
            vocabulary={term: i for i, term in enumerate(self.vocabulary)},
            stop_words="english",
            dtype=np.float32,
        )

    @property
    def dims(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        dims: int = 128,
        max_terms: int = 40_000,
        seed: int = 0,
        max_papers: int = 30_000,
    ) -> ContentEncoder:
        """Fit on the texts (a seeded sample of ``max_papers`` of them when there are more:
        the vocabulary and basis settle long before, and fitting is the slow part)."""
        if len(texts) > max_papers:
            pick = np.random.default_rng(seed).choice(len(texts), max_papers, replace=False)
            texts = [texts[i] for i in sorted(pick)]
        # Terms in at least two papers and at most half of them; a tiny catalog keeps all.
        for min_df, max_df in ((2, 0.5), (1, 1.0)):
            tfidf = TfidfVectorizer(
                stop_words="english",
                sublinear_tf=True,
                min_df=min_df,
                max_df=max_df,
                max_features=max_terms,
                dtype=np.float32,
            )
            try:
                weighted = tfidf.fit_transform(texts)
            except ValueError:  # no term at all
                continue
            if weighted.shape[1] >= 2:
                break
        else:
            log.warning("no text to learn from: the content signal is off")
            return cls(["<none>"], np.ones(1, np.float32), np.zeros((1, 1), np.float32))
        vocabulary = [""] * len(tfidf.vocabulary_)
        for term, index in tfidf.vocabulary_.items():
            vocabulary[index] = term
        n_papers, n_terms = weighted.shape
        if n_terms <= dims or n_papers <= dims:
            components = np.eye(n_terms, dtype=np.float32)  # too small to reduce
        else:
            svd = TruncatedSVD(n_components=dims, random_state=seed, algorithm="randomized")
            components = svd.fit(weighted).components_
        log.info("content model fitted", extra={"terms": n_terms, "dims": len(components)})
        return cls(vocabulary, tfidf.idf_, components)

    def tfidf(self, texts: Sequence[str]) -> sparse.csr_matrix:
        counts = self._counter.transform(texts).astype(np.float32)
        counts.data = 1.0 + np.log(counts.data)
        weighted = counts.multiply(self.idf).tocsr()
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.maximum(norms, 1e-12)).dot(weighted).tocsr()

    def encode(self, texts: Sequence[str], batch: int = 4096) -> FloatArray:
        """(len(texts), dims) float32, rows L2-normalised (all zero for empty text)."""
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for start in range(0, len(texts), batch):
            weighted = self.tfidf(texts[start : start + batch])
            out[start : start + batch] = weighted @ self.components.T
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.where(norms > 0, out / np.maximum(norms, 1e-12), 0).astype(np.float32)

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "content_vocabulary": np.array(self.vocabulary, dtype=np.str_),
            "content_idf": self.idf,
            "content_components": self.components,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[np.generic]]) -> ContentEncoder:
        return cls(
            [str(t) for t in arrays["content_vocabulary"]],
            np.asarray(arrays["content_idf"], dtype=np.float32),
            np.asarray(arrays["content_components"], dtype=np.float32),
        )


def fit_projection(
    content: FloatArray, factors: FloatArray, weights: npt.NDArray[np.float64], ridge: float
) -> FloatArray:
    """(dims, k) float32 W minimising sum_i w_i |c_i W - y_i|^2 + ridge |W|^2.

    ``content`` (n, dims), ``factors`` (n, k), ``weights`` (n,): how much each paper's
    factors can be trusted (papers with more interactions have better factors).
    """
    weighted = content * weights[:, None]
    gram = content.T @ weighted + ridge * np.eye(content.shape[1], dtype=np.float64)
    rhs = weighted.T @ factors
    projection = np.linalg.solve(gram, rhs).astype(np.float32)
    if not np.all(np.isfinite(projection)):
        raise FloatingPointError("content projection has NaN or inf")
    return projection
