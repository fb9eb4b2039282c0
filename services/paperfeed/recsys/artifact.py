"""The serving artifact: a catalog index built once, by the worker, for every api process.

Every api process used to build its ``CatalogIndex`` itself: tokenise every paper's text
under the model's features, count the search index's words, fit the topics, borrow
factors for cold papers (3.3 s of CPU at 20,000 papers, 26 s at 50,000, each time a
model is published, in every process). The worker now builds it once (``build``) for
the current (model version, catalog version) and publishes its arrays in Redis
(``ArtifactStore.publish``); an api process loads them (``ArtifactStore.load``) and
makes the index from them with no tokenising, no k-means and no search-index build.

Format (``FORMAT``): a header (``Header``, msgspec JSON in ``pf:{artifact}:<id>:header``)
names every array with its dtype, shape and offset into one byte string, the body,
which is cut into chunks of at most ``CHUNK_BYTES`` (``pf:{artifact}:<id>:<n>``). Arrays
are numbers only (dtypes checked against ``DTYPES``: no object arrays, nothing that
could unpickle); lists of strings and the small dictionaries (titles, ids, the search's
titles and authors, the author index, aliases, the topics' names) are msgpack in
``uint8`` arrays. Each array starts at a multiple of 64 bytes, so that the loaded body
is one buffer and every array a view of it (no copy beyond joining the chunks).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from scipy import sparse

from paperfeed.recsys.affinity import Affinity
from paperfeed.recsys.authors import AuthorIndex, AuthorName
from paperfeed.recsys.content import TextFeatures
from paperfeed.recsys.index import (
    CatalogIndex,
    CatalogPaper,
    build_index,
    decode_catalog_paper,
)
from paperfeed.recsys.model import RecModel
from paperfeed.recsys.search import SearchIndex
from paperfeed.recsys.topics import Topics
from paperfeed.store import client, keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)

FORMAT = 2
CHUNK_BYTES = 16 << 20
"""A chunk's size: small enough that one SET or GET never holds Redis for long (about
10 ms for 16 MiB on loopback), large enough that a 200 MB artifact is a dozen values."""
ALIGN = 64
DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "|u1", "|b1"})
GRACE_S = 120.0
"""An artifact replaced by a newer one stays this long (processes loading it finish; one
that has not moved within ``model_poll_s`` plus a load would build its index itself)."""
BUILDER_TTL_S = 30
"""The worker renews ``pf:{artifact}:builder`` every time it checks the versions (every
``CHECK_S``): gone this long, api processes no longer wait for it."""
CHECK_S = 0.5
"""How often the worker compares the artifact's versions with the current ones (two
GETs): a catalog change or a model reaches the artifact within this, plus the build."""


class ArrayEntry(msgspec.Struct, array_like=True):
    name: str
    dtype: str
    shape: list[int]
    offset: int


class Header(msgspec.Struct, kw_only=True):
    format: int = FORMAT
    id: str
    model_version: str | None
    catalog_version: str
    papers: int
    built_at: float
    build_seconds: float
    size: int
    """Bytes of the body (every chunk joined)."""
    chunks: int
    arrays: list[ArrayEntry]
    text_shape: tuple[int, int]
    by_term_shape: tuple[int, int]
    centres_shape: tuple[int, int]
    topics_fitted_on: int
    search_average_length: float


_encode_json = msgspec.json.Encoder().encode
_decode_header = msgspec.json.Decoder(Header).decode
_msgpack = msgspec.msgpack.Encoder()
_strings = msgspec.msgpack.Decoder(list[str])
_by_title = msgspec.msgpack.Decoder(dict[str, int])
_by_author = msgspec.msgpack.Decoder(dict[str, list[int]])
_authors = msgspec.msgpack.Decoder(dict[str, list[tuple[int, str]]])
_aliases = msgspec.msgpack.Decoder(dict[str, str])
_names = msgspec.msgpack.Decoder(list[tuple[str, str]])


def _packed(value: object) -> npt.NDArray[np.uint8]:
    return np.frombuffer(_msgpack.encode(value), dtype=np.uint8)


def _csr(prefix: str, matrix: sparse.spmatrix) -> dict[str, npt.NDArray[Any]]:
    return {
        f"{prefix}_data": matrix.data,
        f"{prefix}_indices": matrix.indices,
        f"{prefix}_indptr": matrix.indptr,
    }


def index_arrays(index: CatalogIndex) -> dict[str, npt.NDArray[Any]]:
    """Everything of ``index`` that is not derived in a few milliseconds, as arrays."""
    search, topics = index.search, index.topics
    arrays: dict[str, npt.NDArray[Any]] = {
        "ids": _packed(index.ids),
        "titles": _packed(index.titles),
        "aliases": _packed(index.aliases),
        "dates": index.dates,
        "text_keys": index.text_keys,
        **_csr("text", index.text),
        **_csr("by_term", index.newest_by_term),
        "cold": index.cold,
        "model_rows": index.model_rows,
        "topics_of_paper": topics.of_paper,
        "topics_names": _packed(topics.names),
        **_csr("centres", topics.centres),
        **_csr("search_counts", search.counts),
        **_csr("search_postings", search.postings),
        "search_lengths": search.lengths,
        "search_idf": search.idf,
        "search_by_title": _packed(search.by_title),
        "search_by_author": _packed(search.by_author),
        "authors": _packed(index.authors.by_key),
        # The follow affinity (``recsys.affinity``): papers' names, one person's names.
        **_csr("affinity_papers", index.affinity.papers),
        **_csr("affinity_same", index.affinity.same),
        "affinity_names": _packed([list(name) for name in index.affinity.names]),
    }
    if index.factors is not None:
        arrays["factors"] = index.factors
    if index.model is None:  # before any model: the features fitted on the catalog
        features = index.features.to_arrays()
        arrays["text_kind"] = _packed(index.features.kind)
        arrays["text_vocabulary"] = features["text_vocabulary"]
        arrays["text_idf"] = features["text_idf"]
    return arrays


def encode(
    index: CatalogIndex, artifact_id: str, build_seconds: float
) -> tuple[Header, list[bytes]]:
    """The header and the body's chunks of ``index``."""
    entries: list[ArrayEntry] = []
    parts: list[bytes] = []
    offset = 0
    for name, array in index_arrays(index).items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype.str not in DTYPES:
            raise TypeError(f"array {name} has dtype {dtype.str}, not one of {sorted(DTYPES)}")
        raw = array.astype(dtype, copy=False).tobytes()
        entries.append(ArrayEntry(name, dtype.str, list(array.shape), offset))
        padding = -len(raw) % ALIGN
        parts.append(raw + b"\0" * padding)
        offset += len(raw) + padding
    body = b"".join(parts)
    chunks = [body[at : at + CHUNK_BYTES] for at in range(0, len(body), CHUNK_BYTES)]
    header = Header(
        id=artifact_id,
        model_version=index.model_version,
        catalog_version=index.catalog_version,
        papers=len(index),
        built_at=time.time(),
        build_seconds=round(build_seconds, 3),
        size=len(body),
        chunks=len(chunks),
        arrays=entries,
        text_shape=(int(index.text.shape[0]), int(index.text.shape[1])),
        by_term_shape=(int(index.newest_by_term.shape[0]), int(index.newest_by_term.shape[1])),
        centres_shape=(int(index.topics.centres.shape[0]), int(index.topics.centres.shape[1])),
        topics_fitted_on=int(index.topics.fitted_on),
        search_average_length=float(index.search.average_length),
    )
    return header, chunks


