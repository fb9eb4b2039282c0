"""Models and user vectors in Redis: publish, load, prune, and the fold-in cache."""

from __future__ import annotations

import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from paperfeed.errors import InvalidInput
from paperfeed.recsys.content import FloatArray
from paperfeed.recsys.model import ModelMeta, RecModel, SearchReport
from paperfeed.store import client, keys
from paperfeed.store.client import RedisClient

log = logging.getLogger(__name__)
VECTOR_CHUNK = 2_000
DECISIONS_KEPT = 50


class UserVector(msgspec.Struct):
    version: str
    at: float
    """When the records it was computed from were read."""
    factors: str
    """base64 of float32 little-endian."""
    events: int | None = None
    """The reader's event count (``pf:{u:<id>}:profile``'s ``events``), read before
    their records: the vector stands for them while the count is the same. An event
    that arrived after the read (while a feed was ranked, a model trained) changes it,
    and the next feed folds the reader in again. None (written by an older version):
    never used."""

    def array(self) -> FloatArray:
        return np.frombuffer(base64.b64decode(self.factors), dtype="<f4").astype(np.float32)


def encode_vector(version: str, at: float, vector: FloatArray, events: int | None) -> bytes:
    raw = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return msgspec.json.encode(UserVector(version=version, at=at, factors=raw, events=events))


decode_vector = msgspec.json.Decoder(UserVector).decode
_decode_meta = msgspec.json.Decoder(ModelMeta).decode
_decode_search = msgspec.json.Decoder(SearchReport).decode


class Rollback(msgspec.Struct, kw_only=True):
    """An admin made an earlier kept version current (kept with the training decisions,
    ``kind`` tells them apart)."""

    kind: Literal["rollback"] = "rollback"
    at: float
    published: bool = True
    """The version is served from now on (like a published training run's)."""
    version: str
    """The version made current."""
    previous_version: str | None
    """The version it replaced."""
    reason: str


def is_gate_decision(decision: dict[str, Any]) -> bool:
    """A training run's decision (not an admin's rollback)."""
    return bool(decision.get("kind", "training") != "rollback")


