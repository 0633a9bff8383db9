"""Live tails of the episode log: one shared reader per tenant stream, however many subscribers.

A subscriber first catches up alone (plain XREADs from its own position) and then attaches to
its tenant's shared reader, which runs one blocking XREAD loop and hands every batch to each
attached subscriber. Redis work and entry decoding are paid once per batch, not once per
subscriber, so many subscribers do not multiply the load that ingestion competes with.

A subscriber that falls more than MAX_QUEUED batches or MAX_QUEUED_ENTRIES entries behind is
detached: it drains what it was given and goes back to catching up alone, from its own position.
The reader therefore never buffers without bound for a slow subscriber, and a slow subscriber
never slows the others.

No gap, no duplicate: on attach, the entries between the subscriber's position and the
reader's are read directly; anything at or before the subscriber's position is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ...domain.episodes import StoredEntry
from ...domain.tenant import Tenant
from .episode_log import TAIL_BLOCK_MS, RedisEpisodeLog, stream_id_key

READ_COUNT = 500
MAX_QUEUED = 64  # batches waiting for one subscriber before it is detached
MAX_QUEUED_ENTRIES = 2000  # entries waiting for one subscriber before it is detached


class _Detached:
    """Queued after the last batch a detached subscriber was given."""


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[list[StoredEntry] | BaseException | _Detached] = field(
        default_factory=asyncio.Queue
    )
    entries: int = 0  # entries given to it and not yet taken


class _Reader:
    """One tenant's blocking XREAD loop; ends when its last subscriber leaves."""

    def __init__(self, tails: EpisodeTails, tenant: Tenant, position: str) -> None:
        self.tenant = tenant
        self.position = position
        self.subscribers: set[_Subscriber] = set()
        self._tails = tails
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        log = self._tails.log
        try:
            while self.subscribers:
                batch = await log.read_after(self.tenant, self.position, READ_COUNT, TAIL_BLOCK_MS)
                if batch:
                    self.position = batch[-1].stream_id
                # An empty batch too: each idle wait lets subscribers send heartbeats.
                for subscriber in list(self.subscribers):
                    full = subscriber.entries + len(batch) > MAX_QUEUED_ENTRIES
                    if subscriber.queue.qsize() >= MAX_QUEUED or (full and subscriber.entries):
                        self.subscribers.discard(subscriber)
                        subscriber.queue.put_nowait(_Detached())
                    else:
                        subscriber.entries += len(batch)
                        subscriber.queue.put_nowait(batch)
        except Exception as error:  # Redis is gone: every subscriber is told, as one would be
            for subscriber in self.subscribers:
                subscriber.queue.put_nowait(error)
            self.subscribers.clear()
        finally:
            # No await between the last check of `subscribers` and this: an attach either
            # found this reader with subscribers (and was served) or finds none and starts one.
            if self._tails.readers.get(self.tenant.name) is self:
                del self._tails.readers[self.tenant.name]


class EpisodeTails:
    def __init__(self, log: RedisEpisodeLog) -> None:
        self.log = log
        self.readers: dict[str, _Reader] = {}

    async def tail(self, tenant: Tenant, after: str) -> AsyncIterator[list[StoredEntry]]:
        """Batches of entries after `after`, in order, forever; an empty batch after idle waits."""
        position = after

        def fresh(batch: list[StoredEntry]) -> list[StoredEntry]:
            floor = stream_id_key(position)
            return [e for e in batch if stream_id_key(e.stream_id) > floor]

        while True:
            # Alone until caught up: a short read means the end of the stream was reached.
            while True:
                batch = await self.log.read_after(tenant, position, READ_COUNT, None)
                if batch:
                    position = batch[-1].stream_id
                    yield batch
                if len(batch) < READ_COUNT:
                    break
            subscriber = _Subscriber()
            reader = self.readers.get(tenant.name)
            if reader is None or not reader.subscribers:
                reader = self.readers[tenant.name] = _Reader(self, tenant, position)
            reader.subscribers.add(subscriber)
            try:
                # What the reader consumed before this subscriber joined, read directly.
                while stream_id_key(position) < stream_id_key(reader.position):
                    gap = await self.log.range(tenant, "(" + position, reader.position, READ_COUNT)
                    if not gap:
                        break
                    position = gap[-1].stream_id
                    yield gap
                while True:
                    item = await subscriber.queue.get()
                    if isinstance(item, _Detached):
                        break  # too slow: catch up alone again from `position`
                    if isinstance(item, BaseException):
                        raise item
                    subscriber.entries -= len(item)
                    batch = fresh(item)
                    if batch:
                        position = batch[-1].stream_id
                    yield batch
            finally:
                reader.subscribers.discard(subscriber)

    async def aclose(self) -> None:
        readers = list(self.readers.values())
        for reader in readers:
            reader.task.cancel()
        await asyncio.gather(*(r.task for r in readers), return_exceptions=True)