def arrays_of(header: Header, body: bytearray) -> dict[str, npt.NDArray[Any]]:
    """Views of ``body`` (writable: numba's kernels compile for writable arrays) by name;
    ValueError for a header that does not fit the body."""
    if header.format != FORMAT:
        raise ValueError(f"artifact format {header.format}, this version reads {FORMAT}")
    if len(body) != header.size:
        raise ValueError(f"artifact body has {len(body)} bytes, its header says {header.size}")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for entry in header.arrays:
        if entry.dtype not in DTYPES or any(d < 0 for d in entry.shape):
            raise ValueError(f"artifact array {entry.name}: {entry.dtype} {entry.shape}")
        dtype = np.dtype(entry.dtype)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.offset < 0 or entry.offset + count * dtype.itemsize > len(body):
            raise ValueError(f"artifact array {entry.name} lies beyond the body")
        flat = np.frombuffer(body, dtype=dtype, count=count, offset=entry.offset)
        arrays[entry.name] = flat.reshape(entry.shape)
    return arrays


def decode(header: Header, body: bytearray, model: RecModel | None) -> CatalogIndex:
    """The catalog index of an artifact (``model``: the model of
    ``header.model_version``, loaded by the caller). No text is tokenised, nothing is
    fitted: the arrays are views of ``body``; what is derived (positions, the newest
    order, the pool's factors) takes milliseconds."""
    if (model.version if model else None) != header.model_version:
        raise ValueError(f"artifact of model {header.model_version}, given {model}")
    a = arrays_of(header, body)

    def csr(prefix: str, shape: tuple[int, int]) -> sparse.csr_matrix:
        return sparse.csr_matrix(
            (a[f"{prefix}_data"], a[f"{prefix}_indices"], a[f"{prefix}_indptr"]), shape=shape
        )

    ids = _strings.decode(a["ids"].tobytes())
    n = len(ids)
    features = (
        model.text
        if model is not None
        else TextFeatures.from_arrays(
            {
                "text_kind": np.array(msgspec.msgpack.decode(a["text_kind"].tobytes())),
                "text_vocabulary": a["text_vocabulary"],
                "text_idf": a["text_idf"],
            }
        )
    )
    if header.text_shape != (n, features.terms):
        raise ValueError("artifact text rows do not match its papers and features")
    counts = csr("search_counts", (n, int(a["search_idf"].shape[0])))
    postings = sparse.csc_matrix(
        (a["search_postings_data"], a["search_postings_indices"], a["search_postings_indptr"]),
        shape=counts.shape,
    )
    search = SearchIndex(
        counts=counts,
        postings=postings,
        lengths=a["search_lengths"],
        average_length=header.search_average_length,
        idf=a["search_idf"],
        by_title=_by_title.decode(a["search_by_title"].tobytes()),
        by_author=_by_author.decode(a["search_by_author"].tobytes()),
    )
    topics = Topics(
        of_paper=a["topics_of_paper"],
        names=_strings.decode(a["topics_names"].tobytes()),
        centres=csr("centres", header.centres_shape),
        fitted_on=header.topics_fitted_on,
    )
    factors = a.get("factors")
    if model is not None and (factors is None or factors.shape[0] != n):
        raise ValueError("artifact factors do not match its papers")
    return CatalogIndex(
        ids=ids,
        titles=_strings.decode(a["titles"].tobytes()),
        dates=a["dates"],
        text_keys=a["text_keys"],
        features=features,
        text=csr("text", header.text_shape),
        model=model,
        factors=factors,
        cold=a["cold"],
        model_rows=a["model_rows"],
        catalog_version=header.catalog_version,
        aliases=_aliases.decode(a["aliases"].tobytes()),
        topics=topics,
        search=search,
        authors=AuthorIndex.from_keys(
            {k: [tuple(e) for e in v] for k, v in _authors.decode(a["authors"].tobytes()).items()}  # type: ignore[misc]
        ),
        newest_by_term=csr("by_term", header.by_term_shape),
        affinity=_affinity(a, csr, n, topics),
    )


