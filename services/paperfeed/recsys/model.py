"""A trained model: what the feed needs to rank, as arrays that save without pickles."""

from __future__ import annotations

import functools
import io
import logging
import os
import secrets
import time
from collections.abc import Callable

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import threadpool_limits

from paperfeed.recsys.content import ContentEncoder, FloatArray, fit_projection, l2_normalize
from paperfeed.recsys.ranker import (
    BlendParams,
    Signals,
    blend,
    content_profiles,
    effective_item_factors,
)

log = logging.getLogger(__name__)


class AlsParams(msgspec.Struct, frozen=True):
    factors: int = 256
    regularization: float = 20.0
    alpha: float = 80.0
    iterations: int = 15
    seed: int = 0


class ModelMeta(msgspec.Struct, kw_only=True):
    version: str
    trained_at: float
    als: AlsParams
    blend: BlendParams
    n_users: int = 0
    n_items: int = 0
    n_interactions: int = 0
    metrics: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Held-out metrics by model (``candidate``, ``popularity``, ``current``)."""
    train_seconds: float = 0.0


def new_als(params: AlsParams) -> object:
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit checks the BLAS thread count when a model is made; it is 1 where we use it.
    with threadpool_limits(limits=1, user_api="blas"):
        return AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=1.0,  # confidences are scaled by ``matrix.confidence``
            iterations=params.iterations,
            random_state=params.seed,
            num_threads=0,
        )


def fit_als(
    confidences: sparse.csr_matrix,
    params: AlsParams,
    progress: Callable[[int], None] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(user factors (n_users, k), item factors (n_items, k)) float32.

    BLAS is held to one thread: implicit parallelises itself, and a threaded BLAS
    under it is many times slower.
    """
    model = new_als(params)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    callback = (lambda it, _elapsed, _loss: progress(it)) if progress else None
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(confidences, show_progress=False, callback=callback)  # type: ignore[attr-defined]
    users = np.asarray(model.user_factors, dtype=np.float32)  # type: ignore[attr-defined]
    items = np.asarray(model.item_factors, dtype=np.float32)  # type: ignore[attr-defined]
    if not (np.all(np.isfinite(users)) and np.all(np.isfinite(items))):
        raise FloatingPointError("ALS produced NaN or inf factors")
    return users, items


