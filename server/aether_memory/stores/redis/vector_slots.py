"""Two hash fields a vector may live in, so another model's vectors can be written beside the
serving model's while the service serves (`aether-memory reembed`).

An index reads its vectors from one slot. A new index for another model reads the other one:
both indexes cover the same hashes, and until the cut-over the service keeps searching the old
index with the old model while the new slot is filled. Every rewrite of a memory by the service
drops the other slot (its vector there was made from the old content); a fill pass writes a
vector only into a hash that still exists and still holds the text it was made from.

The state of a re-embedding is kept in the target index's meta hash (`keys.index_meta`):
`reembed_source` (the index it replaces) and `reembed_state`: `building` while the command
fills it, `filled` once a pass found nothing left, `complete` once the service serving it found
nothing left either (nothing the old service wrote is missing then).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redisvl.exceptions import RedisSearchError
from redisvl.index import AsyncSearchIndex
from redisvl.schema import IndexSchema

from .keys import index_meta
from .scripts import evalsha_pipelined
from .search import missing_index, routed
from .walk import scan_step

SLOTS = ("embedding", "embedding_b")
BUILDING, FILLED, COMPLETE = "building", "filled", "complete"

# Writes a vector into a hash that still exists and, where a guard field is named, still holds
# the text the vector was made from. KEYS: the hash. ARGV: slot, vector, guard field ("": none),
# the guard's expected value. Returns 1 when written.
_PUT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def other_slot(slot: str) -> str:
    return SLOTS[1] if slot == SLOTS[0] else SLOTS[0]


@dataclass(frozen=True)
class VectorAttribute:
    """An index's vector attribute: the hash field it reads, its dimension and element type."""

    slot: str
    dimension: int
    vector_type: str  # "float32" or "float16"


def vector_attribute(info: dict[str, Any]) -> VectorAttribute | None:
    """The vector attribute of an index, from RedisVL's decoded FT.INFO."""
    for attribute in info.get("attributes", []):
        attrs = dict(zip(attribute[::2], attribute[1::2], strict=False))
        if str(attrs.get("type", "")).upper() == "VECTOR":
            return VectorAttribute(
                str(attrs.get("identifier")),
                int(attrs.get("dim", 0)),
                str(attrs.get("data_type", "FLOAT32")).lower(),
            )
    return None


async def reembed_state(client: Any, index_name: str) -> tuple[str | None, str | None]:
    """(source index, state) of an index built by `reembed`; (None, None) for any other."""
    source, state = await client.hmget(index_meta(index_name), ["reembed_source", "reembed_state"])
    return (
        source.decode() if source is not None else None,
        state.decode() if state is not None else None,
    )


async def set_reembed_state(client: Any, index_name: str, source: str, state: str) -> None:
    await client.hset(
        index_meta(index_name), mapping={"reembed_source": source, "reembed_state": state}
    )


class SlotFill:
    """Walks every hash under a key prefix (SCAN: a full walk visits every hash present
    throughout it) and writes vectors into one slot of those that lack it."""

    def __init__(self, client: aioredis.Redis, prefix: str, slot: str, guard: str | None) -> None:
        self._client: Any = client
        self.prefix = prefix
        self.slot = slot
        self.guard = guard  # the field the vector is made from, when it may change
        self._put = client.register_script(_PUT_SCRIPT)

    async def lacking(self, cursor: int, count: int) -> tuple[int, int, list[bytes]]:
        """(cursor after, hashes walked, those of them without a vector in the slot)."""
        cursor, names = await scan_step(self._client, cursor, self.prefix + "*", count, "HASH")
        if not names:
            return int(cursor), 0, []
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hexists(name, self.slot)
            present = await pipe.execute()
        lacking = [n for n, has in zip(names, present, strict=True) if not has]
        return int(cursor), len(names), lacking

    async def fields(self, names: Sequence[bytes], field: str) -> list[bytes | None]:
        # A pipeline, not one script over all the keys as a search reads vectors: a walk's
        # hashes belong to many tenants, and no script may touch two tenants' key slots.
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(name, field)
            return list(await pipe.execute())

    async def put(
        self, names: Sequence[bytes], vectors: Sequence[bytes], guards: Sequence[bytes | None]
    ) -> int:
        """Write each vector unless its hash was removed or its guard field changed; how many
        were written."""
        calls = [
            ([name], [self.slot, vector, self.guard or "", guard or b""])
            for name, vector, guard in zip(names, vectors, guards, strict=True)
        ]
        replies = await evalsha_pipelined(self._client, self._put, calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return sum(int(x) for x in replies)

    async def drop(self, cursor: int, count: int, slot: str) -> tuple[int, int, int]:
        """Remove `slot` from the next hashes of the walk: (cursor after, hashes walked, how
        many held it)."""
        cursor, names = await scan_step(self._client, cursor, self.prefix + "*", count, "HASH")
        if not names:
            return int(cursor), 0, 0
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hdel(name, slot)
            return int(cursor), len(names), sum(int(x) for x in await pipe.execute())


async def held_vectors(client: Any, name: str) -> tuple[VectorAttribute | None, int] | None:
    """(vector attribute, documents) of an index; None where there is no such index."""
    index = AsyncSearchIndex(IndexSchema.from_dict({"index": {"name": name}}), redis_client=client)
    try:
        info = await index.info()
    except RedisSearchError as error:
        if missing_index(error):
            return None
        raise
    return vector_attribute(info), int(info.get("num_docs", 0))


async def drop_index(client: Any, index_name: str) -> bool:
    """Drop an index, keeping its documents; False if it did not exist."""
    try:
        await client.execute_command("FT.DROPINDEX", index_name, **routed(client, index_name))
    except redis.exceptions.ResponseError as error:
        if missing_index(error):
            return False
        raise
    return True


async def create_index(index: AsyncSearchIndex) -> bool:
    """Create `index`; False when it exists already. Replicas (and `serve --workers`) start
    together, so another may create it between a check that it is missing and this call."""
    try:
        await index.create(overwrite=False)
    except RedisSearchError as error:
        if "already exists" not in str(error):
            raise
        return False
    return True
