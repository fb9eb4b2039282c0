"""The production ranking: one function shared by the feed and by ``paperfeed eval``.

For a reader and a set of candidate papers, three signals:

- collaborative (``cf``): the reader's vector (ALS factors, folded in from everything
  they did) dotted with each candidate's factors; a paper without interactions has
  factors borrowed from its nearest papers in text (``content.neighbour_factors``);
- content: cosine between the candidate's text vector and the reader's text profile
  (the weighted sum of the text vectors of the papers they liked);
- trending: log(1 + trending score) of the candidate (in evaluation and training:
  log(1 + interactions in the training data));
- item-kNN (``itemknn``): the sum of the candidate's similarities to the papers the
  reader liked, by who read them (``recsys.itemknn``); only for models that carry
  neighbour lists;
- follow affinity (``follow``): the reader's affinity to the candidate's authors and
  topic (``recsys.affinity``: their liked papers by its authors and in its topic, a
  follow counting as several), for models that learned its weight.

Each signal is standardised over the candidates (zero mean, unit variance per reader;
item-kNN over the candidates with interactions, the others get 0: a paper nobody read
has no neighbours, which says nothing of it),
then ``score = cf' + w_content(n) * content + w_trending(n) * trending
+ w_itemknn(n) * itemknn + w_follow * follow`` where ``cf'`` is
``cf`` times ``cold_cf`` for papers without interactions, and each weight shifts with
the reader's history length ``n`` (positive papers):
``w(n) = w * exp(slope * (log1p(n) - log1p(median_history)))``.

The weights are learned by every deployment from its own data (``training.learn``); a
reader with no history has constant collaborative and content signals, so trending
alone orders their feed.
"""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.content import FloatArray

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


TIE_BREAK = 1e-3


class BlendParams(msgspec.Struct, frozen=True, kw_only=True):
    """The blend's weights, relative to the collaborative signal's (1)."""

    collaborative: bool = True
    """False before any model: content and trending only."""
    content: float = 0.0
    """Weight of content for a reader with the median history."""
    content_slope: float = 0.0
    """How the content weight grows (> 0) or shrinks per unit of log1p(history)."""
    trending: float = 0.0
    trending_slope: float = 0.0
    itemknn: float = 0.0
    """Weight of the item-kNN signal (0: off; models without neighbour lists ignore it)."""
    itemknn_slope: float = 0.0
    follow: float | None = None
    """Weight of the reader's affinity to a candidate's authors and topic
    (``recsys.affinity``, the signal follows feed), learned like the others (0: off);
    None: not learned (a model from before it, or data without authors), and the feed
    lifts followed papers by its prior ``feed.FOLLOW_WEIGHT`` instead."""
    cold_cf: float = 1.0
    """Multiplier of the collaborative signal of papers without interactions (their
    factors come from text neighbours, a weaker estimate)."""
    median_history: float = 10.0
    """History length at which the weights are ``content`` and ``trending``."""


# Before any model: the reader's own papers (content) and trending, trending fading as
# the history grows. Nothing is learned yet; these only order the first clicks' feed.
CONTENT_ONLY = BlendParams(
    collaborative=False, content=1.0, trending=0.5, trending_slope=-1.0, median_history=1.0
)


class Signals(msgspec.Struct):
    """Per-candidate signals (standardised) and the blend weights, for explanations."""

    cf: FloatArray
    content: FloatArray
    trending: FloatArray
    """(n_candidates,): the same for every reader."""
    content_weight: FloatArray
    trending_weight: FloatArray
    """(n_users,) weights used for each reader."""
    itemknn: FloatArray | None = None
    """(n_users, n_candidates) the item-kNN signal, standardised (None: not used) ..."""
    itemknn_weight: FloatArray | None = None
    """... and its weight for each reader."""


def standardize(values: FloatArray) -> FloatArray:
    """Zero mean, unit variance along the last axis (all zero when constant)."""
    values = np.asarray(values, dtype=np.float32)
    mean = values.mean(axis=-1, keepdims=True)
    std = values.std(axis=-1, keepdims=True)
    return np.where(std > 1e-9, (values - mean) / np.maximum(std, 1e-9), 0.0).astype(np.float32)


