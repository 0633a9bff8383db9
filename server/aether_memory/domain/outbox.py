"""The archive outbox's entries: what every hot-tier write appends to one stream (Redis, in the
same script or transaction as the write itself, so nothing reaches Redis without its way to the
archive) and what the archive reads back. The format lives here, beside neither store: the Redis
stores write it, the MongoDB archive decodes it.

An entry carries the whole document, not a pointer to it: a memory whose TTL ends before the
archiver reaches it (the archive was down for an hour) is still archived. The archiver deletes
entries once MongoDB confirmed them; the stream is never trimmed by length, so while the archive
is down it grows (its length and its oldest entry's age are reported as the archive backlog).

Like the episode index queue, the outbox is one key for all tenants, so the scripts that touch it
need a single Redis node rather than a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from .memory import Memory, MemoryType, Tier

Fields = dict[str, str | bytes]


@dataclass(frozen=True)
class Backlog:
    """Outbox entries not yet archived, and how long the oldest has waited."""

    entries: int
    oldest_age_s: float

    @classmethod
    def total(cls, parts: Sequence[Backlog]) -> Backlog:
        """The backlog of several partitions together."""
        return cls(sum(b.entries for b in parts), max((b.oldest_age_s for b in parts), default=0.0))


class Kind(StrEnum):
    MEMORY = "memory"
    EPISODE = "episode"
    CHECKPOINT = "checkpoint"
    AGENT_STATE = "agent_state"


class Op(StrEnum):
    PUT = "put"
    DELETE = "del"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def entry(
    kind: Kind, op: Op, tenant: str, key: str, doc: bytes | str = b"", **extra: str | bytes
) -> Fields:
    """The stream fields of one outbox entry."""
    return {"kind": kind.value, "op": op.value, "tenant": tenant, "id": key, "doc": doc, **extra}


def flat(fields: Fields) -> list[str | bytes]:
    """Fields as the alternating name/value list a script's XADD takes."""
    out: list[str | bytes] = []
    for name, value in fields.items():
        out += [name, value]
    return out


def memory_put(tenant: str, memory: Memory, model: str = "") -> Fields:
    """A memory's archive document; `model` names the encoder that made its vector (a memory
    rehydrated later under another model is embedded again)."""
    assert memory.embedding is not None
    doc = {
        "agent_id": memory.agent_id,
        "session_id": memory.session_id,
        "content": memory.content,
        "context": memory.context,
        "key": memory.key,
        "tier": memory.tier.value,
        "type": memory.type.value,
        "tags": memory.tags,
        "importance": memory.importance,
        "metadata": memory.metadata,
        "related_ids": memory.related_ids,
        "event_time": memory.event_time,
        "create_time": memory.create_time,
        "update_time": memory.update_time,
        "expire_time": memory.expire_time,
        "model": model,
    }
    vector = np.asarray(memory.embedding, dtype=np.float32).tobytes()
    return entry(Kind.MEMORY, Op.PUT, tenant, memory.id, _compact(doc), vec=vector)


def episode_put(
    tenant: str, stream_id: str, body: bytes, agent: str, session: str, kind: str, outcome: str
) -> Fields:
    """An episode's entry. The episode append script writes this same entry itself (its stream
    id exists only inside the script); tests/integration/test_archive.py holds the two equal."""
    return entry(
        Kind.EPISODE,
        Op.PUT,
        tenant,
        stream_id,
        body,
        agent=agent,
        session=session,
        type=kind,
        outcome=outcome,
    )


def memory_delete(tenant: str, memory_id: str) -> Fields:
    return entry(Kind.MEMORY, Op.DELETE, tenant, memory_id)


def document_put(
    kind: Kind, tenant: str, key: str, doc: dict[str, Any], expire_at: float
) -> Fields:
    """A JSON document (checkpoint, agent state); expire_at 0 means it never expires."""
    return entry(kind, Op.PUT, tenant, key, _compact(doc), exp=repr(expire_at))


def document_delete(kind: Kind, tenant: str, key: str) -> Fields:
    return entry(kind, Op.DELETE, tenant, key)


def checkpoint_key(session_id: str, number: int) -> str:
    return f"{session_id}\x1f{number}"


@dataclass(frozen=True)
class OutboxEntry:
    """One decoded outbox entry as the archiver sees it."""

    stream_id: str
    kind: Kind
    op: Op
    tenant: str
    key: str
    fields: dict[str, bytes]

    @classmethod
    def decode(cls, stream_id: bytes | str, raw: dict[bytes, bytes]) -> OutboxEntry:
        fields = {k.decode(): v for k, v in raw.items()}
        return cls(
            stream_id=stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
            kind=Kind(fields["kind"].decode()),
            op=Op(fields["op"].decode()),
            tenant=fields["tenant"].decode(),
            key=fields["id"].decode(),
            fields=fields,
        )

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.fields["doc"])
        return value


def memory_from_doc(memory_id: str, doc: dict[str, Any], vector: bytes | None) -> Memory:
    """A Memory from its outbox/archive document (the same shape in both)."""
    return Memory(
        id=memory_id,
        agent_id=doc["agent_id"],
        session_id=doc.get("session_id", ""),
        content=doc["content"],
        context=doc.get("context", ""),
        key=doc.get("key") or "",
        tier=Tier(doc["tier"]),
        type=MemoryType(doc["type"]),
        tags=list(doc.get("tags", [])),
        importance=float(doc.get("importance", 0.0)),
        metadata=dict(doc.get("metadata") or {}),
        related_ids=list(doc.get("related_ids", [])),
        event_time=float(doc["event_time"]),
        create_time=float(doc["create_time"]),
        update_time=float(doc["update_time"]),
        expire_time=None if doc.get("expire_time") is None else float(doc["expire_time"]),
        embedding=None if vector is None else np.frombuffer(vector, dtype=np.float32).copy(),
        embedding_model=doc.get("model") or "",
    )
