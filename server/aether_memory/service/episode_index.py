"""Episode use cases: the semantic index of episodes and its worker.

Recording never waits for embeddings: the append script queues each new episode on a stream that
this worker reads through a consumer group, so a restart resumes where it stopped (pending entries
are retried first) and several replicas share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
from redisvl.index import AsyncSearchIndex
from redisvl.query import FilterQuery, VectorQuery
from redisvl.query.filter import FilterExpression, Num
from redisvl.schema import IndexSchema

from aether_embeddings.batching import MicroBatcher

from ..stores.redis.episode_log import RedisEpisodeLog, stream_id_key
from ..stores.redis.keys import EPISODE_DOC_PREFIX, EPISODE_INDEX_QUEUE, TenantKeys
from ..stores.redis.query import SINGLE_VALUE, tag_in
from ..stores.redis.vector_slots import SLOTS, vector_attribute
from ..telemetry import instruments, tracer

log = logging.getLogger(__name__)
GROUP = "aether-episode-indexers"
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class EpisodeQuery:
    agent_id: str
    session_id: str
    types: tuple[str, ...]
    outcomes: tuple[str, ...]
    start_time: float | None
    end_time: float | None
    offset: int
    limit: int


@dataclass(frozen=True)
class EpisodeHit:
    stream_id: str
    similarity: float


class EpisodeIndex:
    def __init__(
        self,
        client: aioredis.Redis,
        log_store: RedisEpisodeLog,
        embedder: MicroBatcher,
        *,
        index_name: str,
        batch: int,
        vector_slot: str = SLOTS[0],
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._log = log_store
        self._embedder = embedder
        self._batch = batch
        self._consumer = f"{socket.gethostname()}-{id(self)}"
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
                                "dims": self._embedder.dimension,
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
        if not await self.index.exists():
            await self.index.create(overwrite=False)
        else:
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

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set. Failed batches stay pending and are retried."""
        backlog = True  # first drain this consumer's pending entries (a crash mid-batch)
        while not stop.is_set():
            try:
                reply = await self._client.xreadgroup(
                    GROUP,
                    self._consumer,
                    {EPISODE_INDEX_QUEUE: "0" if backlog else ">"},
                    count=self._batch,
                    block=None if backlog else 500,
                )
                entries = reply[0][1] if reply else []
                if backlog and not entries:
                    backlog = False
                    continue
                if entries:
                    with tracer().start_as_current_span(
                        "aether.episodes.index", attributes={"aether.episodes": len(entries)}
                    ):
                        await self._index(entries)
                    instruments().episode_index_lag.set(await self.lag())
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                log.warning("episode indexer: Redis unavailable (%s); retrying", exc)
                backlog = True
                await asyncio.sleep(1.0)
            except Exception:  # logged and retried: the entries stay pending
                log.exception("episode indexer batch failed; will retry")
                backlog = True
                await asyncio.sleep(1.0)

    async def _index(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        from aether.memory.v1 import episode_pb2  # the stored body is a serialized Episode

        docs: list[tuple[TenantKeys, str, dict[str, Any], str]] = []
        wanted = [(TenantKeys(q[b"t"].decode()), q[b"i"].decode()) for _, q in entries]
        for (keys, stream_id), stored in zip(wanted, await self._log.get_many(wanted), strict=True):
            if stored is None:
                continue  # trimmed by retention before it was indexed
            episode = episode_pb2.Episode.FromString(stored.body)
            text = episode_text(episode)
            docs.append(
                (
                    keys,
                    stream_id,
                    {
                        "tenant": keys.tenant,
                        "agent_id": stored.agent_id,
                        "session_id": stored.session_id,
                        "type": stored.type,
                        "outcome": stored.outcome,
                        "record_time": repr(episode.record_time.ToNanoseconds() / 1e9),
                    },
                    text,
                )
            )
        vectors = await self._embedder.embed_many([d[3] for d in docs]) if docs else None
        async with self._client.pipeline(transaction=False) as pipe:
            for i, (keys, stream_id, doc_fields, _) in enumerate(docs):
                assert vectors is not None
                vector = vectors[i].astype(np.float32).tobytes()
                pipe.hset(
                    keys.episode_doc(stream_id), mapping={**doc_fields, self.vector_slot: vector}
                )
            pipe.xack(EPISODE_INDEX_QUEUE, GROUP, *[entry_id for entry_id, _ in entries])
            await pipe.execute()

    async def prune(self, keys: TenantKeys, first_kept: str | None, limit: int = 1000) -> int:
        """Delete index documents of episodes the stream no longer holds (those before
        `first_kept`, every one when None); at most `limit` per call."""
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
        self, keys: TenantKeys, query: EpisodeQuery, vector: npt.NDArray[np.float32]
    ) -> list[EpisodeHit]:
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


def episode_text(episode: Any) -> str:
    """What an episode is searched by: its text, else type, name, outcome and payload."""
    if episode.text:
        return str(episode.text)[:MAX_TEXT_CHARS]
    from aether.memory.v1 import episode_pb2
    from google.protobuf import json_format

    parts = [
        episode_pb2.EpisodeType.Name(episode.type).removeprefix("EPISODE_TYPE_").lower(),
        episode.name,
        episode_pb2.EpisodeOutcome.Name(episode.outcome).removeprefix("EPISODE_OUTCOME_").lower(),
        json.dumps(json_format.MessageToDict(episode.payload), ensure_ascii=False),
    ]
    return " ".join(p for p in parts if p and p != "{}")[:MAX_TEXT_CHARS]
