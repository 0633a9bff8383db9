"""Async micro-batching in front of an `Embedder`, for servers with many concurrent callers.

Callers await `embed()`; one collector task drains whatever is queued (up to `max_batch`) and runs
it as one model call on a dedicated thread, so the event loop never blocks on inference. No timer
is needed: while one batch runs, the next one accumulates, so a lone caller pays no waiting and
many callers are coalesced. The queue is bounded (callers wait when it is full), identical texts
in flight share one computation, and an LRU keyed by a content hash spares re-embedding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

from .runtime import Embedder, Mode, Vectors

Vector = npt.NDArray[np.float32]


@dataclass
class BatchingStats:
    """Counters since start; read them, do not write them."""

    requests: int = 0
    cache_hits: int = 0
    batches: int = 0
    embedded: int = 0
    queue_depth: int = 0


@dataclass
class _Job:
    key: bytes
    text: str
    future: asyncio.Future[Vector]


class MicroBatcher:
    """Coalesces concurrent embedding requests into batched model calls.

    Use as an async context manager; it owns its collector task and its inference thread.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_batch: int = 32,
        max_queue: int = 4096,
        cache_size: int = 10_000,
        on_batch: Callable[[int, float, int], None] | None = None,
    ) -> None:
        """`on_batch(size, seconds, queue_depth)` is called after each model call (telemetry)."""
        if max_batch < 1 or max_queue < 1 or cache_size < 0:
            raise ValueError("max_batch and max_queue must be >= 1, cache_size >= 0")
        self.embedder = embedder
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._cache: LRUCache[bytes, Vector] | None = LRUCache(cache_size) if cache_size else None
        self._in_flight: dict[bytes, asyncio.Future[Vector]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task[None] | None = None
        self.stats = BatchingStats()

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    async def __aenter__(self) -> MicroBatcher:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aether-embed")
        self._collector = asyncio.create_task(self._collect(), name="aether-embed-collector")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("embedder is shut down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @staticmethod
    def _key(mode: Mode, text: str) -> bytes:
        return hashlib.blake2b(f"{mode}\0{text}".encode(), digest_size=16).digest()

    async def embed(self, text: str, mode: Mode = "document") -> Vector:
        """One vector; raises `EmptyTextError` for blank text. The array is read-only."""
        (prepared,) = self.embedder.prefixed([text], mode)
        self.stats.requests += 1
        key = self._key(mode, text)
        if self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                self.stats.cache_hits += 1
                return cached
        shared = self._in_flight.get(key)
        if shared is not None:
            self.stats.cache_hits += 1
            return await asyncio.shield(shared)
        if self._collector is None or self._collector.done():
            raise RuntimeError("MicroBatcher is not running; use it as an async context manager")
        future: asyncio.Future[Vector] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            await self._queue.put(_Job(key, prepared, future))
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._in_flight.pop(key, None)

    async def embed_many(self, texts: Sequence[str], mode: Mode = "document") -> Vectors:
        """Vectors for several texts, batched together with everyone else's."""
        self.embedder.prefixed(texts, mode)  # validate all before queueing any
        vectors = await asyncio.gather(*(self.embed(text, mode) for text in texts))
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(vectors)

    def _run_batch(self, texts: list[str]) -> Vectors:
        return self.embedder.run_texts(texts)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self.stats.queue_depth = self._queue.qsize()
            started = time.perf_counter()
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self._run_batch, [job.text for job in batch]
                )
            except Exception as exc:  # handed to every waiting caller, never swallowed
                for job in batch:
                    self._in_flight.pop(job.key, None)
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.embedded += len(batch)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started, self.stats.queue_depth)
            for job, row in zip(batch, vectors, strict=True):
                vector = row.copy()  # a view would keep the whole batch array alive in the cache
                vector.flags.writeable = False
                if self._cache is not None:
                    self._cache[job.key] = vector
                self._in_flight.pop(job.key, None)
                if not job.future.done():
                    job.future.set_result(vector)
