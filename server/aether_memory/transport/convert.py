"""Proto messages to domain values and back, validating every field on the way in.

Validation collects all violations of a request and raises one InvalidField naming each field by
its proto path (`memory.tags[2]`); size limits raise TooLarge (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from typing import Any

import numpy as np
import numpy.typing as npt
from aether.memory.v1 import memory_pb2, working_memory_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..domain.documents import MessageDoc, SessionDoc
from ..domain.errors import InvalidField, TooLarge
from ..domain.memory import DEFAULT_IMPORTANCE, Memory, MemoryFilter, MemoryType, Tier

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_CONTENT_BYTES = 32 * 1024
MAX_CONTEXT_BYTES = 8192
MAX_KEY_BYTES = 512
MAX_ID_BYTES = 128
MAX_TAGS = 32
MAX_METADATA_BYTES = 16 * 1024
MAX_RELATED = 100

TIER_TO_PROTO = {
    Tier.SCRATCHPAD: memory_pb2.MEMORY_TIER_SCRATCHPAD,
    Tier.WORKING: memory_pb2.MEMORY_TIER_WORKING,
    Tier.SHORT_TERM: memory_pb2.MEMORY_TIER_SHORT_TERM,
    Tier.LONG_TERM: memory_pb2.MEMORY_TIER_LONG_TERM,
    Tier.EPISODIC: memory_pb2.MEMORY_TIER_EPISODIC,
}
TIER_FROM_PROTO = {v: k for k, v in TIER_TO_PROTO.items()}
TYPE_TO_PROTO = {
    MemoryType.FACT: memory_pb2.MEMORY_TYPE_FACT,
    MemoryType.PREFERENCE: memory_pb2.MEMORY_TYPE_PREFERENCE,
    MemoryType.EVENT: memory_pb2.MEMORY_TYPE_EVENT,
    MemoryType.PROCEDURE: memory_pb2.MEMORY_TYPE_PROCEDURE,
    MemoryType.SUMMARY: memory_pb2.MEMORY_TYPE_SUMMARY,
    MemoryType.OBSERVATION: memory_pb2.MEMORY_TYPE_OBSERVATION,
}
TYPE_FROM_PROTO = {v: k for k, v in TYPE_TO_PROTO.items()}


class Violations:
    """Collects (field, description) pairs; `raise_if_any` raises them as one InvalidField."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, why: str) -> None:
        self.items.append((field, why))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidField(self.items)

    def identifier(self, field: str, value: str, *, required: bool) -> None:
        if not value:
            if required:
                self.add(field, "is required")
            return
        if len(value.encode()) > MAX_ID_BYTES:
            self.add(field, f"must be at most {MAX_ID_BYTES} bytes")
        if _CONTROL.search(value):
            self.add(field, "must not contain control characters")
        elif value != value.strip():
            # The index trims tag values, so such a value could never be matched again.
            self.add(field, "must not start or end with whitespace")

    def text(self, field: str, value: str, *, limit: int, required: bool = True) -> None:
        if required and not value.strip():
            self.add(field, "must not be empty or whitespace only")
        if len(value.encode()) > limit:
            raise TooLarge(field, limit)

    def enum(self, field: str, value: int, known: Container[Any], *, allow_unset: bool) -> None:
        if value == 0 and allow_unset:
            return
        if value not in known:
            self.add(field, f"unknown enum value {value}")


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(value)


def dict_to_struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    if value:
        result.update(value)
    return result


def check_struct_size(field: str, value: struct_pb2.Struct, limit: int) -> None:
    if value.ByteSize() > limit:
        raise TooLarge(field, limit)


MIN_TIMESTAMP_S = -62_135_596_800  # 0001-01-01T00:00:00Z, the range protobuf defines
MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_S = 315_576_000_000  # 10,000 years, protobuf's Duration range


# JSON nested deeper than this is refused when written. Each level is three protobuf messages
# (Value, Struct, map entry), and parsers stop at 100 nested messages: 33 levels were accepted
# and then every response that carried them failed to decode, on the server and in clients.
MAX_STRUCT_DEPTH = 20


