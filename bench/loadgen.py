"""A small keep-alive HTTP/1.1 load generator on raw asyncio streams.

httpx spends more CPU per request than the server does, and client and server share
this machine's cores, so benchmarks drive the api with this instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload


async def connect(url: str) -> Connection:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    return Connection(reader, writer)


Request = tuple[str, str, dict[str, str], bytes]


async def drive(
    url: str,
    make_request: Callable[[int], Request | list[Request]],
    requests: int,
    concurrency: int,
    check: Callable[[int, bytes], None] | None = None,
) -> tuple[float, list[float]]:
    """Send ``requests`` requests on ``concurrency`` connections; (requests/s, latencies).

    ``make_request`` may give a list: those requests are sent one after the other on
    the same connection and count as one (for example an event, then the feed)."""
    latencies: list[float] = []
    counter = iter(range(requests))
    connections = [await connect(url) for _ in range(concurrency)]

    async def worker(conn: Connection) -> None:
        for i in counter:
            made = make_request(i)
            steps = made if isinstance(made, list) else [made]
            started = time.perf_counter()
            for method, path, headers, body in steps:
                status, payload = await conn.request(method, path, headers, body)
                if check:
                    check(status, payload)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.writer.close()
    return requests / elapsed, latencies


async def drive_rate(
    url: str,
    make_request: Callable[[int], Request | list[Request]],
    rate: float,
    duration_s: float,
    connections: int,
) -> tuple[float, list[float]]:
    """Open loop: requests start at ``rate`` a second (evenly spaced) whatever the
    answers do, on up to ``connections`` connections; latency counts from the planned
    start, so queueing shows. Returns (achieved requests/s, latencies). A list of
    requests is sent one after the other; the latency is then the last one's, from when
    the one before it was answered (a feed read right after the reader's event)."""
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await connect(url))
    latencies: list[float] = []
    started = time.perf_counter()
    total = int(rate * duration_s)

    async def one(i: int, planned: float) -> None:
        conn = await pool.get()
        made = make_request(i)
        steps = made if isinstance(made, list) else [made]
        last_started = planned
        for n, (method, path, headers, body) in enumerate(steps):
            if n:
                last_started = time.perf_counter()
            await conn.request(method, path, headers, body)
        latencies.append(time.perf_counter() - last_started)
        pool.put_nowait(conn)

    tasks = []
    for i in range(total):
        planned = started + i / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, planned)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().writer.close()
    return total / elapsed, latencies
