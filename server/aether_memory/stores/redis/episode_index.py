"""The semantic index of episodes in Redis: its schema (a vector per episode, next to the
fields SearchEpisodes filters by), the queue of episodes waiting for a vector, and the documents.

Recording never waits for embeddings: the append script queues each new episode on a stream
that the indexer (service/episode_index.py) reads through a consumer group, so a restart resumes
where it stopped (pending entries are delivered again first) and several replicas share the work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redisvl.index import AsyncSearchIndex
from redisvl.query import FilterQuery, VectorQuery
from redisvl.query.filter import FilterExpression, Num
from redisvl.schema import IndexSchema

from ...domain.episodes import EpisodeDoc, EpisodeHit, EpisodeQuery, QueuedEpisode
from ...domain.tenant import Tenant
from .episode_log import stream_id_key
from .keys import EPISODE_DOC_PREFIX, EPISODE_INDEX_QUEUE, keys_of
from .query import SINGLE_VALUE, tag_in
from .vector_slots import SLOTS, create_index, vector_attribute

GROUP = "aether-episode-indexers"


class RedisEpisodeIndex:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        index_name: str,
        dimension: int,
        vector_slot: str = SLOTS[0],
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._dimension = dimension
        self._index_name = index_name
        self._use_slot(vector_slot)

    def _use_slot(self, vector_slot: str) -> None:
        self.vector_slot = vector_slot
        self.index = AsyncSearchIndex(
            IndexSchema.from_dict(
                {
                    "index": {
                        "name": self._index_name,
                        "prefix": EPISODE_DOC_PREFIX,
                        "storage_type": "hash",
                    },
                    "fields": [
                        {"name": "tenant", "type": "tag", "attrs": SINGLE_VALUE},
                        {"name": "agent_id", "type": "tag", "attrs": SINGLE_VALUE},
                        {"name": "session_id", "type": "tag", "attrs": SINGLE_VALUE},
                        {"name": "type", "type": "tag"},
                        {"name": "outcome", "type": "tag"},
                        {"name": "record_time", "type": "numeric"},
                        {
                            "name": vector_slot,
                            "type": "vector",
                            "attrs": {
                                "dims": self._dimension,
                                "algorithm": "hnsw",
                                "distance_metric": "cosine",
                                "datatype": "float32",
                            },
                        },
                    ],
                }
            ),
            redis_client=self._client,
        )

    async def ensure(self) -> None:
        """Create the index if it does not exist; an existing one keeps its vector slot."""
        if await self.index.exists() or not await create_index(self.index):
            held = vector_attribute(await self.index.info())
            if held is not None and held.slot != self.vector_slot:
                self._use_slot(held.slot)
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it already exists
            await self._client.xgroup_create(EPISODE_INDEX_QUEUE, GROUP, id="0", mkstream=True)

    async def lag(self) -> int:
        """Queued episodes not yet indexed: never delivered plus delivered but unacknowledged."""
        for group in await self._client.xinfo_groups(EPISODE_INDEX_QUEUE):
            if group["name"] in (GROUP, GROUP.encode()):
                return int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return 0

    async def queued(self, consumer: str, count: int, *, backlog: bool) -> list[QueuedEpisode]:
        """Up to `count` queued episodes for `consumer`: those delivered to it before and not yet
        acknowledged when `backlog` (a crash mid-batch), else new ones (waiting up to 0.5 s)."""
        reply = await self._client.xreadgroup(
            GROUP,
            consumer,
            {EPISODE_INDEX_QUEUE: "0" if backlog else ">"},
            count=count,
            block=None if backlog else 500,
        )
        return [
            QueuedEpisode(_text(entry_id), Tenant(_text(fields[b"t"])), _text(fields[b"i"]))
            for entry_id, fields in (reply[0][1] if reply else [])
        ]

    async def write(
        self,
        docs: Sequence[EpisodeDoc],
        vectors: npt.NDArray[np.float32],
        done: Sequence[QueuedEpisode],
    ) -> None:
        """The documents with their vectors, and `done` acknowledged, in one round trip."""
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
            if done:
                pipe.xack(EPISODE_INDEX_QUEUE, GROUP, *[q.entry_id for q in done])
            await pipe.execute()

    async def prune(self, tenant: Tenant, first_kept: str | None, limit: int = 1000) -> int:
        """Delete index documents of episodes the stream no longer holds (those before
        `first_kept`, every one when None); at most `limit` per call."""
        keys = keys_of(tenant)
        expr: FilterExpression = tag_in("tenant", keys.tenant)
        if first_kept is not None:
            # Documents are found by time (a second of margin: record_time is taken just before
            # the append), then compared by stream id, which is exact.
            expr &= Num("record_time") < stream_id_key(first_kept)[0] / 1000 + 1.0
        found = await self.index.query(FilterQuery(expr, return_fields=["id"], num_results=limit))
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

    async def search(
        self, tenant: Tenant, query: EpisodeQuery, vector: npt.NDArray[np.float32]
    ) -> list[EpisodeHit]:
        keys = keys_of(tenant)
        expr: FilterExpression = tag_in("tenant", keys.tenant)
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
        results = await self.index.query(
            VectorQuery(
                vector=vector.astype(np.float32).tobytes(),
                vector_field_name=self.vector_slot,
                return_fields=["id"],
                filter_expression=expr,
                num_results=query.offset + query.limit + 1,
                dtype="float32",
            )
        )
        prefix = keys.episode_doc("")
        return [
            EpisodeHit(doc["id"].removeprefix(prefix), 1.0 - float(doc["vector_distance"]))
            for doc in results
        ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