def _affinity(
    a: dict[str, npt.NDArray[Any]],
    csr: Callable[[str, tuple[int, int]], sparse.csr_matrix],
    n: int,
    topics: Topics,
) -> Affinity:
    names = [AuthorName(key, given) for key, given in _names.decode(a["affinity_names"].tobytes())]
    by_key: dict[str, list[int]] = {}
    for col, name in enumerate(names):
        by_key.setdefault(name.key, []).append(col)
    return Affinity(
        papers=csr("affinity_papers", (n, len(names))),
        same=csr("affinity_same", (len(names), len(names))),
        names=names,
        by_key=by_key,
        topic_of=np.asarray(topics.of_paper, np.int64),
        n_topics=len(topics.names),
    )


def artifact_id(model_version: str | None, catalog_version: str) -> str:
    """Names its versions (for people reading Redis) and is new at each build."""
    return f"{model_version or 'none'}.c{catalog_version}.{secrets.token_hex(3)}"


class ArtifactStore:
    """Artifacts in Redis: publish (the worker), find and load (api processes), prune."""

    def __init__(self, redis: RedisClient) -> None:
        self.redis = redis

    async def current(self) -> Header | None:
        """The header of the current artifact (None: none yet, or unreadable)."""
        current = await self.redis.get(keys.ARTIFACT_CURRENT)
        if not current:
            return None
        raw = await self.redis.get(keys.artifact_header(str(current)))
        if not raw:
            return None
        try:
            return _decode_header(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("unreadable serving artifact header", extra={"artifact": current})
            return None

    async def builder_alive(self) -> bool:
        return bool(await self.redis.exists(keys.ARTIFACT_BUILDER))

    async def mark_builder(self) -> None:
        await self.redis.set(keys.ARTIFACT_BUILDER, f"{time.time():.3f}", ex=BUILDER_TTL_S)

    async def body(self, header: Header) -> bytearray:
        """The body of ``header``'s artifact, its chunks read in one pipeline into one
        buffer; LookupError when a chunk is gone (pruned meanwhile)."""
        raw_client = client.bytes_client(self.redis)
        try:
            async with raw_client.pipeline(transaction=False) as pipe:
                for n in range(header.chunks):
                    pipe.get(keys.artifact_chunk(header.id, n))
                chunks = await pipe.execute()
        finally:
            await raw_client.aclose()
        body = bytearray(header.size)
        at = 0
        for n, chunk in enumerate(chunks):
            if not isinstance(chunk, bytes):
                raise LookupError(f"artifact {header.id} lost its chunk {n}")
            body[at : at + len(chunk)] = chunk
            at += len(chunk)
        if at != header.size:
            raise ValueError(f"artifact {header.id} has {at} bytes, its header says {header.size}")
        return body

    async def load(
        self,
        header: Header,
        model: RecModel | None,
        offload: Callable[..., Awaitable[CatalogIndex]],
    ) -> CatalogIndex:
        """The catalog index of ``header``'s artifact, decoded by ``offload`` (off the
        event loop)."""
        body = await self.body(header)
        return await offload(decode, header, body, model)

    async def publish(self, header: Header, chunks: Sequence[bytes]) -> None:
        """Store the chunks, then the header, then point every api process at it; prune
        what was replaced more than ``GRACE_S`` ago."""
        for n, chunk in enumerate(chunks):
            # One chunk a request: a pipeline would hold a whole body in the client's
            # buffers at once.
            await self.redis.set(keys.artifact_chunk(header.id, n), chunk)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.artifact_header(header.id), _encode_json(header))
            pipe.zadd(keys.ARTIFACT_VERSIONS, {header.id: time.time()})
            pipe.set(keys.ARTIFACT_CURRENT, header.id)
            await pipe.execute()
        await self.prune()
        log.info(
            "serving artifact published",
            extra={
                "artifact": header.id,
                "model": header.model_version,
                "catalog": header.catalog_version,
                "papers": header.papers,
                "mbytes": round(header.size / 2**20, 1),
                "build_seconds": header.build_seconds,
            },
        )

    async def prune(self, now: float | None = None) -> list[str]:
        """Drop every artifact replaced by a newer one more than ``GRACE_S`` ago (never
        the current one)."""
        now = time.time() if now is None else now
        current = await self.redis.get(keys.ARTIFACT_CURRENT)
        scored = await self.redis.zrange(keys.ARTIFACT_VERSIONS, 0, -1, withscores=True)
        published = [(str(artifact), float(at)) for artifact, at in scored]  # type: ignore[str-unpack]
        dropped: list[str] = []
        for (artifact, _), (_, replaced_at) in itertools.pairwise(published):
            if artifact == current or now - replaced_at <= GRACE_S:
                continue
            raw = await self.redis.get(keys.artifact_header(artifact))
            chunks = 0
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                chunks = _decode_header(raw).chunks if raw else 0
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(
                    keys.artifact_header(artifact),
                    *(keys.artifact_chunk(artifact, n) for n in range(chunks)),
                )
                pipe.zrem(keys.ARTIFACT_VERSIONS, artifact)
                await pipe.execute()
            dropped.append(artifact)
        return dropped