class RecModel:
    """Item side of the recommender, ready to fold readers in and rank candidates."""

    def __init__(
        self,
        meta: ModelMeta,
        item_ids: list[str],
        item_factors: FloatArray,
        item_content: FloatArray,
        item_counts: npt.NDArray[np.float64],
        encoder: ContentEncoder,
        projection: FloatArray,
    ) -> None:
        self.meta = meta
        self.item_ids = item_ids
        self.index = {pid: i for i, pid in enumerate(item_ids)}
        self.item_factors = item_factors
        """(n_items, k) float32: effective factors (own and projected, see ranker)."""
        self.item_content = item_content
        """(n_items, dims) float32, L2-normalised text vectors."""
        self.item_counts = item_counts
        """(n_items,) interactions each paper had in training."""
        self.encoder = encoder
        self.projection = projection
        """(dims, k) float32: text vector -> factors."""
        self._als = new_als(meta.als)
        self._als.item_factors = item_factors  # type: ignore[attr-defined]

    @property
    def version(self) -> str:
        return self.meta.version

    @functools.cached_property
    def unit_factors(self) -> FloatArray:
        """(n_items, k) item factors scaled to unit length (cosine similarity)."""
        return l2_normalize(self.item_factors)

    def fold_in(self, user_items: sparse.csr_matrix) -> FloatArray:
        """(n_users, k) factors of readers from their confidence rows (n_users, n_items)."""
        if user_items.shape[0] == 0:
            return np.zeros((0, self.meta.als.factors), dtype=np.float32)
        with threadpool_limits(limits=1, user_api="blas"):
            vectors = self._als.recalculate_user(  # type: ignore[attr-defined]
                np.arange(user_items.shape[0]), user_items.astype(np.float32)
            )
        return np.asarray(vectors, dtype=np.float32).reshape(user_items.shape[0], -1)

    def refresh_users(
        self, user_items: sparse.csr_matrix, start: FloatArray, sweeps: int = 2
    ) -> FloatArray:
        """Readers' vectors for all of ``user_items`` (n_users, n_items), fast.

        The same least squares as ``fold_in``, solved by implicit's conjugate-gradient
        ALS step warm-started from ``start`` (their factors from training): what one
        more half-iteration of training would give, at a fraction of a Cholesky
        solve per reader.
        """
        vectors = np.ascontiguousarray(start, dtype=np.float32).copy()
        conf = user_items.astype(np.float32).tocsr()
        with threadpool_limits(limits=1, user_api="blas"):
            for _ in range(sweeps):
                self._als.solver(  # type: ignore[attr-defined]
                    conf, vectors, self.item_factors, self.meta.als.regularization, num_threads=0
                )
        if not np.all(np.isfinite(vectors)):
            raise FloatingPointError("reader vectors have NaN or inf")
        return vectors

    def text_vectors(self, texts: list[str]) -> tuple[FloatArray, FloatArray]:
        """(content vectors, projected factors) of papers the model has not seen."""
        content = self.encoder.encode(texts)
        return content, (content @ self.projection).astype(np.float32)

    def rank(
        self,
        user_items: sparse.csr_matrix,
        candidate_factors: FloatArray,
        candidate_content: FloatArray,
        candidate_trending: FloatArray,
        user_vectors: FloatArray | None = None,
    ) -> tuple[FloatArray, Signals]:
        """Production scores (n_users, n_candidates) of candidates for readers.

        ``user_items`` (n_users, n_items) confidence rows; ``user_vectors`` skips the
        fold-in when the readers' vectors are already known.
        """
        vectors = self.fold_in(user_items) if user_vectors is None else user_vectors
        profiles = content_profiles(self.item_content, user_items)
        positives = np.asarray((user_items > 0).sum(axis=1), dtype=np.float64).ravel()
        return blend(
            vectors,
            profiles,
            positives,
            candidate_factors,
            candidate_content,
            candidate_trending,
            self.meta.blend,
        )

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "item_ids": np.array(self.item_ids, dtype=np.str_),
            "item_factors": self.item_factors,
            "item_content": self.item_content,
            "item_counts": self.item_counts,
            "projection": self.projection,
            **self.encoder.to_arrays(),
        }
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, meta: ModelMeta, blob: bytes) -> RecModel:
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
        return cls(
            meta,
            [str(pid) for pid in loaded["item_ids"]],
            loaded["item_factors"].astype(np.float32),
            loaded["item_content"].astype(np.float32),
            loaded["item_counts"].astype(np.float64),
            ContentEncoder.from_arrays(loaded),
            loaded["projection"].astype(np.float32),
        )


def build_model(
    confidences: sparse.csr_matrix,
    item_ids: list[str],
    item_texts: list[str],
    als: AlsParams,
    blend_params: BlendParams,
    content_dims: int = 128,
    encoder: ContentEncoder | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> tuple[RecModel, FloatArray]:
    """Train everything a model needs; returns it and the users' ALS factors.

    ``confidences`` (n_users, n_items) float32 from ``matrix.confidence``; ``item_ids``
    and ``item_texts`` (n_items) name and describe its columns.
    """
    started = time.perf_counter()
    encoder = encoder or ContentEncoder.fit(item_texts, dims=content_dims, seed=als.seed)
    item_content = encoder.encode(item_texts)
    log.info("content vectors ready", extra={"seconds": round(time.perf_counter() - started, 1)})
    if progress:
        progress("content", 1)
    user_factors, als_items = fit_als(
        confidences, als, (lambda it: progress("als", it)) if progress else None
    )
    counts = np.asarray((confidences > 0).sum(axis=0), dtype=np.float64).ravel()
    trust = counts / (counts + blend_params.shrink)
    projection = fit_projection(item_content, als_items, trust, blend_params.ridge)
    projected = (item_content @ projection).astype(np.float32)
    factors = effective_item_factors(als_items, projected, counts, blend_params.shrink)
    meta = ModelMeta(
        version=time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3),
        trained_at=time.time(),
        als=als,
        blend=blend_params,
        n_users=int(confidences.shape[0]),
        n_items=int(confidences.shape[1]),
        n_interactions=int(confidences.nnz),
        train_seconds=time.perf_counter() - started,
    )
    model = RecModel(meta, item_ids, factors, item_content, counts, encoder, projection)
    return model, user_factors
