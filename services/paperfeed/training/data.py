"""The training data: every reader's per-paper records, read from Redis.

Reading millions of records is a large part of a training, and between two trainings
most readers did nothing. The trainer keeps what it read (``CACHE_FILE`` in its data
directory, tagged with the deployment's id in Redis so that it never mixes two
Redis): the next training re-reads only readers active since (``pf:users`` holds each
install's last activity, moved by every accepted event) and takes the others' rows from
the file. Installs gone from ``pf:users`` (erased) are left out; papers gone from the
catalog are dropped.

Each reader's event count is read just before their records (and kept in the file with
their row): the vectors a training publishes carry it, and a vector whose reader's
count moved since (an event during the training) is folded in afresh by the feed.

Each cell has two times: when the reader first showed interest, as their client said
(``first_at``: the order of a reader's own papers), and when this service received the
event that made them like it (``received_at``: what a model learned from, and so what is
news to it; an offline queue or an imported history sends events days after their
``ts``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.catalog.papers import Paper
from paperfeed.events import DISMISSED, confidence, record_table
from paperfeed.recsys.content import paper_text
from paperfeed.recsys.matrix import DISMISS_WEIGHT, Indexer
from paperfeed.store import keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)

USERS_CHUNK = 500
CACHE_FILE = "training-data.npz"
CACHE_MARGIN_S = 300.0
"""Readers active this long before the last read are read again (clock skew between
api hosts and the trainer, events in flight while it read)."""

Progress = Callable[[str, int, int], None]
FloatArray64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Interactions(msgspec.Struct):
    user_ids: list[str]
    item_ids: list[str]
    item_texts: list[str]
    weights: sparse.csr_matrix
    """(n_users, n_items) float32: event confidence, -1 for dismissed papers."""
    first_at: sparse.csr_matrix
    """The same cells: when each was first liked, as the client said (unix seconds)."""
    received_at: sparse.csr_matrix
    """The same cells: when the service received the event that made the reader like
    it (unix seconds, to the second; a record kept before this was recorded: its
    ``first_at``)."""
    read_at: float = 0.0
    """When the reading began (the time the readers' vectors are stamped with)."""
    user_events: list[int] = msgspec.field(default_factory=list)
    """Each reader's event count, read before their records (``user_ids`` order)."""
    item_authors: list[list[str]] = msgspec.field(default_factory=list)
    """Each paper's authors as the catalog writes them (``item_ids`` order): the
    trainer learns the follow affinity's weight from them (``recsys.affinity``)."""

    @property
    def data_until(self) -> float:
        """The newest liked cell by the time it was received: a model learned from
        everything received until then (the gate's cut-off for the next training)."""
        liked = self.weights.data > 0
        return float(self.received_at.data[liked].max()) if liked.any() else 0.0


async def read_interactions(
    redis: RedisClient, progress: Progress | None = None, cache_dir: Path | None = None
) -> Interactions:
    """Every reader's per-paper records, over the catalog's papers (through the cache in
    ``cache_dir`` when given)."""
    catalog: dict[str, str] = {}
    authors_of: dict[str, list[str]] = {}
    cursor = 0
    decode = msgspec.json.Decoder(Paper).decode
    while True:
        cursor, chunk = await redis.hscan(keys.PAPERS, cursor, count=5_000)
        assert isinstance(chunk, dict)
        for paper_id, raw in chunk.items():
            paper = decode(raw)
            catalog[str(paper_id)] = paper_text(paper.title, paper.abstract)
            authors_of[str(paper_id)] = list(paper.authors)
        if cursor == 0:
            break
    # Papers in id order, not in the scan's: the scan follows the Redis server's hash
    # seed, and the same data must give the same model after a Redis restart.
    item_index = Indexer()
    texts: list[str] = []
    for paper_id in sorted(catalog):
        item_index.add(paper_id)
        texts.append(catalog[paper_id])
    # Records kept under an id merged into another (a demo slug, now its arXiv id) count
    # for that paper's column.
    columns = dict(item_index.index)
    for old, new in (await redis.hgetall(keys.PAPERS_ALIAS)).items():
        if str(new) in columns and str(old) not in columns:
            columns[str(old)] = columns[str(new)]
    deployment = await deployment_id(redis)
    read_at = time.time()
    scored = await redis.zrange(keys.USERS, 0, -1, withscores=True)
    active = [(str(user), float(score)) for user, score in scored]  # type: ignore[str-unpack]
    cached = load_cache(cache_dir, deployment) if cache_dir is not None else None
    reuse: list[str] = []
    to_read: list[str] = []
    for user_id, last_active in active:
        if (
            cached is not None
            and user_id in cached.rows
            and last_active < cached.read_at - CACHE_MARGIN_S
        ):
            reuse.append(user_id)
        else:
            to_read.append(user_id)
    readers: list[str] = []
    events: list[int] = []
    parts: list[tuple[IntArray, IntArray, FloatArray64, FloatArray64, FloatArray64]] = []
    if cached is not None and reuse:
        parts.append(cached.rows_of(reuse, columns))
        readers.extend(reuse)
        events.extend(cached.events[cached.rows[user]] for user in reuse)
    for start in range(0, len(to_read), USERS_CHUNK):
        chunk_ids = to_read[start : start + USERS_CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for user_id in chunk_ids:
                # The count first: an event landing between the two replies leaves the
                # count behind the records (the vector is folded again), never ahead.
                # Impressions are not counted: they change no vector (serving.feed).
                pipe.hmget(keys.user_profile(user_id), ["events", "impressions"])
                pipe.hgetall(keys.user_papers(user_id))
            replies = await pipe.execute()
        counts, records = replies[0::2], replies[1::2]
        owners, cells, weights, firsts, received = _cells_of(records, columns)
        present, rows = np.unique(owners, return_inverse=True)
        parts.append((rows + len(readers), cells, weights, firsts, received))
        readers.extend(chunk_ids[i] for i in present)
        events.extend(int(counts[i][0] or 0) - int(counts[i][1] or 0) for i in present)
        if progress:
            progress("read", min(start + USERS_CHUNK, len(to_read)), len(to_read))
    shape = (len(readers), len(item_index))
    rows = np.concatenate([part[0] for part in parts]) if parts else np.zeros(0, np.int64)
    cols = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, np.int64)
    values = np.concatenate([part[2] for part in parts]) if parts else np.zeros(0)
    times = np.concatenate([part[3] for part in parts]) if parts else np.zeros(0)
    arrived = np.concatenate([part[4] for part in parts]) if parts else np.zeros(0)
    keep = values != 0  # impressions alone say nothing yet
    if len(columns) > len(item_index):
        keep &= _strongest_of_each_cell(rows, cols, values, shape[1])
    data = Interactions(
        readers,
        item_index.ids,
        texts,
        _matrix(rows[keep], cols[keep], values[keep], shape),
        _matrix(rows[keep], cols[keep], times[keep], shape, dtype=np.float64),
        _matrix(rows[keep], cols[keep], arrived[keep], shape, dtype=np.float64),
        read_at=read_at,
        user_events=events,
        item_authors=[authors_of[paper_id] for paper_id in item_index.ids],
    )
    log.info(
        "training data read",
        extra={"readers": len(readers), "read": len(to_read), "from_cache": len(reuse)},
    )
    if cache_dir is not None:
        save_cache(cache_dir, deployment, read_at, data)
    return data


async def deployment_id(redis: RedisClient) -> str:
    """This deployment's id (made once, kept in Redis): what a cache belongs to."""
    await redis.set(keys.DEPLOYMENT, secrets.token_hex(8), nx=True)
    return str(await redis.get(keys.DEPLOYMENT))


class Cached:
    """What the last training read: each reader's row, over that training's papers."""

    def __init__(
        self,
        read_at: float,
        users: list[str],
        items: list[str],
        weights: sparse.csr_matrix,
        first_at: sparse.csr_matrix,
        received_at: sparse.csr_matrix,
        events: list[int],
    ) -> None:
        self.read_at = read_at
        self.rows = {user: row for row, user in enumerate(users)}
        self.items = items
        self.weights = weights
        self.first_at = first_at
        self.received_at = received_at
        self.events = events
        """Each reader's event count when their row was read (row order)."""

    def rows_of(
        self, users: list[str], index: dict[str, int]
    ) -> tuple[IntArray, IntArray, FloatArray64, FloatArray64, FloatArray64]:
        """(row, column, weight, first time, receive time) of ``users``' cells, over
        today's papers (rows numbered 0.. in ``users`` order; papers gone from the
        catalog left out)."""
        picked = np.array([self.rows[user] for user in users], dtype=np.int64)
        weights = self.weights[picked].tocoo()
        firsts = self.first_at[picked].tocoo()
        received = self.received_at[picked].tocoo()
        columns = np.array([index.get(item, -1) for item in self.items], dtype=np.int64)[
            weights.col
        ]
        known = columns >= 0
        return (
            weights.row[known].astype(np.int64),
            columns[known],
            weights.data[known].astype(np.float64),
            firsts.data[known].astype(np.float64),
            received.data[known].astype(np.float64),
        )


def load_cache(cache_dir: Path, deployment: str) -> Cached | None:
    path = cache_dir / CACHE_FILE
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if str(arrays["deployment"]) != deployment:
                log.info("training data cache is another deployment's: reading everything")
                return None
            users = _split(arrays["users"])
            items = _split(arrays["items"])
            shape = (len(users), len(items))
            indptr, indices = arrays["indptr"], arrays["indices"]
            weights = sparse.csr_matrix((arrays["weights"], indices, indptr), shape=shape)
            first_at = sparse.csr_matrix((arrays["first_at"], indices, indptr), shape=shape)
            if "received_at" not in arrays:
                log.info("training data cache of an earlier layout: reading everything")
                return None
            received_at = sparse.csr_matrix((arrays["received_at"], indices, indptr), shape=shape)
            events = [int(count) for count in arrays["events"]]
            if len(events) != len(users):
                raise ValueError("one event count a reader")
            return Cached(
                float(arrays["read_at"]), users, items, weights, first_at, received_at, events
            )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        log.warning(
            "training data cache unreadable: reading everything", extra={"error": repr(exc)}
        )
        return None


def save_cache(cache_dir: Path, deployment: str, read_at: float, data: Interactions) -> None:
    """Write what was read (to a temporary file, then renamed: a crash leaves the old)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_dir / f".{CACHE_FILE}.{os.getpid()}.tmp"
        weights, first_at = data.weights, data.first_at
        with open(partial, "wb") as handle:
            np.savez(
                handle,
                deployment=np.array(deployment),
                read_at=np.array(read_at),
                users=_joined(data.user_ids),
                items=_joined(data.item_ids),
                indptr=weights.indptr,
                indices=weights.indices,
                weights=weights.data,
                first_at=first_at.data,
                received_at=data.received_at.data,
                events=np.array(data.user_events, dtype=np.int64),
            )
        os.replace(partial, cache_dir / CACHE_FILE)
    except OSError as exc:
        log.warning("training data cache not written", extra={"error": repr(exc)})


def forget_cached_readers(cache_dir: Path, deployment: str, user_ids: set[str]) -> float | None:
    """The cache of training data rewritten without the rows of ``user_ids`` (erased
    readers); returns the time the cache was read (None: there is no cache)."""
    cached = load_cache(cache_dir, deployment)
    if cached is None:
        return None
    users = list(cached.rows)
    keep = [row for row, user in enumerate(users) if user not in user_ids]
    if len(keep) < len(users):
        save_cache(
            cache_dir,
            deployment,
            cached.read_at,
            Interactions(
                [users[row] for row in keep],
                cached.items,
                [],
                cached.weights[keep],
                cached.first_at[keep],
                cached.received_at[keep],
                user_events=[cached.events[row] for row in keep],
            ),
        )
    return cached.read_at


def _joined(ids: list[str]) -> npt.NDArray[np.uint8]:
    return np.frombuffer("\n".join(ids).encode(), dtype=np.uint8)


def _split(raw: npt.NDArray[np.generic]) -> list[str]:
    text = bytes(np.asarray(raw, dtype=np.uint8)).decode()
    return text.split("\n") if text else []


def _cells_of(
    records: list[dict[str, str]], index: dict[str, int]
) -> tuple[IntArray, IntArray, FloatArray64, FloatArray64, FloatArray64]:
    """(owner, column, weight, first time, receive time) of every record of catalogued
    papers, decoded in one pass (training reads millions)."""
    owners: list[int] = []
    columns: list[int | None] = []
    raws: list[str] = []
    for owner, papers in enumerate(records):
        owners.extend([owner] * len(papers))
        columns.extend(map(index.get, papers.keys()))
        raws.extend(papers.values())
    table = record_table(raws)
    known = np.array([c is not None for c in columns], dtype=bool)
    t, views, clicks, dwell = (table[:, n] for n in (0, 2, 3, 5))
    flags = table[:, 1].astype(np.int64)
    weights = np.where(
        flags & DISMISSED, DISMISS_WEIGHT, confidence(flags, views, clicks, dwell)
    ).astype(np.float64)
    firsts = table[:, 6:11].min(axis=1) if len(table) else np.zeros(0)
    firsts = np.where(np.isfinite(firsts), firsts, t)
    received = firsts + table[:, 11]  # rl: seconds late (events.PackedRecord)
    column_ids = np.array([c if c is not None else -1 for c in columns], dtype=np.int64)
    return (
        np.array(owners, dtype=np.int64)[known],
        column_ids[known],
        weights[known],
        firsts[known],
        received[known],
    )


def _strongest_of_each_cell(
    rows: IntArray, cols: IntArray, values: FloatArray64, n_cols: int
) -> npt.NDArray[np.bool_]:
    """One record per (reader, paper) when a reader has records under two ids of one
    paper (its old id and the one it was merged into): the one of largest weight."""
    cell = rows * n_cols + cols
    order = np.lexsort((-np.abs(values), cell))
    first = np.ones(len(cell), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    keep = np.zeros(len(cell), dtype=bool)
    keep[order[first]] = True
    return keep


def _matrix(
    rows: IntArray,
    cols: IntArray,
    values: FloatArray64,
    shape: tuple[int, int],
    dtype: type[np.floating] = np.float32,
) -> sparse.csr_matrix:
    # One record per (reader, paper): no duplicates to sum, CSR order for both matrices.
    matrix = sparse.csr_matrix(
        (np.asarray(values, dtype=dtype), (np.asarray(rows, dtype=np.int64), np.asarray(cols))),
        shape=shape,
    )
    matrix.sort_indices()
    return matrix