class ModelRepository:
    def __init__(self, redis: RedisClient, models_kept: int = 3) -> None:
        self.redis = redis
        self.models_kept = models_kept
        # Only users that still exist: a trainer must not undo an erasure.
        self._set_if_user = redis.register_script(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[2], ARGV[1]) end"
        )

    async def current_version(self) -> str | None:
        version = await self.redis.get(keys.MODEL_CURRENT)
        return str(version) if version else None

    async def meta(self, version: str) -> ModelMeta | None:
        raw = await self.redis.get(keys.model_meta(version))
        if not raw:
            return None
        try:
            return _decode_meta(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("unreadable model metadata", extra={"version": version})
            return None

    async def load(
        self, version: str, offload: Callable[..., Awaitable[RecModel]] | None = None
    ) -> RecModel:
        """The model of ``version`` (decoded by ``offload`` when given, off the event
        loop); raises LookupError when it is gone, ValueError when it is broken."""
        meta = await self.meta(version)
        blob = await self._blob(version)
        if meta is None or blob is None:
            raise LookupError(f"model {version} is not in Redis")
        if offload is not None:
            return await offload(RecModel.from_bytes, meta, blob)
        return RecModel.from_bytes(meta, blob)

    async def _blob(self, version: str) -> bytes | None:
        # The blob is binary: read it with a client that does not decode replies.
        raw_client = client.bytes_client(self.redis)
        try:
            blob = await raw_client.get(keys.model_blob(version))
        finally:
            await raw_client.aclose()
        return blob if isinstance(blob, bytes) else None

    async def publish(
        self,
        model: RecModel,
        user_ids: Sequence[str] = (),
        user_factors: FloatArray | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        read_at: float | None = None,
        user_events: Sequence[int] | None = None,
    ) -> None:
        """Store the model and its users' vectors, then point every api process at it.

        ``read_at`` and ``user_events``: when the training data was read, and each
        user's event count read with their records (``UserVector.events``)."""
        version = model.version
        await self.redis.set(keys.model_blob(version), model.to_bytes())
        await self.redis.set(keys.model_meta(version), msgspec.json.encode(model.meta))
        if user_factors is not None:
            at = model.meta.trained_at if read_at is None else read_at
            await self.store_vectors(version, user_ids, user_factors, at, user_events, progress)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.MODEL_VERSIONS, {version: time.time()})
            pipe.set(keys.MODEL_CURRENT, version)
            await pipe.execute()
        await self.redis.publish(keys.MODEL_CHANNEL, version)
        await self.prune()
        log.info("model published", extra={"version": version, "metrics": model.meta.metrics})

    async def store_vectors(
        self,
        version: str,
        user_ids: Sequence[str],
        factors: FloatArray,
        at: float,
        events: Sequence[int] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        # Scripts queued in a pipeline must be loaded already (on every cluster primary).
        await self.redis.script_load(self._set_if_user.script)
        for start in range(0, len(user_ids), VECTOR_CHUNK):
            async with self.redis.pipeline(transaction=False) as pipe:
                for offset, user_id in enumerate(user_ids[start : start + VECTOR_CHUNK]):
                    count = None if events is None else int(events[start + offset])
                    vector = encode_vector(version, at, factors[start + offset], count)
                    # execute_command: the cluster pipeline blocks .evalsha() but routes
                    # EVALSHA by its keys.
                    pipe.execute_command(
                        "EVALSHA",
                        self._set_if_user.sha,
                        2,
                        keys.user_profile(user_id),
                        keys.user_vector(user_id),
                        vector,
                    )
                await pipe.execute()
            if progress:
                progress("publish", min(start + VECTOR_CHUNK, len(user_ids)), len(user_ids))

    async def request_training(self) -> tuple[bool, bool, float | None]:
        """Ask the worker to train: (newly queued?, training now?, worker heartbeat).

        The worker removes the request it trained for only when that training finished
        (and only if it is unchanged): asked while a training runs, the request is
        renewed, so that another training (with what arrived meanwhile) follows."""
        requested = f"{time.time():.3f} {secrets.token_hex(4)}"  # each request its own
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.TRAIN_REQUESTED, requested, nx=True, ex=86_400)
            pipe.exists(keys.TRAIN_LOCK)
            pipe.get(keys.WORKER_HEARTBEAT)
            queued, running, heartbeat = await pipe.execute()
        if running and not queued:
            queued = await self.redis.set(keys.TRAIN_REQUESTED, requested, ex=86_400)
        return bool(queued), bool(running), float(heartbeat) if heartbeat else None

    async def training(self) -> bool:
        return bool(await self.redis.exists(keys.TRAIN_LOCK))

    async def record_decision(self, decision: msgspec.Struct) -> None:
        """Keep a training run's decision (newest first, the last ``DECISIONS_KEPT``)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.MODEL_DECISIONS, msgspec.json.encode(decision))
            pipe.ltrim(keys.MODEL_DECISIONS, 0, DECISIONS_KEPT - 1)
            await pipe.execute()

    async def rollback(self, version: str | None = None) -> Rollback:
        """Make ``version`` (by default the newest kept version published before the
        current one) current, record it with the decisions and tell every api process.

        Raises InvalidInput (``version``) when that version is not kept, broken, already
        current, or there is no earlier one."""
        current = await self.current_version()
        kept = [str(v) for v in await self.redis.zrevrange(keys.MODEL_VERSIONS, 0, -1)]
        if version is None:
            older = kept[kept.index(current) + 1 :] if current in kept else kept
            if not older:
                raise InvalidInput("version", "no earlier model version is kept")
            version = older[0]
        elif version not in kept:
            raise InvalidInput(
                "version", f"{version!r} is not a kept model version (kept: {', '.join(kept)})"
            )
        if version == current:
            raise InvalidInput("version", f"{version!r} is the current model version already")
        if await self.meta(version) is None or not await self.redis.exists(
            keys.model_blob(version)
        ):
            raise InvalidInput("version", f"model {version!r} is incomplete in Redis")
        await self.redis.set(keys.MODEL_CURRENT, version)
        rollback = Rollback(
            at=time.time(),
            version=version,
            previous_version=current,
            reason=f"rolled back by an admin from {current} to {version}",
        )
        await self.record_decision(rollback)
        await self.redis.publish(keys.MODEL_CHANNEL, version)
        log.warning("model rolled back", extra={"version": version, "previous_version": current})
        return rollback

    async def decisions(self, limit: int = DECISIONS_KEPT) -> list[dict[str, Any]]:
        """The latest decisions, newest first, as JSON objects."""
        raw = await self.redis.lrange(keys.MODEL_DECISIONS, 0, limit - 1)
        return [msgspec.json.decode(item) for item in raw]

    async def last_search(self) -> SearchReport | None:
        raw = await self.redis.get(keys.MODEL_SEARCH)
        if not raw:
            return None
        try:
            return _decode_search(raw)
        except msgspec.DecodeError:  # written by an older version: search again
            return None

    async def record_search(self, report: SearchReport) -> None:
        await self.redis.set(keys.MODEL_SEARCH, msgspec.json.encode(report))

    async def prune(self) -> list[str]:
        """Drop all but the newest ``models_kept`` versions (never the current one)."""
        current = await self.current_version()
        versions = [str(v) for v in await self.redis.zrevrange(keys.MODEL_VERSIONS, 0, -1)]
        dropped = [v for v in versions[self.models_kept :] if v != current]
        for version in dropped:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.model_blob(version), keys.model_meta(version))
                pipe.zrem(keys.MODEL_VERSIONS, version)
                await pipe.execute()
        return dropped

    async def user_vector(self, user_id: str) -> UserVector | None:
        raw = await self.redis.get(keys.user_vector(user_id))
        return decode_vector(raw) if raw else None