async def read_catalog(
    redis: RedisClient, offload: Callable[..., Awaitable[list[CatalogPaper]]]
) -> tuple[list[CatalogPaper], dict[str, str]]:
    """Every catalogued paper in id order (decoded by ``offload``: abstracts make it
    megabytes) and the aliases of merged papers."""
    raws: list[str] = []
    cursor = 0
    while True:
        cursor, chunk = await redis.hscan(keys.PAPERS, cursor, count=2_000)
        assert isinstance(chunk, dict)
        raws.extend(str(raw) for raw in chunk.values())
        if cursor == 0:
            break
    papers = await offload(lambda: sorted(map(decode_catalog_paper, raws), key=lambda p: p.id))
    raw_aliases = await redis.hgetall(keys.PAPERS_ALIAS)
    return papers, {str(old): str(new) for old, new in raw_aliases.items()}


def build(
    papers: Sequence[CatalogPaper],
    model: RecModel | None,
    catalog_version: str,
    previous: CatalogIndex | None,
    aliases: dict[str, str],
) -> tuple[CatalogIndex, Header, list[bytes]]:
    """The index (reusing ``previous``'s rows as an api process would) and its artifact."""
    started = time.perf_counter()
    index = build_index(papers, model, catalog_version, previous, aliases)
    header, chunks = encode(
        index, artifact_id(index.model_version, catalog_version), time.perf_counter() - started
    )
    return index, header, chunks