def standardize_over(values: FloatArray, over: BoolArray) -> FloatArray:
    """``standardize`` with the mean and spread of the entries ``over`` (n_candidates,)
    only; the others are 0 (the mean)."""
    values = np.asarray(values, dtype=np.float32)
    count = max(int(over.sum()), 1)
    kept = np.where(over, values, 0.0).astype(np.float32)
    mean = (kept.sum(axis=-1, keepdims=True) / count).astype(np.float32)
    spread = np.where(over, values - mean, 0.0).astype(np.float32)
    std = np.sqrt((spread * spread).sum(axis=-1, keepdims=True) / count).astype(np.float32)
    scaled = np.where(std > 1e-9, spread / np.maximum(std, 1e-9), 0.0)
    return np.where(over, scaled, 0.0).astype(np.float32)


def history_weight(
    weight: float, slope: float, positives: npt.NDArray[np.float64], median: float
) -> FloatArray:
    shift = np.log1p(np.maximum(positives, 0)) - np.log1p(max(median, 0.0))
    weights: FloatArray = (weight * np.exp(slope * shift)).astype(np.float32)
    return weights


def blend(
    cf: FloatArray,
    content: FloatArray,
    trending: FloatArray,
    positives: npt.NDArray[np.float64],
    cold: BoolArray,
    params: BlendParams,
    itemknn: FloatArray | None = None,
    follow: FloatArray | None = None,
) -> tuple[FloatArray, Signals]:
    """Scores (n_users, n_candidates) from the raw signals.

    ``cf`` and ``content`` (n_users, n_candidates) raw scores; ``trending``
    (n_candidates,) raw scores >= 0; ``positives`` (n_users,) history lengths; ``cold``
    (n_candidates,) papers without interactions; ``itemknn`` (n_users, n_candidates)
    raw item-kNN scores, or None (no neighbour lists: the signal is off); ``follow``
    (n_users, n_candidates) raw follow affinities (``recsys.affinity``), or None (off).
    """
    cf_z = standardize(cf) if params.collaborative else np.zeros_like(content)
    cf_z = np.where(cold[None, :], params.cold_cf * cf_z, cf_z).astype(np.float32)
    content_z = standardize(content)
    trend_z = standardize(np.log1p(np.maximum(trending, 0)).astype(np.float32)[None, :])
    w_content = history_weight(
        params.content, params.content_slope, positives, params.median_history
    )
    w_trend = history_weight(
        params.trending, params.trending_slope, positives, params.median_history
    )
    # A reader with no history has only trending to go on, whatever its learned weight;
    # a whisper of trending breaks the ties of everyone else.
    w_trend = np.where(positives > 0, w_trend, 1.0).astype(np.float32)
    scores = cf_z + w_content[:, None] * content_z + (w_trend[:, None] + TIE_BREAK) * trend_z
    knn_z = w_knn = None
    if itemknn is not None and params.itemknn != 0:
        knn_z = standardize_over(itemknn, ~cold)
        w_knn = history_weight(
            params.itemknn, params.itemknn_slope, positives, params.median_history
        )
        scores = scores + w_knn[:, None] * knn_z
    if follow is not None and params.follow:
        # One weight whatever the history: a follow speaks as loudly on the first day.
        scores = scores + np.float32(params.follow) * standardize(follow)
    signals = Signals(
        cf=cf_z,
        content=content_z,
        trending=trend_z[0],
        content_weight=w_content,
        trending_weight=w_trend,
        itemknn=knn_z,
        itemknn_weight=w_knn,
    )
    return scores.astype(np.float32), signals


def content_scores(profiles: sparse.csr_matrix, candidate_text: sparse.csr_matrix) -> FloatArray:
    """(n_users, n_candidates) cosine of reader profiles and candidate text vectors."""
    scores: FloatArray = np.asarray((profiles @ candidate_text.T).toarray(), dtype=np.float32)
    return scores
