"""The semantic index of episodes in Redis: its schema (a vector per episode, next to the
fields SearchEpisodes filters by), the documents, and how the indexer takes episodes to embed.

Recording never waits for embeddings. Each tenant's episode stream is itself the queue: the
indexer (service/episode_index.py) reads it through a consumer group, and finds the streams with
new episodes through a due set each append marks (stores/redis/due.py), so nothing outside the
tenant's slot is written by the append script. Several replicas share the work: each pops other
streams, and the group gives each episode to one of them. An episode read and not acknowledged
stays pending: its reader takes it again after a failed batch, and any reader takes it over once
it has waited CLAIM_IDLE_MS (its reader died).

In the `tenant` layout (AETHER_INDEX_LAYOUT) each tenant's documents have an index of their own
(search.TenantIndexes), made before the indexer writes the tenant's first document.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redisvl.index import AsyncSearchIndex
from redisvl.query import FilterQuery, VectorQuery
from redisvl.query.filter import FilterExpression, Num
from redisvl.schema import IndexSchema

from ...domain.episodes import EpisodeDoc, EpisodeHit, EpisodeQuery, Taken
from ...domain.tenant import Tenant
from .due import DueQueue, create_group
from .episode_log import EPISODE_STREAMS, entry_of, stream_id_key
from .keys import EPISODE_DOC_PREFIX, LEGACY_EPISODE_INDEX_QUEUE, index_meta, keys_of, tenant_of
from .query import SINGLE_VALUE, tag_in
from .scripts import evalsha_pipelined
from .search import TenantIndexes, documents, missing_index, routed, search_args, vector_attrs
from .vector_slots import SLOTS, create_index, vector_attribute

GROUP = EPISODE_STREAMS.group
# An episode delivered to an indexer that has not acknowledged it for this long is taken over by
# another (its reader died); well above the time one batch takes to embed.
CLAIM_IDLE_MS = 60_000
# Each indexer process reads under its own name, so every restart leaves a name in the group of
# every stream it read; one that holds nothing and has not read for this long is removed.
CONSUMER_IDLE_MS = 3_600_000

# KEYS: a stream. ARGV: the group, the idle time. Checked and removed in one step: a consumer
# that read between a check and a separate removal would lose its pending entries with it.
_FORGET_SCRIPT = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #consumer, 2 do f[consumer[i]] = consumer[i + 1] end
  if f['pending'] == 0 and f['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""


class RedisEpisodeIndex:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        index_name: str,
        dimension: int,
        vector_slot: str = SLOTS[0],
        batch: int = 64,
        streams_per_step: int = 16,
        layout: str = "shared",
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._batch = batch
        self._queue = DueQueue(client, EPISODE_STREAMS, per_step=streams_per_step)
        self._forget = client.register_script(_FORGET_SCRIPT)
        self._dimension = dimension
        self._index_name = index_name
        self._tenants = (
            TenantIndexes(client, index_name, lambda name, prefix: self._schema(name, prefix, True))
            if layout == "tenant"
            else None
        )
        self._use_slot(vector_slot)

    def _use_slot(self, vector_slot: str) -> None:
        self.vector_slot = vector_slot
        self.index = AsyncSearchIndex(
            self._schema(self._index_name, EPISODE_DOC_PREFIX, False), redis_client=self._client
        )

    def _schema(self, name: str, prefix: str, per_tenant: bool) -> IndexSchema:
        """The shared index's schema, or one tenant's: no tenant field, exact (FLAT) vectors
        in small blocks (search.TENANT_BLOCK_SIZE explains why)."""
        vectors = vector_attrs(self._dimension, "float32", flat=per_tenant)
        tenant = [] if per_tenant else [{"name": "tenant", "type": "tag", "attrs": SINGLE_VALUE}]
        return IndexSchema.from_dict(
            {
                "index": {"name": name, "prefix": prefix, "storage_type": "hash"},
                "fields": [
                    *tenant,
                    {"name": "agent_id", "type": "tag", "attrs": SINGLE_VALUE},
                    {"name": "session_id", "type": "tag", "attrs": SINGLE_VALUE},
                    {"name": "type", "type": "tag"},
                    {"name": "outcome", "type": "tag"},
                    {"name": "record_time", "type": "numeric"},
                    {"name": self.vector_slot, "type": "vector", "attrs": vectors},
                ],
            }
        )

    async def prepare(self, tenant: Tenant) -> None:
        """Make sure `tenant` has its own index before a document of it is written (`tenant`
        layout; nothing to do in the shared one)."""
        if self._tenants is not None:
            await self._tenants.ready(tenant, keys_of(tenant).episode_doc(""))

    async def create_index_on(self, node: Any, tenant: Tenant) -> None:
        """Create `tenant`'s index on a cluster node that imports its slot (`tenant` layout)."""
        assert self._tenants is not None, "only the tenant layout has an index per tenant"
        await self._tenants.create_on(node, tenant, keys_of(tenant).episode_doc(""))

    def _index_of(self, tenant: Tenant) -> str:
        return self._tenants.name(tenant) if self._tenants is not None else self._index_name

    async def _find(self, tenant: Tenant, query: Any) -> list[dict[str, str]]:
        """A query's documents from the tenant's index; none from one that does not exist yet
        (`tenant` layout: the tenant has no indexed episode)."""
        try:
            index = self._index_of(tenant)
            reply = await self._client.execute_command(
                *search_args(index, query), **routed(self._client, index)
            )
        except ResponseError as error:
            if self._tenants is not None and missing_index(error):
                return []
            raise
        return documents(reply, scores=False)

    async def ensure(self) -> None:
        """Create the index if it does not exist; an existing one keeps its vector slot. In the
        `tenant` layout each tenant's index is made when its first document is written, and
        the slot the deployment's first start chose (or `reembed`) is recorded and kept."""
        if self._tenants is not None:
            meta = index_meta(self._index_name)
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hsetnx(meta, "vector_slot", self.vector_slot)
                pipe.hget(meta, "vector_slot")
                _, held = await pipe.execute()
            if held.decode() != self.vector_slot:
                self._use_slot(held.decode())
            await self._upgrade()
            return
        if await self.index.exists() or not await create_index(self.index):
            held = vector_attribute(await self.index.info())
            if held is not None and held.slot != self.vector_slot:
                self._use_slot(held.slot)
        await self._upgrade()

    async def _upgrade(self) -> None:
        """From the single queue every append wrote before: each listed tenant's stream gets
        its group, reading from its first episode (the queue's unindexed entries are among
        them; indexing one again rewrites the same document), and the queue goes."""
        if not await self._client.exists(LEGACY_EPISODE_INDEX_QUEUE):
            return
        streams = await self._streams()
        for stream in streams:
            await create_group(self._client, stream, GROUP)
        await self._queue.requeue(*streams)
        await self._client.delete(LEGACY_EPISODE_INDEX_QUEUE)

    async def _streams(self) -> list[str]:
        """Every listed tenant's episode stream."""
        return [EPISODE_STREAMS.stream_of(t) for t in await self._queue.listed()]

    async def _waiting(self, streams: Sequence[str]) -> list[int | None]:
        """Per stream, its episodes not yet indexed: never delivered plus delivered and not
        acknowledged; None where Redis cannot tell (its group is missing, or entries were
        deleted after the group's position, which leaves the group's lag unknown)."""
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            replies = await pipe.execute(raise_on_error=False)
        out: list[int | None] = []
        for reply in replies:
            if isinstance(reply, Exception):  # no such key: no episodes
                out.append(0)
                continue
            group = next((g for g in reply if g["name"] in (GROUP, GROUP.encode())), None)
            if group is None or group.get("lag") is None:
                out.append(None)
            else:
                out.append(int(group["lag"]) + int(group.get("pending") or 0))
        return out

    async def total_lag(self) -> int:
        """Episodes of every tenant not yet indexed (an upper bound where Redis cannot tell),
        in two round trips."""
        streams = await self._streams()
        waiting = await self._waiting(streams)
        unknown = [s for s, n in zip(streams, waiting, strict=True) if n is None]
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in unknown:
                pipe.xlen(stream)
            lengths = await pipe.execute() if unknown else []
        return sum(n for n in waiting if n is not None) + sum(int(x) for x in lengths)

    async def lag(self, tenant: Tenant) -> int:
        """The tenant's episodes not yet indexed (an upper bound where Redis cannot tell)."""
        stream = EPISODE_STREAMS.stream_of(tenant)
        (waiting,) = await self._waiting([stream])
        return int(await self._client.xlen(stream)) if waiting is None else waiting

    async def sweep(self) -> int:
        """Every listed stream with episodes not yet indexed back on the due set (a writer or
        an indexer died between its work and its mark); how many episodes wait in all."""
        streams = await self._streams()
        waiting = await self._waiting(streams)
        await self._queue.requeue(*[s for s, n in zip(streams, waiting, strict=True) if n != 0])
        return sum(n for n in waiting if n is not None)

    async def forget_idle_consumers(self, idle_ms: int = CONSUMER_IDLE_MS) -> int:
        """Remove, from every listed stream's group, the indexers that hold no episode and have
        not read it for `idle_ms` (stopped processes); how many."""
        replies = await evalsha_pipelined(
            self._client, self._forget, [([s], [GROUP, idle_ms]) for s in await self._streams()]
        )
        removed = 0
        for reply in replies:
            if isinstance(reply, Exception):
                if "NOGROUP" not in str(reply) and "no such key" not in str(reply):
                    raise reply
                continue  # a stream without the group (yet) or gone: nothing to remove
            removed += int(reply)
        return removed

    async def due(self, block_ms: int) -> list[str]:
        """Streams with episodes to index, longest waiting first (waits up to `block_ms`)."""
        return await self._queue.due(block_ms)

    async def requeue(self, *streams: str) -> None:
        await self._queue.requeue(*streams)

    async def read(self, consumer: str, streams: Sequence[str]) -> list[Taken]:
        """Up to a batch from each stream, in one round trip: the episodes delivered to
        `consumer` before and not acknowledged (a failed batch), those another indexer took
        CLAIM_IDLE_MS ago or more and never acknowledged, and new ones."""
        n = self._batch
        async with self._client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xreadgroup(GROUP, consumer, {stream: "0"}, count=n)
                pipe.xautoclaim(stream, GROUP, consumer, CLAIM_IDLE_MS, "0-0", count=n)
                pipe.xreadgroup(GROUP, consumer, {stream: ">"}, count=n)
            replies = await pipe.execute(raise_on_error=False)
        taken: list[Taken] = []
        for k, stream in enumerate(streams):
            mine, claimed, new = replies[3 * k : 3 * k + 3]
            failed = [r for r in (mine, claimed, new) if isinstance(r, Exception)]
            if failed:
                if "NOGROUP" not in str(failed[0]):
                    raise failed[0]
                # The stream was made again without its group (deleted while a writer
                # remembered it as prepared): make it, and read it on its next turn.
                await create_group(self._client, stream, GROUP)
                taken.append(Taken(stream, tenant_of(stream), [], [], True))
                continue
            lists = (_flat(mine), claimed[1], _flat(new))
            # One of this indexer's own pending episodes may come back twice: as its own, and
            # claimed once idle; and XAUTOCLAIM reports the trimmed ones it dropped as well.
            messages = dict(m for found in lists for m in found)
            gone = dict.fromkeys(_text(d) for d in claimed[2])  # pending, then trimmed
            entries = []
            for entry_id, fields in messages.items():
                if fields:
                    entries.append(entry_of(entry_id, fields))
                else:  # trimmed by retention while pending
                    gone[_text(entry_id)] = None
            full = any(len(found) >= n for found in lists)
            taken.append(Taken(stream, tenant_of(stream), entries, list(gone), full))
        return taken

    async def write(
        self,
        docs: Sequence[EpisodeDoc],
        vectors: npt.NDArray[np.float32],
        done: Mapping[str, Sequence[str]],
    ) -> None:
        """The documents with their vectors, and the `done` episodes (stream -> entry ids)
        acknowledged, in one round trip."""
        for tenant in {doc.tenant for doc in docs}:
            await self.prepare(tenant)
        async with self._client.pipeline(transaction=False) as pipe:
            for doc, vector in zip(docs, vectors, strict=True):
                pipe.hset(
                    keys_of(doc.tenant).episode_doc(doc.stream_id),
                    mapping={
                        "tenant": doc.tenant.name,
                        "agent_id": doc.agent_id,
                        "session_id": doc.session_id,
                        "type": doc.type,
                        "outcome": doc.outcome,
                        "record_time": repr(doc.record_time),
                        self.vector_slot: vector.astype(np.float32).tobytes(),
                    },
                )
            for stream, ids in done.items():
                if ids:
                    pipe.xack(stream, GROUP, *ids)
            await pipe.execute()

    async def prune(self, tenant: Tenant, first_kept: str | None, limit: int = 1000) -> int:
        """Delete index documents of episodes the stream no longer holds (those before
        `first_kept`, every one when None); at most `limit` per call."""
        keys = keys_of(tenant)
        expr: FilterExpression = self._tenant_filter(tenant)
        if first_kept is not None:
            # Documents are found by time (a second of margin: record_time is taken just before
            # the append), then compared by stream id, which is exact.
            expr &= Num("record_time") < stream_id_key(first_kept)[0] / 1000 + 1.0
        query = FilterQuery(expr, return_fields=["record_time"], num_results=limit)
        found = await self._find(tenant, query)
        prefix = keys.episode_doc("")
        stale = [
            doc["id"]
            for doc in found
            if first_kept is None
            or stream_id_key(doc["id"].removeprefix(prefix)) < stream_id_key(first_kept)
        ]
        if stale:
            await self._client.delete(*stale)
        return len(stale)

    def _tenant_filter(self, tenant: Tenant) -> FilterExpression:
        """The tenant's clause of the shared index's queries; a tenant's own index needs none
        (an empty expression matches every document)."""
        return FilterExpression("*") if self._tenants is not None else tag_in("tenant", tenant.name)

    async def search(
        self, tenant: Tenant, query: EpisodeQuery, vector: npt.NDArray[np.float32]
    ) -> list[EpisodeHit]:
        keys = keys_of(tenant)
        expr: FilterExpression = self._tenant_filter(tenant)
        if query.agent_id:
            expr &= tag_in("agent_id", query.agent_id)
        if query.session_id:
            expr &= tag_in("session_id", query.session_id)
        if query.types:
            expr &= tag_in("type", list(query.types))
        if query.outcomes:
            expr &= tag_in("outcome", list(query.outcomes))
        if query.start_time is not None:
            expr &= Num("record_time") >= query.start_time
        if query.end_time is not None:
            expr &= Num("record_time") < query.end_time
        results = await self._find(
            tenant,
            VectorQuery(
                vector=vector.astype(np.float32).tobytes(),
                vector_field_name=self.vector_slot,
                return_fields=["id"],
                filter_expression=expr,
                num_results=query.offset + query.limit + 1,
                dtype="float32",
            ),
        )
        prefix = keys.episode_doc("")
        return [
            EpisodeHit(doc["id"].removeprefix(prefix), 1.0 - float(doc["vector_distance"]))
            for doc in results
        ]


def _flat(reply: Any) -> list[Any]:
    return [m for _, messages in reply or [] for m in messages]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
