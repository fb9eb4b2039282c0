"""A trained model: what the feed needs to rank, as arrays that save without pickles."""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse
from threadpoolctl import threadpool_limits

from paperfeed.recsys.content import FloatArray, TextFeatures, TextKind
from paperfeed.recsys.matrix import ConfidenceScale, Scaling
from paperfeed.recsys.ranker import BlendParams


class AlsParams(msgspec.Struct, frozen=True, kw_only=True):
    factors: int = 256
    regularization: float = 20.0
    alpha: float = 80.0
    iterations: int = 15
    scaling: Scaling = "log"
    seed: int = 0


class SearchTrial(msgspec.Struct, frozen=True):
    als: AlsParams
    ndcg: float
    """Validation nDCG@20 of the plain ALS with these parameters."""
    seconds: float


class SearchReport(msgspec.Struct, kw_only=True):
    """The last hyperparameter search: when, what was tried, what won."""

    at: float
    start: AlsParams
    """Where the search started (the deployment's settings then): when the settings
    change, the next training searches again."""
    best: AlsParams
    trials: list[SearchTrial]
    seconds: float
    text: TextKind = "words"
    """The text features chosen with it (by the content signal's validation nDCG)."""
    text_ndcg: dict[str, float] = msgspec.field(default_factory=dict)


class Choices(msgspec.Struct, kw_only=True):
    """What the trainer learned from this deployment's validation data."""

    text: TextKind = "words"
    text_ndcg: dict[str, float] = msgspec.field(default_factory=dict)
    """Validation nDCG@20 of the content signal alone, by text features."""
    blend_ndcg: float = 0.0
    """Validation nDCG@20 of the learned blend ..."""
    cf_ndcg: float = 0.0
    """... and of the collaborative signal alone, on the same readers' candidates."""
    cold_ndcg: dict[str, float] = msgspec.field(default_factory=dict)
    """Validation nDCG@20 among papers held out whole (cold): content alone, blend."""
    tune_readers: int = 0
    tune_cold_papers: int = 0
    search: SearchReport | None = None
    """The search whose parameters this model uses (made now or reused)."""


class ModelMeta(msgspec.Struct, kw_only=True):
    version: str
    trained_at: float
    data_until: float = 0.0
    """Newest interaction this model learned from: later ones are news to it (the gate
    judges on them)."""
    als: AlsParams
    blend: BlendParams
    choices: Choices = msgspec.field(default_factory=Choices)
    n_users: int = 0
    n_items: int = 0
    n_interactions: int = 0
    metrics: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    """Held-out metrics by model (``candidate``, ``popularity``, ``current``)."""
    train_seconds: float = 0.0
    format: int = 1
    """The blob's layout: 1 (no neighbour lists; every model before item-kNN), 2 (the
    item-kNN neighbour lists when ``neighbours`` > 0)."""
    neighbours: int = 0
    """Item-kNN neighbours kept per paper in the blob (0: none, the signal is off)."""


MODEL_FORMAT = 2
"""What ``RecModel.to_bytes`` writes (``ModelMeta.format``)."""


def new_version() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


FEW_READERS = 16
"""Fold-ins of at most this many readers (a request's) run on one thread."""


def new_als(params: AlsParams, threads: int = 0) -> Any:
    """implicit's ALS; ``threads`` 0 uses every core (training), 1 suits one request."""
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit checks the BLAS thread count when a model is made; it is 1 where we use it.
    with threadpool_limits(limits=1, user_api="blas"):
        return AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=1.0,  # confidences are scaled by ``matrix.ConfidenceScale``
            iterations=params.iterations,
            random_state=params.seed,
            num_threads=threads,
        )


