"""The MongoDB archive (the cold tier), through PyMongo's own asyncio API.

Writes are idempotent: each document's `_id` is its tenant plus its id, so replaying an outbox
entry rewrites the same document and never adds a second one. Only features that MongoDB 7/8 and
FerretDB v1 share are used: no transactions, no TTL or partial indexes, no `$lookup`; field names
that users choose (metadata and document keys, which may hold `.` or `$`) are stored inside JSON
strings, never as BSON keys. Expiry is an application sweep over `expire_at`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
from bson.binary import Binary
from pymongo import ASCENDING, AsyncMongoClient, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError
from pymongo.write_concern import WriteConcern

from ...domain.memory import Memory, MemoryFilter
from ...domain.outbox import Kind, Op, OutboxEntry, memory_from_doc

log = logging.getLogger(__name__)
DUPLICATE_KEY = 11000
MAX_IDS = 10_000
# FerretDB v1.24.2 never answers an `update` command of more than 100 statements (measured:
# 100 returns in 17 ms, 101 hangs), so replacements go in chunks of 100; MongoDB doesn't mind.
UPDATE_CHUNK = 100

Doc = dict[str, Any]


def doc_id(tenant: str, key: str) -> str:
    # A tenant never holds "\x1f" (keys.TENANT_PATTERN), so two (tenant, key) pairs can't collide.
    return f"{tenant}\x1f{key}"


def _stream_ms(stream_id: str) -> int:
    return int(stream_id.partition("-")[0])


def within(seconds: float | None) -> contextlib.AbstractContextManager[Any]:
    """Archive calls made inside the block end by this deadline: PyMongo sends what is left of
    it as `maxTimeMS` (the server stops working on a call nobody waits for) and uses it as the
    socket timeout. None: no deadline."""
    return pymongo.timeout(max(seconds, 0.001)) if seconds is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class ArchiveFeatures:
    server_version: str
    change_streams: bool


class MongoArchive:
    def __init__(self, client: AsyncMongoClient[Doc], database: str, write_concern: str) -> None:
        w: str | int = int(write_concern) if write_concern.isdigit() else write_concern
        self.client = client
        self.db = client.get_database(database, write_concern=WriteConcern(w=w))
        self.memories: AsyncCollection[Doc] = self.db["memories"]
        self.episodes: AsyncCollection[Doc] = self.db["episodes"]
        self.checkpoints: AsyncCollection[Doc] = self.db["checkpoints"]
        self.agent_states: AsyncCollection[Doc] = self.db["agent_states"]
        self._collections = {
            Kind.MEMORY: self.memories,
            Kind.EPISODE: self.episodes,
            Kind.CHECKPOINT: self.checkpoints,
            Kind.AGENT_STATE: self.agent_states,
        }

    async def ensure(self) -> ArchiveFeatures:
        """Create the indexes the queries need (idempotent) and detect optional features."""
        asc = ASCENDING
        await self.memories.create_index(
            [("tenant", asc), ("agent_id", asc), ("session_id", asc)], name="by_agent_session"
        )
        await self.memories.create_index([("tenant", asc), ("related_ids", asc)], name="by_link")
        await self.memories.create_index(
            [("tenant", asc), ("agent_id", asc), ("key", asc)], name="by_agent_key"
        )
        await self.memories.create_index([("expire_at", asc)], name="by_expiry")
        await self.episodes.create_index(
            [("tenant", asc), ("agent_id", asc), ("time_ms", asc)], name="by_agent_time"
        )
        await self.checkpoints.create_index(
            [("tenant", asc), ("session_id", asc), ("number", asc)], name="by_session"
        )
        await self.checkpoints.create_index([("expire_at", asc)], name="by_expiry")
        hello = await self.client.admin.command("hello")
        info = await self.client.admin.command("buildInfo")
        # Change streams need a replica set (or a sharded cluster); FerretDB v1 has neither.
        features = ArchiveFeatures(
            server_version=str(info.get("version", "?")),
            change_streams=bool(hello.get("setName")) or hello.get("msg") == "isdbgrid",
        )
        return features

    # ---- writes from the outbox -------------------------------------------------------------

    @staticmethod
    def _document(e: OutboxEntry) -> Doc:
        base: Doc = {"_id": doc_id(e.tenant, e.key), "tenant": e.tenant}
        if e.kind is Kind.MEMORY:
            doc = e.json()
            vector = e.fields.get("vec")
            base.update(
                memory_id=e.key,
                agent_id=doc["agent_id"],
                session_id=doc["session_id"],
                content=doc["content"],
                context=doc.get("context", ""),
                key=doc.get("key", ""),
                tier=doc["tier"],
                type=doc["type"],
                tags=doc["tags"],
                importance=doc["importance"],
                metadata_json=json.dumps(doc["metadata"], separators=(",", ":")),
                related_ids=doc["related_ids"],
                event_time=doc["event_time"],
                create_time=doc["create_time"],
                update_time=doc["update_time"],
                expire_at=doc["expire_time"],
                embedding=Binary(vector) if vector else None,
                model=doc.get("model", ""),
            )
        elif e.kind is Kind.EPISODE:
            base.update(
                episode_id=e.key,
                time_ms=_stream_ms(e.key),
                agent_id=e.fields["agent"].decode(),
                session_id=e.fields["session"].decode(),
                type=e.fields["type"].decode(),
                outcome=e.fields["outcome"].decode(),
                body=Binary(e.fields["doc"]),
            )
        else:
            expire_at = float(e.fields.get("exp", b"0") or 0)
            base.update(
                key=e.key,
                doc_json=e.fields["doc"].decode(),
                expire_at=expire_at or None,
            )
            if e.kind is Kind.CHECKPOINT:
                session_id, _, number = e.key.rpartition("\x1f")
                base.update(session_id=session_id, number=int(number))
        return base

    async def apply(self, entries: Sequence[OutboxEntry]) -> int:
        """Apply outbox entries in order; the last entry per document wins. Idempotent.

        Raises on any failure other than "already there", so the caller retries the batch.
        """
        final: dict[tuple[Kind, str], OutboxEntry] = {}
        for e in entries:
            final.pop((e.kind, doc_id(e.tenant, e.key)), None)  # keep the order of last writes
            final[(e.kind, doc_id(e.tenant, e.key))] = e
        for kind, collection in self._collections.items():
            mine = [e for (k, _), e in final.items() if k is kind]
            deletes = [doc_id(e.tenant, e.key) for e in mine if e.op is Op.DELETE]
            puts = [self._document(e) for e in mine if e.op is Op.PUT]
            if deletes:
                await collection.delete_many({"_id": {"$in": deletes}})
            if puts:
                await self._put(collection, puts)
        return len(final)

    @staticmethod
    async def _put(collection: AsyncCollection[Doc], docs: list[Doc]) -> None:
        """Insert in bulk (the fast path: most documents are new); replace those that exist."""
        try:
            await collection.insert_many(docs, ordered=False)
            return
        except BulkWriteError as error:
            errors = error.details.get("writeErrors", [])
            others = [w for w in errors if w.get("code") != DUPLICATE_KEY]
            if others:
                raise
            existing = [docs[w["index"]] for w in errors]
        for i in range(0, len(existing), UPDATE_CHUNK):
            chunk = existing[i : i + UPDATE_CHUNK]
            await collection.bulk_write(
                [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in chunk], ordered=False
            )

    async def sweep_expired(self, now: float) -> int:
        """Delete archived memories and checkpoints whose retention ended."""
        removed = 0
        for collection in (self.memories, self.checkpoints):
            result = await collection.delete_many({"expire_at": {"$lte": now}})
            removed += result.deleted_count
        return removed

    # ---- reads ------------------------------------------------------------------------------

    @staticmethod
    def _memory(doc: Doc) -> Memory:
        fields = dict(doc)
        fields["metadata"] = json.loads(doc.get("metadata_json") or "{}")
        fields["expire_time"] = doc.get("expire_at")
        vector = doc.get("embedding")
        return memory_from_doc(doc["memory_id"], fields, bytes(vector) if vector else None)

    async def get_memory(self, tenant: str, memory_id: str, now: float) -> Memory | None:
        """The archived memory, unless absent or past its tier's retention."""
        doc = await self.memories.find_one({"_id": doc_id(tenant, memory_id)})
        if doc is None or (doc.get("expire_at") is not None and doc["expire_at"] <= now):
            return None
        return self._memory(doc)

    async def get_memory_by_key(
        self, tenant: str, agent_id: str, key: str, now: float
    ) -> Memory | None:
        """The agent's archived memory stored under `key`, unless absent or past retention."""
        doc = await self.memories.find_one({"tenant": tenant, "agent_id": agent_id, "key": key})
        if doc is None or (doc.get("expire_at") is not None and doc["expire_at"] <= now):
            return None
        return self._memory(doc)

    async def linked_to(self, tenant: str, memory_id: str) -> list[str]:
        """Ids of archived memories that list `memory_id` among their related ids."""
        cursor = self.memories.find({"tenant": tenant, "related_ids": memory_id}, {"memory_id": 1})
        return [doc["memory_id"] async for doc in cursor]

    async def existing(self, tenant: str, ids: Iterable[str], now: float) -> set[str]:
        wanted = [doc_id(tenant, i) for i in ids]
        if not wanted:
            return set()
        cursor = self.memories.find({"_id": {"$in": wanted}}, {"memory_id": 1, "expire_at": 1})
        return {
            d["memory_id"]
            async for d in cursor
            if d.get("expire_at") is None or d["expire_at"] > now
        }

    async def owned(
        self, tenant: str, ids: Iterable[str], agent_id: str, now: float
    ) -> dict[str, list[str]]:
        """The related ids of each archived, unexpired memory among `ids` that `agent_id` owns."""
        wanted = [doc_id(tenant, i) for i in ids]
        if not wanted:
            return {}
        cursor = self.memories.find(
            {"_id": {"$in": wanted}, "agent_id": agent_id},
            {"memory_id": 1, "related_ids": 1, "expire_at": 1},
        )
        return {
            d["memory_id"]: list(d.get("related_ids", []))
            async for d in cursor
            if d.get("expire_at") is None or d["expire_at"] > now
        }

    async def update_times(self, tenant: str, ids: Iterable[str]) -> dict[str, float]:
        """The archived update_time of each id present: equal to the hot one means up to date."""
        wanted = [doc_id(tenant, i) for i in ids]
        if not wanted:
            return {}
        cursor = self.memories.find({"_id": {"$in": wanted}}, {"memory_id": 1, "update_time": 1})
        return {d["memory_id"]: float(d["update_time"]) async for d in cursor}

    async def memory_ids(self, tenant: str, flt: MemoryFilter) -> list[str]:
        """Ids of archived memories matching `flt` (the same semantics as the index filter)."""
        query: Doc = {"tenant": tenant, "agent_id": flt.agent_id}
        if flt.session_id:
            query["session_id"] = flt.session_id
        if flt.tiers:
            query["tier"] = {"$in": [t.value for t in flt.tiers]}
        if flt.types:
            query["type"] = {"$in": [t.value for t in flt.types]}
        if flt.tags:
            query["tags"] = {"$in": list(flt.tags)}
        times: Doc = {}
        if flt.start_time is not None:
            times["$gte"] = flt.start_time
        if flt.end_time is not None:
            times["$lt"] = flt.end_time
        if times:
            query["event_time"] = times
        if flt.min_importance is not None:
            query["importance"] = {"$gte": flt.min_importance}
        cursor = self.memories.find(query, {"memory_id": 1}).limit(MAX_IDS)
        return [doc["memory_id"] async for doc in cursor]

    async def counts(self) -> dict[str, int]:
        return {
            kind.value: await collection.count_documents({})
            for kind, collection in self._collections.items()
        }
