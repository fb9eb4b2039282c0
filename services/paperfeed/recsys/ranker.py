"""The production ranking: one function shared by the feed and by ``paperfeed eval``.

For a reader with interactions ``(items, confidences)`` and a set of candidate papers:

- collaborative: the reader's vector, folded in against the item factors (implicit's
  ``recalculate_user``: one least-squares solve with the cached item Gram matrix), dotted
  with each candidate's factors (papers nobody touched have factors projected from text);
- content: cosine between the candidate's text vector and the reader's text profile
  (the confidence-weighted sum of the text vectors of what they interacted with);
- trending: log(1 + trending score) of the candidate.

Each signal is standardised over the candidates, then
``score = p * (mix * cf + (1 - mix) * content) + (1 - p) * trending`` with
``p = personal_max * n / (n + history_half)`` for a reader with ``n`` positive
interactions: a new reader gets trending, a long history gets mostly personal.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.content import FloatArray

IntArray = npt.NDArray[np.int64]


class BlendParams(msgspec.Struct, frozen=True):
    mix: float = 0.5
    """Share of collaborative (vs content) in the personal part."""
    history_half: float = 1.0
    """Positive interactions at which the personal part has half of personal_max."""
    personal_max: float = 0.97
    """Weight of the personal part for a reader with a very long history."""
    shrink: float = 0.01
    """An item's own ALS factors count n / (n + shrink) against projected text factors."""
    ridge: float = 1.0
    """L2 penalty of the text -> factors projection."""


class Signals(msgspec.Struct):
    """Per-candidate signals (standardised) and the blend weights, for explanations."""

    cf: FloatArray
    content: FloatArray
    trending: FloatArray
    personal: float


def standardize(values: FloatArray) -> FloatArray:
    """Zero mean, unit variance along the last axis (all zero when constant)."""
    mean = values.mean(axis=-1, keepdims=True)
    std = values.std(axis=-1, keepdims=True)
    return np.where(std > 1e-9, (values - mean) / np.maximum(std, 1e-9), 0.0).astype(np.float32)


def content_profiles(item_content: FloatArray, user_items: sparse.csr_matrix) -> FloatArray:
    """(n_users, dims): confidence-weighted sums of text vectors, L2-normalised."""
    profiles = np.asarray(user_items @ item_content, dtype=np.float32)
    norms = np.linalg.norm(profiles, axis=1, keepdims=True)
    return np.where(norms > 0, profiles / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def personal_weight(positives: npt.NDArray[np.float64], params: BlendParams) -> FloatArray:
    n = positives.astype(np.float64)
    return (params.personal_max * n / (n + params.history_half)).astype(np.float32)


def blend(
    user_vectors: FloatArray,
    profiles: FloatArray,
    positives: npt.NDArray[np.float64],
    item_factors: FloatArray,
    item_content: FloatArray,
    trending: FloatArray,
    params: BlendParams,
) -> tuple[FloatArray, Signals]:
    """Scores (n_users, n_candidates) of candidates for a batch of readers.

    ``user_vectors`` (n_users, k) folded-in factors; ``profiles`` (n_users, dims);
    ``positives`` (n_users,) positive interactions; ``item_factors`` (n_candidates, k);
    ``item_content`` (n_candidates, dims); ``trending`` (n_candidates,) raw scores >= 0.
    """
    cf = standardize(user_vectors @ item_factors.T)
    content = standardize(profiles @ item_content.T)
    trend = standardize(np.log1p(np.maximum(trending, 0)).astype(np.float32)[None, :])
    p = personal_weight(positives, params)[:, None]
    personal = params.mix * cf + (1 - params.mix) * content
    scores = (p * personal + (1 - p) * trend).astype(np.float32)
    signals = Signals(cf=cf, content=content, trending=trend[0], personal=float(p.mean()))
    return scores, signals


def effective_item_factors(
    als_factors: FloatArray,
    projected: FloatArray,
    counts: npt.NDArray[np.float64],
    shrink: float,
) -> FloatArray:
    """Per item: its own factors weighted n / (n + shrink), the text projection the rest."""
    trust = (counts / (counts + shrink))[:, None]
    return (trust * als_factors + (1 - trust) * projected).astype(np.float32)