def fit_als(
    confidences: sparse.csr_matrix,
    params: AlsParams,
    progress: Callable[[int], None] | None = None,
    iterations: int | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(user factors (n_users, k), item factors (n_items, k)) float32.

    BLAS is held to one thread: implicit parallelises itself, and a threaded BLAS
    under it is many times slower.
    """
    model = new_als(params)
    if iterations is not None:
        model.iterations = iterations
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    callback = (lambda it, _elapsed, _loss: progress(it + 1)) if progress else None
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(confidences, show_progress=False, callback=callback)
    return _checked(model.user_factors, model.item_factors)


def continue_als(
    confidences: sparse.csr_matrix,
    users: FloatArray,
    items: FloatArray,
    params: AlsParams,
    iterations: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[FloatArray, FloatArray]:
    """More ALS sweeps from given factors (a warm start) on ``confidences``.

    Each sweep solves the items, then the readers: the readers' vectors that come out
    are exact for the final item factors (what a fold-in would give).
    """
    model = new_als(params)
    users = np.ascontiguousarray(users, dtype=np.float32).copy()
    items = np.ascontiguousarray(items, dtype=np.float32).copy()
    by_item = confidences.T.tocsr()
    with threadpool_limits(limits=1, user_api="blas"):
        for sweep in range(iterations):
            model.solver(by_item, items, users, params.regularization, num_threads=0)
            model.solver(confidences, users, items, params.regularization, num_threads=0)
            if progress:
                progress(sweep + 1)
    return _checked(users, items)


def _checked(users: Any, items: Any) -> tuple[FloatArray, FloatArray]:
    user_factors = np.asarray(users, dtype=np.float32)
    item_factors = np.asarray(items, dtype=np.float32)
    if not (np.all(np.isfinite(user_factors)) and np.all(np.isfinite(item_factors))):
        raise FloatingPointError("ALS produced NaN or inf factors")
    return user_factors, item_factors


class RecModel:
    """Item side of the recommender, ready to fold readers in and rank candidates."""

    def __init__(
        self,
        meta: ModelMeta,
        item_ids: list[str],
        item_factors: FloatArray,
        item_counts: npt.NDArray[np.float64],
        text: TextFeatures,
        scale: ConfidenceScale,
        neighbours: sparse.csr_matrix | None = None,
    ) -> None:
        self.meta = meta
        self.item_ids = item_ids
        self.index = {pid: i for i, pid in enumerate(item_ids)}
        self.item_factors = item_factors
        """(n_items, k) float32: own factors, or text neighbours' for papers that had no
        interaction in training (``cold``)."""
        self.item_counts = item_counts
        """(n_items,) readers who liked each paper in training."""
        self.text = text
        self.scale = scale
        self.neighbours = neighbours
        """(n_items, n_items) float32 CSR: each paper's item-kNN neighbours and their
        cosines (``recsys.itemknn``), or None: the signal is off."""
        self._als = new_als(meta.als)
        self._als.item_factors = item_factors
        # A request folds in one reader: starting a team of OpenMP threads for it costs
        # more than the solve (milliseconds), so requests use a one-thread solver.
        self._als_one = new_als(meta.als, threads=1)
        self._als_one.item_factors = item_factors
        self._base_inverse: npt.NDArray[np.float64] | None = None
        self._inverse_lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def cold(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.item_counts <= 0)

    def fold_in(self, weights: sparse.csr_matrix) -> FloatArray:
        """(n_users, k) factors of readers from their weight rows (n_users, n_items)."""
        if weights.shape[0] == 0:
            return np.zeros((0, self.meta.als.factors), dtype=np.float32)
        confidences = self.scale(weights)
        users = np.arange(weights.shape[0])
        if weights.shape[0] <= FEW_READERS:
            # The api limits BLAS to one thread once (``api.app``); a context here would
            # re-read the process's libraries at every request.
            vectors = self._als_one.recalculate_user(users, confidences)
        else:
            with threadpool_limits(limits=1, user_api="blas"):
                vectors = self._als.recalculate_user(users, confidences)
        return np.asarray(vectors, dtype=np.float32).reshape(weights.shape[0], -1)

    def fold_in_row(self, items: npt.NDArray[np.int64], weights: FloatArray) -> FloatArray:
        """``fold_in_reader`` of the weight row with ``weights`` (float32, none zero) at
        the model's ``items`` (distinct), without building the sparse row: the same
        confidences (``log`` scaling; ``bm25`` takes the sparse path) and the same solve,
        for a few hundred microseconds less."""
        if self.scale.scaling == "log":
            order = np.argsort(items, kind="stable")
            sorted_items, sorted_weights = items[order], weights[order]
            positive = sorted_weights > 0
            scaled = np.log1p(np.maximum(sorted_weights, 0)).astype(np.float64)
            given = np.where(positive, self.scale.alpha * scaled, -self.scale.alpha)
            given = given.astype(np.float32).astype(np.float64)
            keep = given != 0
            count = int(keep.sum())
            if 0 < count <= self.item_factors.shape[1] // 2:
                return self._woodbury(sorted_items[keep], given[keep])
        row = sparse.csr_matrix(
            (weights, (np.zeros(len(items), dtype=np.int64), items)),
            shape=(1, len(self.item_ids)),
        )
        return self.fold_in_reader(row)

    def fold_in_reader(self, weights: sparse.csr_matrix) -> FloatArray:
        """One reader's vector from their weight row (1, n_items): the least squares of
        ``fold_in``, solved through the Woodbury identity when they have at most
        ``k / 2`` papers.

        The system is ``(YᵀY + λI + Yᵤᵀ D Yᵤ) x = Yᵤᵀ p`` (``D`` each paper's
        confidence beyond 1, ``p`` the positive confidences). With the model's
        ``B⁻¹ = (YᵀY + λI)⁻¹`` computed once and ``Z = Yᵤ B⁻¹``, ``G = Yᵤ Zᵀ``:
        ``x = Zᵀ (p - s)`` where ``(I + D G) s = D G p``: an n x n solve and n·k²
        products, where implicit solves k x k after n rank-one updates (0.5 ms against
        1 ms for 50 papers at k = 256). Same answer to float rounding (a test holds it
        to implicit's)."""
        confidences = self.scale(weights)
        count = confidences.nnz
        if count == 0 or count > self.item_factors.shape[1] // 2:
            solved: FloatArray = self.fold_in(weights)[0]
            return solved
        return self._woodbury(confidences.indices, confidences.data.astype(np.float64))

    def _woodbury(self, items: npt.NDArray[np.int_], given: npt.NDArray[np.float64]) -> FloatArray:
        count = len(items)
        y = self.item_factors[items].astype(np.float64)
        z = y @ self.base_inverse()
        preference = np.where(given > 0, given, 0.0)
        extra = np.abs(given) - 1.0
        gram = y @ z.T
        s = np.linalg.solve(np.eye(count) + extra[:, None] * gram, extra * (gram @ preference))
        vector: FloatArray = ((preference - s) @ z).astype(np.float32)
        return vector

    def base_inverse(self) -> npt.NDArray[np.float64]:
        """``(YᵀY + λI)⁻¹`` (k x k), made once (85 ms for 50,000 papers; an api process
        makes it when it loads the model)."""
        with self._inverse_lock:
            inverse = self._base_inverse
            if inverse is None:
                factors = self.item_factors
                base = (factors.T @ factors).astype(np.float64)
                base[np.diag_indices_from(base)] += self.meta.als.regularization
                inverse = np.linalg.inv(base).astype(np.float64)
                self._base_inverse = inverse
            return inverse

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "item_ids": np.frombuffer("\n".join(self.item_ids).encode(), dtype=np.uint8),
            "item_factors": self.item_factors,
            "item_counts": self.item_counts,
            **self.text.to_arrays(),
            **self.scale.to_arrays(),
        }
        if self.neighbours is not None:
            arrays["knn_indptr"] = self.neighbours.indptr.astype(np.int64)
            arrays["knn_indices"] = self.neighbours.indices.astype(np.int32)
            arrays["knn_data"] = self.neighbours.data.astype(np.float32)
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, meta: ModelMeta, blob: bytes) -> RecModel:
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            loaded = {name: arrays[name] for name in arrays.files}
        ids = bytes(loaded["item_ids"]).decode()
        item_ids = ids.split("\n") if ids else []
        factors = loaded["item_factors"].astype(np.float32)
        counts = loaded["item_counts"].astype(np.float64)
        if factors.shape != (len(item_ids), meta.als.factors) or counts.shape != (len(item_ids),):
            raise ValueError("model arrays do not match its metadata")
        neighbours = None
        if meta.format >= 2 and meta.neighbours > 0:
            # A model of format 1 (before item-kNN) has no lists: it serves without them.
            n = len(item_ids)
            indptr = loaded["knn_indptr"]
            indices, data = loaded["knn_indices"], loaded["knn_data"]
            if indptr.shape != (n + 1,) or indices.shape != data.shape or indptr[-1] != len(data):
                raise ValueError("model neighbour lists do not match its papers")
            if len(indices) and (indices.min() < 0 or indices.max() >= n):
                raise ValueError("model neighbour lists name papers it does not have")
            neighbours = sparse.csr_matrix((data, indices, indptr), shape=(n, n))
        return cls(
            meta,
            item_ids,
            factors,
            counts,
            TextFeatures.from_arrays(loaded),
            ConfidenceScale.from_arrays(meta.als.alpha, meta.als.scaling, loaded),
            neighbours,
        )
