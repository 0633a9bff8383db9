"""The archive outbox in Redis: one stream every hot-tier write appends to (in the write's own
script or transaction), read by the archiver through a consumer group. Entries read but not yet
confirmed stay pending and are delivered again; a confirmed entry is acknowledged and deleted
in one transaction, so the stream's length is the backlog."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ...domain.outbox import Backlog, OutboxEntry
from .keys import OUTBOX_KEY

GROUP = "archivers"
CONSUMER = "archiver"  # one name for every replica: only the archiver lease's holder reads


class RedisOutbox:
    def __init__(self, client: aioredis.Redis, *, batch: int) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._batch = batch

    async def ensure(self) -> None:
        """The consumer group (and the stream), if they do not exist yet."""
        try:
            await self._client.xgroup_create(OUTBOX_KEY, GROUP, id="0", mkstream=True)
        except aioredis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def backlog(self) -> Backlog:
        """Entries not yet archived, and how long the oldest has waited."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.xlen(OUTBOX_KEY)
            pipe.xrange(OUTBOX_KEY, "-", "+", count=1)
            length, first = await pipe.execute()
        if not first:
            return Backlog(int(length), 0.0)
        first_ms = int(first[0][0].decode().partition("-")[0])
        return Backlog(int(length), max(0.0, time.time() - first_ms / 1000))

    async def pending(self) -> list[OutboxEntry]:
        """Entries delivered before and not confirmed (a failed write, a crash), oldest first."""
        return await self._read("0", None)

    async def new(self, block_ms: int) -> list[OutboxEntry]:
        """Entries never delivered, oldest first; waits up to `block_ms` for one."""
        return await self._read(">", block_ms)

    async def _read(self, position: str, block_ms: int | None) -> list[OutboxEntry]:
        reply = await self._client.xreadgroup(
            GROUP, CONSUMER, {OUTBOX_KEY: position}, count=self._batch, block=block_ms
        )
        return [
            OutboxEntry.decode(i, fields) for _, messages in reply or [] for i, fields in messages
        ]

    async def confirm(self, stream_ids: Sequence[str]) -> None:
        """The archive holds these entries: acknowledge and delete them."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.xack(OUTBOX_KEY, GROUP, *stream_ids)
            pipe.xdel(OUTBOX_KEY, *stream_ids)
            await pipe.execute()