def _value_violations(value: struct_pb2.Value, path: str, depth: int = 1) -> list[tuple[str, str]]:
    kind = value.WhichOneof("kind")
    if kind == "number_value" and not math.isfinite(value.number_value):
        return [(path, "numbers must be finite (JSON has no NaN or Infinity)")]
    if kind in ("struct_value", "list_value") and depth >= MAX_STRUCT_DEPTH:
        return [(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels")]
    if kind == "struct_value":
        return _struct_violations(value.struct_value, path, depth + 1)
    if kind == "list_value":
        found = []
        for i, item in enumerate(value.list_value.values):
            found += _value_violations(item, f"{path}[{i}]", depth + 1)
        return found
    return []


def _struct_violations(
    value: struct_pb2.Struct, path: str, depth: int = 1
) -> list[tuple[str, str]]:
    found = []
    for key, item in value.fields.items():
        found += _value_violations(item, f"{path}.{key}", depth)
        if found and found[-1][1].startswith("nests deeper"):
            break  # one path says it
    return found


def request_violations(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """What no handler should ever see, anywhere in a request, by field path: timestamps and
    durations outside protobuf's ranges and non-finite numbers inside Structs."""
    found: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        kind = field.message_type
        if (
            field.type != FieldDescriptor.TYPE_MESSAGE
            or kind is None
            or kind.GetOptions().map_entry
        ):
            continue
        items = list(value) if field.is_repeated else [value]
        for i, item in enumerate(items):
            path = f"{prefix}{field.name}[{i}]" if field.is_repeated else f"{prefix}{field.name}"
            if kind.full_name == "google.protobuf.Timestamp":
                if not MIN_TIMESTAMP_S <= item.seconds <= MAX_TIMESTAMP_S or not (
                    0 <= item.nanos < 1_000_000_000
                ):
                    found.append((path, "must be between 0001-01-01 and 9999-12-31 UTC"))
            elif kind.full_name == "google.protobuf.Duration":
                if abs(item.seconds) > MAX_DURATION_S or abs(item.nanos) >= 1_000_000_000:
                    found.append((path, "must be within ±10,000 years"))
            elif kind.full_name == "google.protobuf.Struct":
                found += _struct_violations(item, path)
            elif kind.full_name == "google.protobuf.Value":
                found += _value_violations(item, path)
            elif kind.full_name != "google.protobuf.ListValue":
                found += request_violations(item, path + ".")
    return found


def check_request(message: Any) -> None:
    violations = request_violations(message)
    if violations:
        raise InvalidField(violations)


def to_seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def timestamp_us(micros: Any) -> timestamp_pb2.Timestamp | None:
    """A document time (integer microseconds, see stores/redis/documents.py) as a Timestamp."""
    if not micros:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromMicroseconds(int(micros))
    return ts


def vector_of(values: Any) -> npt.NDArray[np.float32] | None:
    if not len(values):
        return None
    return np.asarray(values, dtype=np.float32)


def check_vector(field: str, values: Any, v: Violations) -> None:
    if not len(values):
        return
    vector = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(vector)):
        v.add(field, "must hold finite numbers")
    elif not np.any(vector):
        v.add(field, "must not be all zeros (it has no direction)")


def memory_from_proto(message: memory_pb2.Memory, prefix: str, v: Violations) -> Memory:
    """A validated draft for StoreMemory (output-only fields are ignored)."""
    v.identifier(f"{prefix}.agent_id", message.agent_id, required=True)
    v.identifier(f"{prefix}.session_id", message.session_id, required=False)
    v.text(f"{prefix}.content", message.content, limit=MAX_CONTENT_BYTES)
    v.text(f"{prefix}.context", message.context, limit=MAX_CONTEXT_BYTES, required=False)
    check_key(f"{prefix}.key", message.key, v)
    v.enum(f"{prefix}.tier", message.tier, TIER_FROM_PROTO, allow_unset=True)
    v.enum(f"{prefix}.type", message.type, TYPE_FROM_PROTO, allow_unset=True)
    check_tags(f"{prefix}.tags", list(message.tags), v)
    importance = DEFAULT_IMPORTANCE
    if message.HasField("importance"):
        importance = message.importance
        if not 0.0 <= importance <= 1.0:
            v.add(f"{prefix}.importance", "must be between 0.0 and 1.0")
    check_struct_size(f"{prefix}.metadata", message.metadata, MAX_METADATA_BYTES)
    if len(message.related_ids) > MAX_RELATED:
        v.add(f"{prefix}.related_ids", f"must hold at most {MAX_RELATED} ids")
    for i, related in enumerate(message.related_ids):
        v.identifier(f"{prefix}.related_ids[{i}]", related, required=True)
    check_vector(f"{prefix}.embedding", message.embedding, v)
    return Memory(
        id="",
        agent_id=message.agent_id,
        session_id=message.session_id,
        content=message.content,
        context=message.context,
        key=message.key,
        tier=TIER_FROM_PROTO.get(message.tier, Tier.LONG_TERM),
        type=TYPE_FROM_PROTO.get(message.type, MemoryType.FACT),
        tags=list(dict.fromkeys(message.tags)),
        importance=importance,
        metadata=struct_to_dict(message.metadata),
        related_ids=list(dict.fromkeys(message.related_ids)),
        event_time=to_seconds(message.event_time) if message.HasField("event_time") else 0.0,
    )


def check_key(field: str, key: str, v: Violations) -> None:
    """A memory's key is opaque (only hashed and stored, never part of a query): any text up
    to MAX_KEY_BYTES; empty means none."""
    if len(key.encode()) > MAX_KEY_BYTES:
        v.add(field, f"must be at most {MAX_KEY_BYTES} bytes")


def check_tags(field: str, tags: list[str], v: Violations) -> None:
    if len(tags) > MAX_TAGS:
        v.add(field, f"must hold at most {MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        v.identifier(f"{field}[{i}]", tag, required=True)


def filter_from_proto(
    agent_id: str, message: memory_pb2.MemoryFilter, prefix: str, v: Violations
) -> MemoryFilter:
    v.identifier("agent_id", agent_id, required=True)
    v.identifier(f"{prefix}.session_id", message.session_id, required=False)
    for i, tier in enumerate(message.tiers):
        v.enum(f"{prefix}.tiers[{i}]", tier, TIER_FROM_PROTO, allow_unset=False)
    for i, kind in enumerate(message.types):
        v.enum(f"{prefix}.types[{i}]", kind, TYPE_FROM_PROTO, allow_unset=False)
    check_tags(f"{prefix}.tags", list(message.tags), v)
    min_importance = message.min_importance if message.HasField("min_importance") else None
    if min_importance is not None and not 0.0 <= min_importance <= 1.0:
        v.add(f"{prefix}.min_importance", "must be between 0.0 and 1.0")
    start = to_seconds(message.start_time) if message.HasField("start_time") else None
    end = to_seconds(message.end_time) if message.HasField("end_time") else None
    if start is not None and end is not None and end <= start:
        v.add(f"{prefix}.end_time", "must be after start_time")
    return MemoryFilter(
        agent_id=agent_id,
        session_id=message.session_id,
        tiers=tuple(TIER_FROM_PROTO[t] for t in message.tiers if t in TIER_FROM_PROTO),
        types=tuple(TYPE_FROM_PROTO[t] for t in message.types if t in TYPE_FROM_PROTO),
        tags=tuple(message.tags),
        start_time=start,
        end_time=end,
        min_importance=min_importance,
    )


def memory_to_proto(memory: Memory, *, full: bool) -> memory_pb2.Memory:
    message = memory_pb2.Memory(
        id=memory.id,
        agent_id=memory.agent_id,
        session_id=memory.session_id,
        content=memory.content,
        context=memory.context,
        key=memory.key,
        tier=TIER_TO_PROTO[memory.tier],
        type=TYPE_TO_PROTO[memory.type],
        tags=memory.tags,
        importance=memory.importance,
        metadata=dict_to_struct(memory.metadata),
        related_ids=memory.related_ids,
        event_time=timestamp(memory.event_time),
        create_time=timestamp(memory.create_time),
        update_time=timestamp(memory.update_time),
        last_access_time=timestamp(memory.last_access_time),
        access_count=memory.access_count,
        expire_time=timestamp(memory.expire_time),
    )
    if full and memory.embedding is not None:
        message.embedding.extend(memory.embedding.tolist())
    return message


def page_size(field: str, value: int, default: int, maximum: int, v: Violations) -> int:
    if value < 0:
        v.add(field, "must not be negative")
        return default
    return min(value or default, maximum)


def message_to_doc(message: working_memory_pb2.ContextMessage) -> MessageDoc:
    return {
        "role": message.role,
        "content": message.content,
        "metadata": struct_to_dict(message.metadata),
    }


def session_to_proto(doc: SessionDoc) -> working_memory_pb2.Session:
    session = working_memory_pb2.Session(
        session_id=doc["session_id"],
        agent_id=doc.get("agent_id", ""),
        state=dict_to_struct(doc.get("state")),
        revision=int(doc.get("revision", 0)),
        update_time=timestamp_us(doc.get("update_time")),
        expire_time=timestamp_us(doc.get("expire_time")),
    )
    # Built in place: a session holds up to 1000 messages, and a Struct and a Timestamp made
    # apart and copied in cost twice as much (AppendWorkingMemory answers with all of them).
    add = session.messages.add
    for m in doc.get("messages", []):
        message = add(role=m["role"], content=m["content"])
        message.metadata.SetInParent()  # present even when empty
        if m.get("metadata"):
            message.metadata.update(m["metadata"])
        if m.get("create_time"):
            message.create_time.FromMicroseconds(int(m["create_time"]))
    return session
