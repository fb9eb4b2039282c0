"""A Redis key one process holds while it works (the trainer's ``pf:train:lock``).

The holder renews the key from a thread, so renewal goes on while the event loop is busy
in a long numpy/ALS call. When the holder dies (kill -9, OOM) renewal stops and the key
expires ``ttl_s`` later: the next trainer waits that long, not for ever.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from types import TracebackType

import redis

from paperfeed.settings import Settings
from paperfeed.store.client import resolve_redis_url

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def sync_client(settings: Settings) -> redis.Redis:
    url = resolve_redis_url(settings)
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(url, decode_responses=True)  # type: ignore[return-value]
    return redis.Redis.from_url(url, decode_responses=True)


class Lease:
    def __init__(self, settings: Settings, key: str, ttl_s: float) -> None:
        self.key = key
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.token = f"{os.getpid()}:{secrets.token_hex(8)}"
        self.held = False
        self._client = sync_client(settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease {key}", daemon=True)

    def acquire(self) -> bool:
        self.held = bool(self._client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        if self.held:
            self._thread.start()
        return self.held

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                    log.error("lease lost", extra={"key": self.key})
                    return
            except redis.RedisError as exc:
                log.warning("lease renewal failed", extra={"key": self.key, "error": repr(exc)})

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.held:
            try:
                self._client.eval(_RELEASE, 1, self.key, self.token)
            except redis.RedisError as exc:  # it expires by itself
                log.warning("lease release failed", extra={"key": self.key, "error": repr(exc)})
        self.held = False
        self._client.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
