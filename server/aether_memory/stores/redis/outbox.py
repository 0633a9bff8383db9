"""The archive outbox in Redis: one stream per tenant, in the tenant's slot, that each of the
tenant's hot-tier writes appends to in the write's own script or transaction (so no write
touches two slots, and a Redis Cluster can hold it). The archiver reads each stream through a
consumer group: entries read but not yet confirmed stay pending and are delivered again; a
confirmed entry is acknowledged and deleted in one transaction, so the streams' lengths are the
backlog.

The streams with work are found as stores/redis/due.py describes: `aether:outbox:tenants` lists
the tenants that have an outbox, `aether:outbox:due` holds the streams with entries the
archiver has not taken yet. The archiver's sweep (on taking the lease, then periodically) puts
every listed stream with entries back on the due set, which covers a writer that died between
its write and its mark; it also drains `aether:outbox`, the single stream every write used
before (an upgraded deployment's backlog).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ...domain.outbox import Backlog, OutboxEntry
from .due import DueMarks, DueQueue, StreamSet, create_group
from .keys import LEGACY_OUTBOX_KEY, OUTBOX_DUE, OUTBOX_TENANTS, keys_of
from .scripts import evalsha_pipelined

GROUP = "archivers"
CONSUMER = "archiver"  # one name for every replica: only the archiver lease's holder reads

# KEYS: a stream. ARGV: the group, then entry ids. Acknowledged and deleted together: an entry
# acknowledged but left in the stream would never be delivered again, yet count as backlog.
_CONFIRM_SCRIPT = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""


OUTBOX_STREAMS = StreamSet(
    listing=OUTBOX_TENANTS,
    due=OUTBOX_DUE,
    group=GROUP,
    stream_of=lambda tenant: keys_of(tenant).outbox(),
)


class OutboxMarks(DueMarks):
    """What a writer does around each write that appends to its tenant's outbox (`prepare`,
    `mark_in` or `mark`, or `writing` around the write)."""

    def __init__(self, client: aioredis.Redis, partitions: int = 1) -> None:
        super().__init__(client, OUTBOX_STREAMS.partitioned(partitions))


class RedisOutbox:
    """The archiver's side: which streams have work, and each stream's entries; of one
    partition of the tenants (AETHER_ARCHIVE_PARTITIONS), each drained by an archiver of its
    own. The first partition also drains the single stream of before."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        batch: int,
        streams_per_step: int = 64,
        partition: int = 0,
        partitions: int = 1,
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._batch = batch
        self.partition = partition
        streams = OUTBOX_STREAMS.partitioned(partitions)[partition]
        self._queue = DueQueue(client, streams, per_step=streams_per_step)
        self._confirm = client.register_script(_CONFIRM_SCRIPT)

    @property
    def batch(self) -> int:
        return self._batch

    async def _streams(self) -> list[str]:
        """Every listed tenant's stream, and the single stream of before, if it still exists."""
        streams = [keys_of(tenant).outbox() for tenant in await self._queue.listed()]
        if self.partition == 0 and await self._client.exists(LEGACY_OUTBOX_KEY):
            streams.append(LEGACY_OUTBOX_KEY)
        return streams

    async def backlog(self) -> Backlog:
        """Entries not yet archived, and how long the oldest has waited."""
        streams = await self._streams()
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
                pipe.xrange(stream, "-", "+", count=1)
            replies = await pipe.execute()
        entries, oldest_ms = 0, None
        for length, first in zip(replies[::2], replies[1::2], strict=True):
            entries += int(length)
            if first:
                first_ms = int(first[0][0].decode().partition("-")[0])
                oldest_ms = first_ms if oldest_ms is None else min(oldest_ms, first_ms)
        if oldest_ms is None:
            return Backlog(entries, 0.0)
        return Backlog(entries, max(0.0, time.time() - oldest_ms / 1000))

    async def sweep(self) -> int:
        """Put every stream that holds entries on the due set; how many there were."""
        streams = await self._streams()
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xlen(stream)
            lengths = await pipe.execute()
        with_entries = [s for s, n in zip(streams, lengths, strict=True) if int(n)]
        await self._queue.requeue(*with_entries)
        return len(with_entries)

    async def due(self, block_ms: int) -> list[str]:
        """Streams with entries to take, longest waiting first (waits up to `block_ms`)."""
        return await self._queue.due(block_ms)

    async def requeue(self, stream: str) -> None:
        """Back on the due set: the stream still holds entries."""
        await self._queue.requeue(stream)

    async def read(self, streams: Sequence[str]) -> list[tuple[str, list[OutboxEntry], bool]]:
        """Up to a batch of entries from each stream, in one round trip: its pending entries
        (delivered before, not confirmed: a failed write, a crash) if it has any, else its new
        ones; and whether they were pending. Oldest first within each stream."""
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xreadgroup(GROUP, CONSUMER, {stream: "0"}, count=self._batch)
                pipe.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=self._batch)
            replies = await pipe.execute(raise_on_error=False)
        found: list[tuple[str, list[OutboxEntry], bool]] = []
        for n, stream in enumerate(streams):
            pending, new = replies[2 * n], replies[2 * n + 1]
            failed = [r for r in (pending, new) if isinstance(r, Exception)]
            if failed:
                if "NOGROUP" not in str(failed[0]):
                    raise failed[0]
                # The stream was made without its group (its key was deleted while a writer
                # remembered its tenant as prepared): make it; read it on its next turn.
                await create_group(self._client, stream, GROUP)
                found.append((stream, [], True))
                continue
            entries = _entries(pending)
            found.append((stream, entries or _entries(new), bool(entries)))
        return found

    async def confirm(self, confirmed: dict[str, list[str]]) -> None:
        """The archive holds these entries (stream -> entry ids): acknowledge and delete them."""
        calls = [([s], [GROUP, *ids]) for s, ids in confirmed.items() if ids]
        for reply in await evalsha_pipelined(self._client, self._confirm, calls):
            if isinstance(reply, Exception):
                raise reply


def _entries(reply: Any) -> list[OutboxEntry]:
    return [OutboxEntry.decode(i, fields) for _, messages in reply or [] for i, fields in messages]
