"""Per-tenant streams that a consumer group drains, found without scanning Redis.

Both queues of work behind the write path have this shape: the archive outbox (a tenant's writes
for MongoDB, stores/redis/outbox.py) and the episode log itself, which the episode indexer reads
(stores/redis/episode_index.py). Each tenant's stream sits in the tenant's slot, so a write
touches one slot and a Redis Cluster can hold it. Two keys of the deployment find the work:

- a set lists every tenant that has such a stream. A writer adds its tenant (and creates the
  stream's consumer group) before the tenant's first write in the process (`prepare`); a tenant
  stays listed;
- a sorted set holds the streams with entries not yet taken. A writer adds its stream after the
  write (`mark_in`: in the write's own round trip where it can), a reader pops streams from it,
  blocking while it is empty (`due`), and puts one back when it left entries there (`requeue`).

A writer that dies between its write and its mark leaves entries no mark points at; each reader
sweeps the listed streams now and then for that.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis.asyncio as aioredis

from ...domain.tenant import Tenant


@dataclass(frozen=True)
class StreamSet:
    """Where one kind of per-tenant stream lives and how it is drained."""

    listing: str  # the set of tenants that have one
    due: str  # the sorted set of streams with entries not yet taken
    group: str  # the consumer group that reads them
    stream_of: Callable[[Tenant], str]  # a tenant's stream

    def partitioned(self, n: int) -> tuple[StreamSet, ...]:
        """The set split into `n` partitions, each with a listing and a due set of its own, so
        `n` readers can each drain one (`n` = 1: this set, its keys unchanged). A tenant is
        always in the same partition (`partition_of`) as long as `n` stays the same."""
        if n == 1:
            return (self,)
        return tuple(
            replace(self, listing=f"{self.listing}:{p}", due=f"{self.due}:{p}") for p in range(n)
        )


def partition_of(tenant: Tenant, n: int) -> int:
    """The partition (of `n`) that holds `tenant`'s stream."""
    return zlib.crc32(tenant.name.encode()) % n


async def create_group(client: Any, stream: str, group: str) -> None:
    """The stream (made empty if missing) with `group` reading from its first entry."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except aioredis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


class DueMarks:
    """What a writer does around each write that appends to its tenant's stream."""

    def __init__(self, client: aioredis.Redis, streams: Sequence[StreamSet]) -> None:
        """`streams`: the partitions of one set (`StreamSet.partitioned`)."""
        self._client: Any = client
        self._parts = tuple(streams)
        self._listed: set[str] = set()  # tenants whose stream and group exist (this process)

    def _part(self, tenant: Tenant) -> StreamSet:
        parts = self._parts
        return parts[0] if len(parts) == 1 else parts[partition_of(tenant, len(parts))]

    async def prepare(self, tenant: Tenant) -> None:
        """Before the write: the tenant's stream, its consumer group and its listing."""
        if tenant.name in self._listed:
            return
        part = self._part(tenant)
        await create_group(self._client, part.stream_of(tenant), part.group)
        await self._client.sadd(part.listing, tenant.name)
        self._listed.add(tenant.name)

    def mark_in(self, pipe: Any, tenants: Iterable[Tenant]) -> None:
        """Queue on `pipe` the marks that put these tenants' streams on the due set (after the
        writes in the same round trip); a stream already there keeps its older time, so the
        longest waiting goes first."""
        now = time.time()
        for tenant in tenants:
            part = self._part(tenant)
            pipe.zadd(part.due, {part.stream_of(tenant): now}, nx=True)

    async def mark(self, tenant: Tenant) -> None:
        """After the write: the reader is told the stream has an entry."""
        async with self._client.pipeline(transaction=False) as pipe:
            self.mark_in(pipe, [tenant])
            await pipe.execute()

    @contextlib.asynccontextmanager
    async def writing(self, tenant: Tenant, enabled: bool = True) -> AsyncIterator[None]:
        """`prepare` before the block and `mark` after it, when `enabled`; nothing is marked
        when the write raised (whatever it did write is found by the reader's sweep)."""
        if not enabled:
            yield
            return
        await self.prepare(tenant)
        yield
        await self.mark(tenant)


class DueQueue:
    """The reader's side: the listed tenants, and which of their streams have work."""

    def __init__(self, client: aioredis.Redis, streams: StreamSet, *, per_step: int) -> None:
        self._client: Any = client
        self.streams = streams
        self._per_step = per_step

    async def listed(self) -> list[Tenant]:
        names = await self._client.smembers(self.streams.listing)
        return [Tenant(name.decode()) for name in sorted(names)]

    async def due(self, block_ms: int) -> list[str]:
        """Streams with entries to take, longest waiting first; waits up to `block_ms` for
        one. A stream taken here is off the due set until a writer or `requeue` adds it."""
        popped = await self._client.zpopmin(self.streams.due, self._per_step)
        if not popped and block_ms > 0:
            one = await self._client.bzpopmin(self.streams.due, timeout=block_ms / 1000)
            popped = [(one[1], one[2])] if one else []
        return [member.decode() for member, _ in popped]

    async def requeue(self, *streams: str) -> None:
        """Back on the due set: these streams still hold entries."""
        if streams:
            now = time.time()
            await self._client.zadd(self.streams.due, {s: now for s in streams}, nx=True)
