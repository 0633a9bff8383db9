"""Memories in Redis hashes under RediSearch indexes (vectors, BM25 text, tags, numbers).

Two layouts (AETHER_INDEX_LAYOUT):

- `shared`: one HNSW index over every tenant's memories; every query carries the tenant's tag
  filter, added here and nowhere else.
- `tenant`: one index per tenant, over that tenant's key prefix and named in its hash tag, so on
  a Redis Cluster it lives on the node that holds the tenant (docs/architecture.md, "Beyond one
  Redis"). It is created empty before the tenant's first memory is written (an index created
  over existing keys scans the node's whole keyspace), holds exact (FLAT) vectors unless
  AETHER_TENANT_INDEX_VECTORS says HNSW, and its queries need no tenant filter.

User values reach RediSearch only through `query.py` (escaped tag clauses, word tokens for text)
or RedisVL's `Num`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis
import redis.exceptions
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.exceptions import RedisClusterException
from redisvl.index import AsyncSearchIndex
from redisvl.query import CountQuery, FilterQuery, VectorQuery
from redisvl.query.filter import FilterExpression, Num
from redisvl.schema import IndexSchema

from ...domain import outbox
from ...domain.errors import StartupError
from ...domain.memory import Memory, MemoryFilter, MemoryType, Tier
from ...domain.rerank import Facts, Hits, content_facts, speaker_of
from ...domain.tenant import Tenant
from ...telemetry import operation
from .embedded import HASH_LISTPACK_VALUE
from .keys import (
    MAINTENANCE_CURSOR,
    MEMORY_PREFIX,
    TenantKeys,
    index_meta,
    keys_of,
    tenant_of,
)
from .outbox import OutboxMarks
from .query import SINGLE_VALUE, TAG_SEPARATOR, KeywordQuery, keyword_terms, tag_in
from .scripts import evalsha_pipelined
from .search import (
    NO_HITS,
    TenantIndexes,
    create_args,
    documents,
    info_field,
    missing_index,
    pipelined_totals,
    routed,
    search_args,
    total,
    vector_attrs,
)
from .vector_slots import SLOTS, create_index, other_slot, vector_attribute
from .walk import scan_step

log = logging.getLogger(__name__)

MAX_FILTER_RESULTS = 10_000
MAX_SCAN_CALLS = 10  # per maintenance batch
# How long one replica may take to move a tenant's index to HNSW before another may try.
INDEX_SWITCH_LOCK_MS = 600_000
# What keyword search matches: a memory's content, its context, and (for a memory stored into a
# session without a context) the content of the memory before it there, its `lead`.
KEYWORD_FIELDS = ("content", "context", "lead")
MAX_LEAD_BYTES = 2048  # a longer memory before it is no lead
REPLICA_BACKOFF_S = 10.0  # searches stay on the primary this long after the replica failed one
LAYOUTS = ("shared", "tenant")
# Fields added to the index after the first release: an older index gets them with FT.ALTER.
ADDED_FIELDS = {
    "context": ["TEXT"],
    "lead": ["TEXT"],
    "seq": ["NUMERIC"],
}

# RedisVL reports each document's key as "id", so the memory's own id is stored as "memory_id".
_SCALAR_FIELDS = [
    "memory_id",
    "agent_id",
    "session_id",
    "content",
    "context",
    "key",
    "tier",
    "type",
    "tags",
    "importance",
    "metadata",
    "event_time",
    "create_time",
    "update_time",
    "expire_time",
]

# Facts of the content written only when it has them (no empty hash fields).
_OPTIONAL = ("words", "speaker")

# What a search hit carries: re-scoring and the re-ranker's facts about the memory.
_HIT_FIELDS = [
    "memory_id",
    "event_time",
    "importance",
    "session_id",
    "seq",
    "words",
    "asks",
    "speaker",
]

# Stores a memory unless the agent already holds identical content (the dedup key names it).
# KEYS: memory, dedup, links, outbox, and the session's tail key when the memory joins a session.
# ARGV: id, ttl (0 = none), memory-key prefix, the number of field arguments, the number of link
# ids, the lead's byte limit, then the field/value pairs, the link ids, and the outbox entry's
# field/value pairs (none without an archive). A memory joining a session takes the session's
# next position (`seq`: its neighbours are seq - 1 and seq + 1) and, when it has no context, the
# content of the memory stored there before it as its `lead`; the tail (last id and position)
# lives as long as the longest-lived memory that set it. Returns the id of the memory that holds
# the content.
_STORE_SCRIPT = """
local existing = redis.call('GET', KEYS[2])
if existing and redis.call('EXISTS', ARGV[3] .. existing) == 1 then
  return existing
end
local ttl = tonumber(ARGV[2])
local nf, nl = tonumber(ARGV[4]), tonumber(ARGV[5])
local first = 7
local fields = {unpack(ARGV, first, first - 1 + nf)}
if #KEYS >= 5 then
  local previous = redis.call('HGET', KEYS[5], 'id')
  local left = redis.call('TTL', KEYS[5])
  table.insert(fields, 'seq')
  table.insert(fields, redis.call('HINCRBY', KEYS[5], 'seq', 1))
  local context = ''
  for i = 1, #fields, 2 do
    if fields[i] == 'context' then context = fields[i + 1] end
  end
  local lead = previous and redis.call('HGET', ARGV[3] .. previous, 'content')
  if context == '' and lead and #lead <= tonumber(ARGV[6]) then
    table.insert(fields, 'lead')
    table.insert(fields, lead)
  end
  redis.call('HSET', KEYS[5], 'id', ARGV[1])
  if ttl > 0 and left ~= -1 then
    redis.call('EXPIRE', KEYS[5], math.max(ttl, left))
  else
    redis.call('PERSIST', KEYS[5])
  end
end
-- One HSET: a second write to the hash would index the memory twice, and until RediSearch's
-- garbage collection the stale copy skews BM25 (LoCoMo keyword recall@10 0.633 -> 0.570).
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SET', KEYS[2], ARGV[1])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
if nl > 0 then redis.call('SADD', KEYS[3], unpack(ARGV, first + nf, first - 1 + nf + nl)) end
if #ARGV >= first + nf + nl then
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, first + nf + nl, #ARGV))
end
return ARGV[1]
"""

# Moves a memory to another tier unless it changed since it was read (update_time differs).
# KEYS: memory, dedup, access, outbox. ARGV: expected update_time, tier, new update_time,
# expire_time ("" for none), ttl (0 = persist), then the outbox entry's field/value pairs.
_RETIER_SCRIPT = """
if redis.call('HGET', KEYS[1], 'update_time') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'tier', ARGV[2], 'update_time', ARGV[3], 'expire_time', ARGV[4])
local ttl = tonumber(ARGV[5])
for i = 1, 3 do
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) else redis.call('PERSIST', KEYS[i]) end
end
if #ARGV > 5 then redis.call('XADD', KEYS[4], '*', unpack(ARGV, 6, #ARGV)) end
return 1
"""

# Drops a memory from the hot tier (it stays in the archive) unless it changed or was read since
# its decay was scored. KEYS: memory, dedup, links, access. ARGV: expected update_time, expected
# access count, memory id.
_EVICT_SCRIPT = """
if redis.call('HGET', KEYS[1], 'update_time') ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[4], 'count') or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""

# Reads memories with their links and access stats in one round trip. Read-only: under
# appendfsync always Redis answers a write only after its fsync, so reads never write (their
# access counts go through `record_accesses`, off the reader's path).
# KEYS: (memory, links, access) per memory.
_READ_SCRIPT = """#!lua flags=no-writes
local out = {}
for i = 1, #KEYS, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    table.insert(out, redis.call('HGETALL', KEYS[i]))
    table.insert(out, redis.call('SMEMBERS', KEYS[i + 1]))
    table.insert(out, redis.call('HGETALL', KEYS[i + 2]))
  else
    table.insert(out, {})
    table.insert(out, {})
    table.insert(out, {})
  end
end
return out
"""

# One field of several hashes (nil where absent). Read-only. KEYS: the hashes. ARGV: the field.
_FIELD_SCRIPT = """#!lua flags=no-writes
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], ARGV[1]) end
return out
"""

# Adds reads to memories' access stats; a memory gone since it was read is skipped. Access stats
# live in their own key: writing them into the indexed hash would make RediSearch re-index the
# document, vector included, on every read. The last access time never moves back.
# KEYS: (memory, access) per memory, one tenant. ARGV: (reads, last read time) per memory.
_TOUCH_SCRIPT = """
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i + 1], 'count', ARGV[i])
    local last = tonumber(redis.call('HGET', KEYS[i + 1], 'last') or '0')
    if tonumber(ARGV[i + 1]) > last then redis.call('HSET', KEYS[i + 1], 'last', ARGV[i + 1]) end
    local ttl = redis.call('TTL', KEYS[i])
    if ttl > 0 then redis.call('EXPIRE', KEYS[i + 1], ttl) end
  end
end
return 0
"""


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class RedisMemoryStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        index_name: str,
        dimension: int,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef_runtime: int = 100,
        vector_type: str = "float32",
        archived: bool = False,
        vector_slot: str = SLOTS[0],
        model: str = "",
        reader: aioredis.Redis | None = None,
        layout: str = "shared",
        tenant_vectors: str = "flat",
        archive_partitions: int = 1,
        tenant_hnsw_above: int = 0,
    ) -> None:
        """`vector_slot`: the hash field a new index reads vectors from (an existing index
        keeps its own; see vector_slots.py). `model`: the encoder whose vectors it holds, as
        the archive records it. `reader`: a replica that runs the hit queries (see _search).
        `layout`: `shared` or `tenant` (see the module's docstring); `tenant_vectors`: `flat`
        or `hnsw`, how a tenant's own index holds vectors; `tenant_hnsw_above`: with `flat`, the
        size past which `grow_indexes` moves a tenant's index to HNSW (0: never).
        `archive_partitions`: how many archivers drain the outbox (AETHER_ARCHIVE_PARTITIONS)."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown index layout {layout!r}")
        if tenant_vectors not in ("flat", "hnsw"):
            raise ValueError(f"unknown tenant index vectors {tenant_vectors!r}")
        self._tenant_vectors = tenant_vectors
        self._hnsw_above = tenant_hnsw_above
        self._tenants = (
            TenantIndexes(
                client,
                index_name,
                lambda name, prefix: self._schema(name, prefix, per_tenant=True),
            )
            if layout == "tenant"
            else None
        )
        self.per_tenant = self._tenants is not None
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self.dimension = dimension
        self.archived = archived  # every write then also appends to the archive outbox
        self.model = model
        self._reader: Any = reader
        self._reader_failed_at = -math.inf  # when the replica last failed a query (monotonic)
        self.index_name = index_name
        self.vector_slot = vector_slot
        self._hnsw = {
            "m": hnsw_m,
            "ef_construction": hnsw_ef_construction,
            "ef_runtime": hnsw_ef_runtime,
        }
        self._use_vector_type(vector_type)
        self._marks = OutboxMarks(client, archive_partitions)
        self._store_script = client.register_script(_STORE_SCRIPT)
        self._read_script = client.register_script(_READ_SCRIPT)
        self._field_script = client.register_script(_FIELD_SCRIPT)
        self._touch_script = client.register_script(_TOUCH_SCRIPT)
        self._retier_script = client.register_script(_RETIER_SCRIPT)
        self._evict_script = client.register_script(_EVICT_SCRIPT)

    def _use_vector_type(self, vector_type: str) -> None:
        """Vectors are held in the hashes and the HNSW index as float32, or as float16: half the
        bytes, with the same recall@10 against exact KNN (bench/results/hnsw.md)."""
        if vector_type.lower() not in ("float32", "float16"):
            raise ValueError(f"unsupported vector type {vector_type!r}")
        self.vector_type = vector_type.lower()
        self._np_type: type[np.floating[Any]] = (
            np.float16 if self.vector_type == "float16" else np.float32
        )
        self.schema = self._schema(self.index_name, MEMORY_PREFIX, per_tenant=False)
        self.index = AsyncSearchIndex(self.schema, redis_client=self._client)

    def _schema(
        self, name: str, prefix: str, *, per_tenant: bool, hnsw: bool = False
    ) -> IndexSchema:
        """The shared index's schema, or (`per_tenant`) one tenant's: no tenant field, and
        FLAT vectors in small blocks unless the settings (or `hnsw`) ask for HNSW."""
        flat = per_tenant and self._tenant_vectors == "flat" and not hnsw
        vectors = vector_attrs(self.dimension, self.vector_type, flat=flat, hnsw=self._hnsw)
        tenant = [] if per_tenant else [{"name": "tenant", "type": "tag", "attrs": SINGLE_VALUE}]
        return IndexSchema.from_dict(
            {
                "index": {"name": name, "prefix": prefix, "storage_type": "hash"},
                "fields": [
                    *tenant,
                    {"name": "agent_id", "type": "tag", "attrs": SINGLE_VALUE},
                    {"name": "session_id", "type": "tag", "attrs": SINGLE_VALUE},
                    {"name": "tier", "type": "tag"},
                    {"name": "type", "type": "tag"},
                    {
                        "name": "tags",
                        "type": "tag",
                        "attrs": {"separator": TAG_SEPARATOR, "case_sensitive": True},
                    },
                    {"name": "content", "type": "text"},
                    {"name": "context", "type": "text"},
                    {"name": "lead", "type": "text"},
                    {"name": "importance", "type": "numeric"},
                    {"name": "event_time", "type": "numeric"},
                    {"name": "create_time", "type": "numeric", "attrs": {"sortable": True}},
                    {"name": "seq", "type": "numeric"},
                    {"name": self.vector_slot, "type": "vector", "attrs": vectors},
                ],
            }
        )

    def index_of(self, tenant: Tenant) -> str:
        """The index that answers `tenant`'s queries."""
        return self._tenants.name(tenant) if self._tenants is not None else self.index_name

    @property
    def vector_dtype(self) -> type[np.floating[Any]]:
        """How this index's vectors are held (float32 or float16)."""
        return self._np_type

    async def ensure_index(self) -> None:
        """Create the index if it does not exist; a different dimension is a startup error.

        An existing index keeps its vector type and slot (the settings apply to new indexes),
        and one made before a text field existed gets it with FT.ALTER (new and rewritten
        memories are then indexed by it; older ones have no value for it anyway).

        In the `tenant` layout nothing is created here (each tenant's index is made before its
        first memory); the deployment's vector settings are recorded once and win over the
        settings of later starts, as an existing index's do.
        """
        layout = await self._client.hget(index_meta(self.index_name), "layout")
        held_layout = layout.decode() if layout is not None else None
        if self.per_tenant:
            await self._ensure_tenant_layout(held_layout)
        elif held_layout not in (None, "shared"):
            raise StartupError(
                f"{self.index_name} holds one index per tenant (AETHER_INDEX_LAYOUT=tenant); "
                "start with that layout, or set AETHER_INDEX_NAME to a new index"
            )
        else:
            await self._ensure_shared_index()
        await self._check_hash_encoding()

    async def _exists(self, name: str) -> bool:
        try:
            await self._client.execute_command("FT.INFO", name, **routed(self._client, name))
        except redis.exceptions.ResponseError as error:
            if missing_index(error):
                return False
            raise
        return True

    async def _ensure_tenant_layout(self, held_layout: str | None) -> None:
        if held_layout not in (None, "tenant") or await self._exists(self.index_name):
            raise StartupError(
                f"{self.index_name} is one index shared by every tenant: AETHER_INDEX_LAYOUT="
                "tenant needs its memories moved into per-tenant indexes first "
                "(`aether-memory index-layout tenant`), or another AETHER_INDEX_NAME"
            )
        meta = index_meta(self.index_name)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(meta, "layout", "tenant")
            pipe.hsetnx(meta, "dimension", str(self.dimension))
            pipe.hsetnx(meta, "vector_type", self.vector_type)
            pipe.hsetnx(meta, "vector_slot", self.vector_slot)
            pipe.hsetnx(meta, "tenant_vectors", self._tenant_vectors)
            pipe.hmget(meta, ["dimension", "vector_type", "vector_slot", "tenant_vectors"])
            *_, held = await pipe.execute()
        dimension, vector_type, slot, tenant_vectors = (v.decode() for v in held)
        if int(dimension) != self.dimension:
            raise StartupError(
                f"{self.index_name} holds {dimension}-d vectors but the model pack produces "
                f"{self.dimension}-d: use the pack that wrote them, or another AETHER_INDEX_NAME"
            )
        self._tenant_vectors = tenant_vectors
        if (vector_type, slot) != (self.vector_type, self.vector_slot):
            self.vector_slot = slot
            self._use_vector_type(vector_type)

    async def prepare(self, tenant: Tenant) -> None:
        """Make sure `tenant` has its own index before a memory of it is written (`tenant`
        layout; nothing to do in the shared one): see search.TenantIndexes."""
        if self._tenants is not None:
            await self._tenants.ready(tenant, keys_of(tenant).memory(""))

    async def grow_indexes(self) -> list[Tenant]:
        """Move to HNSW every tenant index of FLAT vectors that holds more than
        `tenant_hnsw_above` memories (the maintenance tick calls this): exact search costs in
        proportion to a tenant's size, HNSW hardly grows (FLAT is the faster below about
        20,000: bench/results/index-layout.md). The tenants moved."""
        if self._tenants is None or self._tenant_vectors != "flat" or self._hnsw_above <= 0:
            return []
        names = await self._tenants.names()
        totals = await self._pipelined_totals(
            [["FT.SEARCH", name, "*", "LIMIT", 0, 0] for name in names]
        )
        large = [
            tenant_of(n) for n, count in zip(names, totals, strict=True) if count > self._hnsw_above
        ]
        return [tenant for tenant in large if await self._to_hnsw(tenant)]

    async def _index_info(self, name: str) -> Any:
        """FT.INFO of an index (or of the alias of one); None when there is neither."""
        try:
            return await self._client.execute_command("FT.INFO", name, **routed(self._client, name))
        except redis.exceptions.ResponseError as error:
            if missing_index(error):
                return None
            raise

    async def _to_hnsw(self, tenant: Tenant) -> bool:
        """Build an HNSW index of the tenant's memories beside its FLAT one, then let its name
        answer by an alias of the new index and drop the FLAT one (keeping the documents).
        Searches see a complete index throughout: while both exist, the index wins over the
        alias of the same name. One replica at a time (a lock in the tenant's slot); a move
        that stopped halfway is finished by the next."""
        name = self.index_of(tenant)
        info = await self._index_info(name)
        if info is None or info_field(info, "index_name") != name:
            return False  # none, or moved already (the name is an alias)
        lock, token = keys_of(tenant).index_switch(self.index_name), uuid.uuid4().hex
        if not await self._client.set(lock, token, nx=True, px=INDEX_SWITCH_LOCK_MS):
            return False
        try:
            hnsw, prefix = f"{name}:hnsw", keys_of(tenant).memory("")
            schema = self._schema(hnsw, prefix, per_tenant=True, hnsw=True)
            try:  # over the tenant's existing memories: RediSearch scans them in the background
                await self._client.execute_command(
                    *create_args(schema, prefix, scan=True), **routed(self._client, hnsw)
                )
            except redis.exceptions.ResponseError as error:
                if "already exists" not in str(error).lower():
                    raise
            deadline = time.monotonic() + INDEX_SWITCH_LOCK_MS / 1000
            while int(info_field(await self._index_info(hnsw), "indexing") or 0):
                if time.monotonic() > deadline:  # the next tick's move goes on from here
                    raise TimeoutError(f"{hnsw} is still indexing")
                await asyncio.sleep(0.2)  # Redis says when it is done only when asked
            try:
                await self._client.execute_command(
                    "FT.ALIASADD", name, hnsw, **routed(self._client, name)
                )
            except redis.exceptions.ResponseError as error:
                if "alias already exists" not in str(error).lower():
                    raise
            await self._client.execute_command("FT.DROPINDEX", name, **routed(self._client, name))
            log.info(
                "%s's index holds more than %d memories: moved to HNSW", tenant, self._hnsw_above
            )
            return True
        finally:
            if await self._client.get(lock) == token.encode():
                await self._client.delete(lock)

    async def create_index_on(self, node: Any, tenant: Tenant) -> None:
        """Create `tenant`'s index on a cluster node that imports its slot (`tenant` layout)."""
        assert self._tenants is not None, "only the tenant layout has an index per tenant"
        await self._tenants.create_on(node, tenant, keys_of(tenant).memory(""))

    async def _ensure_shared_index(self) -> None:
        await self._client.hsetnx(index_meta(self.index_name), "layout", "shared")
        if await self.index.exists() or not await create_index(self.index):
            info = await self.index.info()
            present = set()
            for attribute in info.get("attributes", []):
                attrs = dict(zip(attribute[::2], attribute[1::2], strict=False))
                present.add(attrs.get("identifier"))
            held = vector_attribute(info)
            if held is not None:
                if held.dimension != self.dimension:
                    raise StartupError(
                        f"index {self.schema.index.name} holds {held.dimension}-d vectors but "
                        f"the model pack produces {self.dimension}-d: use the pack that wrote "
                        "them, or another AETHER_INDEX_NAME (`aether-memory reembed` builds one)"
                    )
                if (held.vector_type, held.slot) != (self.vector_type, self.vector_slot):
                    self.vector_slot = held.slot  # the index's own win over the settings
                    self._use_vector_type(held.vector_type)
            for name, spec in ADDED_FIELDS.items():
                if name not in present:
                    try:
                        await self._client.execute_command(
                            "FT.ALTER", self.schema.index.name, "SCHEMA", "ADD", name, *spec
                        )
                    except redis.exceptions.ResponseError as error:
                        if "Duplicate" not in str(error):  # another replica added it first
                            raise

    async def _check_hash_encoding(self) -> None:
        """Warn when memory hashes cannot be listpacks (hundreds of bytes more per memory)."""
        vector_bytes = self.dimension * np.dtype(self._np_type).itemsize
        try:
            limit = int((await self._client.config_get("hash-max-listpack-value")).popitem()[1])
        except (redis.exceptions.ResponseError, KeyError, ValueError, TypeError):
            return  # a managed Redis may refuse CONFIG (a cluster answers per node): say nothing
        if limit < vector_bytes:
            log.warning(
                "hash-max-listpack-value is %d, below the %d bytes of a memory's vector: each "
                "memory hash is stored as a hashtable; set it to %d or more to save about a "
                "third of the hash's memory",
                limit,
                vector_bytes,
                HASH_LISTPACK_VALUE,
            )

    async def vector_space(self) -> str | None:
        """The vector space recorded for this index (see ModelPack's manifest), if any."""
        held = await self._client.hget(index_meta(self.index_name), "vector_space")
        return held.decode() if held is not None else None

    async def record_vector_space(self, space: str) -> None:
        await self._client.hset(
            index_meta(self.index_name),
            mapping={"vector_space": space, "dimension": str(self.dimension)},
        )

    async def sample(self, limit: int) -> list[Memory]:
        """Up to `limit` memories of any tenant, with their vectors (a start-up check)."""
        _, found = await self.scan(0, limit)
        by_tenant: dict[Tenant, list[str]] = {}
        for tenant, memory in found[:limit]:
            by_tenant.setdefault(tenant, []).append(memory.id)
        sampled = []
        for tenant, ids in by_tenant.items():
            sampled += list((await self.get_many(tenant, ids)).values())
        return sampled

    # ---- filters -------------------------------------------------------------------------

    def _filter(self, keys: TenantKeys, flt: MemoryFilter) -> FilterExpression:
        expr = tag_in("agent_id", flt.agent_id)
        if not self.per_tenant:  # a tenant's own index holds nothing else
            expr = tag_in("tenant", keys.tenant) & expr
        if flt.session_id:
            expr &= tag_in("session_id", flt.session_id)
        if flt.tiers:
            expr &= tag_in("tier", [t.value for t in flt.tiers])
        if flt.types:
            expr &= tag_in("type", [t.value for t in flt.types])
        if flt.tags:
            expr &= tag_in("tags", list(flt.tags))
        if flt.start_time is not None:
            expr &= Num("event_time") >= flt.start_time
        if flt.end_time is not None:
            expr &= Num("event_time") < flt.end_time
        if flt.min_importance is not None:
            expr &= Num("importance") >= flt.min_importance
        return expr

    # ---- encoding ------------------------------------------------------------------------

    def _fields(self, keys: TenantKeys, memory: Memory) -> dict[str | bytes, str | bytes]:
        assert memory.embedding is not None
        words, asks = content_facts(memory.content, bool(memory.session_id))
        fields: dict[str | bytes, str | bytes] = {
            "tenant": keys.tenant,
            "memory_id": memory.id,
            "agent_id": memory.agent_id,
            "session_id": memory.session_id,
            "content": memory.content,
            "context": memory.context,
            "tier": memory.tier.value,
            "type": memory.type.value,
            "tags": TAG_SEPARATOR.join(memory.tags),
            "importance": repr(memory.importance),
            "metadata": json.dumps(memory.metadata, separators=(",", ":")),
            "event_time": repr(memory.event_time),
            "create_time": repr(memory.create_time),
            "update_time": repr(memory.update_time),
            "expire_time": "" if memory.expire_time is None else repr(memory.expire_time),
            self.vector_slot: np.asarray(memory.embedding).astype(self._np_type).tobytes(),
            "asks": "1" if asks else "0",
        }
        if words is not None:
            fields["words"] = str(words)
        if memory.key:
            fields["key"] = memory.key
        speaker = speaker_of(memory.content)
        if speaker is not None:
            fields["speaker"] = speaker
        return fields

    @staticmethod
    def _pairs(flat: Sequence[Any]) -> dict[bytes, bytes]:
        return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}

    def _decode(
        self,
        raw: dict[Any, Any],
        links: Iterable[Any] = (),
        access: dict[bytes, bytes] | None = None,
    ) -> Memory:
        def text(name: str) -> str:
            value = raw.get(name, raw.get(name.encode(), ""))
            return value.decode() if isinstance(value, bytes) else str(value)

        vector = raw.get(self.vector_slot.encode(), raw.get(self.vector_slot))
        expire = text("expire_time")
        tags = text("tags")
        return Memory(
            id=text("memory_id"),
            agent_id=text("agent_id"),
            session_id=text("session_id"),
            content=text("content"),
            context=text("context"),
            key=text("key"),
            tier=Tier(text("tier")),
            type=MemoryType(text("type")),
            tags=tags.split(TAG_SEPARATOR) if tags else [],
            importance=_num(text("importance")),
            metadata=json.loads(text("metadata") or "{}"),
            related_ids=sorted(x.decode() if isinstance(x, bytes) else x for x in links),
            event_time=_num(text("event_time")),
            create_time=_num(text("create_time")),
            update_time=_num(text("update_time")),
            last_access_time=_num((access or {}).get(b"last", 0)),
            access_count=int(_num((access or {}).get(b"count", 0))),
            expire_time=_num(expire) if expire else None,
            embedding=(
                np.frombuffer(vector, dtype=self._np_type).astype(np.float32)
                if isinstance(vector, bytes)
                else None
            ),
        )

    # ---- writes --------------------------------------------------------------------------

    async def find_duplicate(self, tenant: Tenant, fingerprint: str) -> str | None:
        keys = keys_of(tenant)
        existing = await self._client.get(keys.dedup(fingerprint))
        return existing.decode() if existing else None

    async def store(
        self,
        tenant: Tenant,
        memory: Memory,
        fingerprint: str,
        ttl_s: int | None,
        *,
        archive: bool = True,
    ) -> str:
        """Store atomically unless identical content exists; returns the id that holds it.

        `archive=False` is for a memory read back from the archive (rehydration): it neither
        goes to the outbox nor becomes its session's newest memory.
        """
        await self.prepare(tenant)
        keys = keys_of(tenant)
        fields = outbox.flat(self._fields(keys, memory))  # type: ignore[arg-type]
        tail = [keys.session_tail(memory.agent_id, memory.session_id)]
        args: list[str | bytes] = [
            memory.id,
            str(ttl_s or 0),
            keys.memory(""),
            str(len(fields)),
            str(len(memory.related_ids)),
            str(MAX_LEAD_BYTES),
            *fields,
            *memory.related_ids,
        ]
        script_keys = [
            keys.memory(memory.id),
            keys.dedup(fingerprint),
            keys.links(memory.id),
            keys.outbox(),
            *(tail if memory.session_id and archive else []),
        ]
        if self.archived and archive:
            args += outbox.flat(outbox.memory_put(keys.tenant, memory, self.model))
            await self._marks.prepare(tenant)
            # The outbox's due mark goes in the same round trip, after the script.
            [winner] = await evalsha_pipelined(
                self._client,
                self._store_script,
                [(script_keys, args)],
                functools.partial(self._marks.mark_in, tenants=[tenant]),
            )
            if isinstance(winner, Exception):
                raise winner
        else:
            winner = await self._store_script(keys=script_keys, args=args)
        winner_id = winner.decode() if isinstance(winner, bytes) else str(winner)
        if winner_id == memory.id and memory.related_ids:
            await self._link_back(keys, memory.id, memory.related_ids)
        return winner_id

    async def retier(
        self,
        tenant: Tenant,
        memory: Memory,
        fingerprint: str,
        ttl_s: int | None,
        expected_update_time: float,
    ) -> bool:
        """Write `memory`'s tier, update and expire times unless its stored update_time is no
        longer `expected_update_time` (someone changed it meanwhile)."""
        keys = keys_of(tenant)
        args: list[str | bytes] = [
            repr(expected_update_time),
            memory.tier.value,
            repr(memory.update_time),
            "" if memory.expire_time is None else repr(memory.expire_time),
            str(ttl_s or 0),
        ]
        if self.archived:
            args += outbox.flat(outbox.memory_put(keys.tenant, memory, self.model))
        async with self._marks.writing(tenant, self.archived):
            done = await self._retier_script(
                keys=[
                    keys.memory(memory.id),
                    keys.dedup(fingerprint),
                    keys.access(memory.id),
                    keys.outbox(),
                ],
                args=args,
            )
        return bool(done)

    async def evict(self, tenant: Tenant, memory: Memory, fingerprint: str) -> bool:
        """Drop `memory` from the hot tier unless it changed or was read since it was loaded."""
        keys = keys_of(tenant)
        done = await self._evict_script(
            keys=[
                keys.memory(memory.id),
                keys.dedup(fingerprint),
                keys.links(memory.id),
                keys.access(memory.id),
            ],
            args=[repr(memory.update_time), str(memory.access_count), memory.id],
        )
        return bool(done)

    async def _link_back(self, keys: TenantKeys, memory_id: str, related: Sequence[str]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for other in related:
                pipe.sadd(keys.links(other), memory_id)
            await pipe.execute()

    async def replace(
        self,
        tenant: Tenant,
        memory: Memory,
        old_fingerprint: str,
        new_fingerprint: str,
        ttl_s: int | None,
        removed_links: Sequence[str],
        added_links: Sequence[str],
        expected_update_time: float,
    ) -> bool:
        """Overwrite an existing memory's fields, moving its dedup key and links, unless it
        was removed or changed since it was read (its update_time is not the expected one):
        then nothing is written and the answer is False. A forgotten memory stays forgotten."""
        keys = keys_of(tenant)
        key = keys.memory(memory.id)
        async with (
            self._marks.writing(tenant, self.archived),
            self._client.pipeline(transaction=True) as pipe,
        ):
            await pipe.watch(key)
            held = await pipe.hget(key, "update_time")
            if held is None or _num(held.decode(), -1.0) != expected_update_time:
                await pipe.unwatch()
                return False
            pipe.multi()
            fields = self._fields(keys, memory)
            pipe.hset(key, mapping=fields)
            # A vector another model made of the old content (`reembed`) is stale now, and so
            # are the old content's facts that the new one lacks.
            pipe.hdel(key, other_slot(self.vector_slot), *(f for f in _OPTIONAL if f not in fields))
            if old_fingerprint != new_fingerprint:
                pipe.delete(keys.dedup(old_fingerprint))
                pipe.set(keys.dedup(new_fingerprint), memory.id, nx=True)
            if ttl_s:
                pipe.expire(key, ttl_s)
                pipe.expire(keys.dedup(new_fingerprint), ttl_s)
            else:
                pipe.persist(key)
                pipe.persist(keys.dedup(new_fingerprint))
            for other in removed_links:
                pipe.srem(keys.links(memory.id), other)
                pipe.srem(keys.links(other), memory.id)
            for other in added_links:
                pipe.sadd(keys.links(memory.id), other)
                pipe.sadd(keys.links(other), memory.id)
            if self.archived:
                pipe.xadd(keys.outbox(), outbox.memory_put(keys.tenant, memory, self.model))
            try:
                await pipe.execute()
            except redis.exceptions.WatchError:
                return False
        return True

    async def delete(
        self,
        tenant: Tenant,
        memories: Sequence[tuple[Memory, str]],
        archived_only: Sequence[str] = (),
    ) -> None:
        """Remove memories, their dedup keys and every link to them, in one transaction, and
        from the archive (with `archived_only`: ids no longer in the hot tier)."""
        keys = keys_of(tenant)
        if not memories and not archived_only:
            return
        async with (
            self._marks.writing(tenant, self.archived),
            self._client.pipeline(transaction=True) as pipe,
        ):
            for memory, fingerprint in memories:
                pipe.delete(keys.memory(memory.id), keys.links(memory.id), keys.access(memory.id))
                pipe.delete(keys.dedup(fingerprint))
                for other in memory.related_ids:
                    pipe.srem(keys.links(other), memory.id)
            if self.archived:
                for memory_id in [m.id for m, _ in memories] + list(archived_only):
                    pipe.xadd(keys.outbox(), outbox.memory_delete(keys.tenant, memory_id))
            await pipe.execute()

    # ---- reads ---------------------------------------------------------------------------

    async def get_many(self, tenant: Tenant, ids: Sequence[str]) -> dict[str, Memory]:
        """Memories by id in one round trip, without writing; absent ids are left out."""
        keys = keys_of(tenant)
        if not ids:
            return {}
        script_keys: list[str] = []
        for memory_id in ids:
            script_keys += [keys.memory(memory_id), keys.links(memory_id), keys.access(memory_id)]
        replies = await self._read_script(keys=script_keys)
        found: dict[str, Memory] = {}
        for index, memory_id in enumerate(ids):
            raw, links, access = replies[3 * index : 3 * index + 3]
            if raw:
                found[memory_id] = self._decode(self._pairs(raw), links, self._pairs(access))
        return found

    async def record_accesses(self, reads: Mapping[str, Mapping[str, tuple[int, float]]]) -> None:
        """Add reads to access stats: tenant -> memory id -> (reads, last read time). One script
        call per tenant (its keys share a cluster slot), all in one round trip."""
        calls = []
        for tenant, by_id in reads.items():
            keys = TenantKeys(tenant)
            script_keys: list[str] = []
            args: list[str] = []
            for memory_id, (count, last) in by_id.items():
                script_keys += [keys.memory(memory_id), keys.access(memory_id)]
                args += [str(count), repr(last)]
            calls.append((script_keys, args))
        for reply in await evalsha_pipelined(self._client, self._touch_script, calls):
            if isinstance(reply, Exception):
                raise reply

    async def access_stats(
        self, tenant: Tenant, ids: Sequence[str]
    ) -> dict[str, tuple[int, float]]:
        """(count, last access) per id in one round trip, without counting this read."""
        keys = keys_of(tenant)
        async with self._client.pipeline(transaction=False) as pipe:
            for memory_id in ids:
                pipe.hmget(keys.access(memory_id), ["count", "last"])
            replies = await pipe.execute()
        return {
            memory_id: (int(count or 0), _num(last))
            for memory_id, (count, last) in zip(ids, replies, strict=True)
        }

    async def page(
        self, tenant: Tenant, flt: MemoryFilter, offset: int, limit: int
    ) -> tuple[list[Memory], bool]:
        """A page of memories newest first, and whether more follow: the index gives the ids,
        one read of the hashes (with links and access stats) the memories."""
        keys = keys_of(tenant)
        query = FilterQuery(
            filter_expression=self._filter(keys, flt),
            return_fields=["memory_id"],
            num_results=limit + 1,
        ).sort_by("create_time", asc=False)
        query.paging(offset, limit + 1)
        docs = await self._search(self.index_of(tenant), query, replica=False)
        ids = [doc["memory_id"] for doc in docs]
        memories = await self.get_many(tenant, ids[:limit])
        return [memories[i] for i in ids[:limit] if i in memories], len(ids) > limit

    async def ids_matching(self, tenant: Tenant, flt: MemoryFilter) -> list[str]:
        keys = keys_of(tenant)
        query = FilterQuery(
            filter_expression=self._filter(keys, flt),
            return_fields=["memory_id"],
            num_results=MAX_FILTER_RESULTS,
        )
        docs = await self._search(self.index_of(tenant), query, replica=False)
        return [doc["memory_id"] for doc in docs]

    async def scan(self, cursor: int, limit: int) -> tuple[int, list[tuple[Tenant, Memory]]]:
        """About `limit` memories of every tenant with their access stats, and the cursor to
        continue from (0: the walk wrapped): the maintenance task's walk over the hot tier.

        A SCAN cursor is exact: a full walk visits every memory present throughout it at least
        once. (A walk by create_time through the index stalled for good once more than `limit`
        memories shared a creation time to the 10 ms RediSearch returns sortable numbers at.)
        SCAN's COUNT is a hint, so a call may bring a few more than `limit`. On a cluster the
        walk goes through every primary (walk.py).
        """
        names: list[bytes] = []
        for _ in range(MAX_SCAN_CALLS):  # bounded even where memories are a small share of keys
            cursor, batch = await scan_step(
                self._client, cursor, MEMORY_PREFIX + "*", limit, "HASH"
            )
            names += batch
            if cursor == 0 or len(names) >= limit:
                break
        fields = [*_SCALAR_FIELDS, "tenant"]
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(name, fields)
            rows = await pipe.execute() if names else []
        found = []
        for row in rows:
            raw = {
                name: value for name, value in zip(fields, row, strict=True) if value is not None
            }
            if "tenant" not in raw:  # removed since SCAN listed it
                continue
            found.append((Tenant(raw["tenant"].decode()), self._decode(raw)))
        async with self._client.pipeline(transaction=False) as pipe:
            for tenant, memory in found:
                pipe.hmget(keys_of(tenant).access(memory.id), ["count", "last"])
            replies = await pipe.execute() if found else []
        for (_, memory), (count, last) in zip(found, replies, strict=True):
            memory.access_count, memory.last_access_time = int(count or 0), _num(last)
        return int(cursor), found

    async def walk_position(self) -> int:
        """Where the maintenance walk (`scan`) continues, kept across ticks and replicas; 0:
        from the start."""
        stored = await self._client.get(MAINTENANCE_CURSOR) or b"0"
        return int(stored) if stored.isdigit() else 0  # not a SCAN cursor: start over

    async def save_walk_position(self, cursor: int) -> None:
        await self._client.set(MAINTENANCE_CURSOR, str(cursor))

    async def created_since(self, since: float) -> int:
        """Memories of every tenant stored after `since` (the status view's throughput)."""
        return await self._count(Num("create_time") > since)

    async def tier_counts(self) -> dict[str, int]:
        """Memories per tier across every tenant (the maintenance task's gauge)."""
        return {tier.value: await self._count(tag_in("tier", tier.value)) for tier in Tier}

    async def _count(self, expr: FilterExpression) -> int:
        """How many memories of every tenant match, counted on the search replica when there is
        one (a count may lag a little; the primary's one thread serves the writes). In the
        `tenant` layout: each tenant's index counted, in one pipeline, and summed."""
        args = CountQuery(filter_expression=expr).get_args()
        if self._tenants is None:
            return total(await self._query(["FT.SEARCH", self.index_name, *args]))
        names = await self._tenants.names() if self._tenants is not None else []
        return sum(await self._pipelined_totals([["FT.SEARCH", name, *args] for name in names]))

    async def _pipelined_totals(self, commands: Sequence[list[Any]]) -> list[int]:
        return await pipelined_totals(self._client, commands)

    async def count(self, tenant: Tenant, flt: MemoryFilter) -> int:
        args = CountQuery(filter_expression=self._filter(keys_of(tenant), flt)).get_args()
        return total(await self._query(["FT.SEARCH", self.index_of(tenant), *args]))

    async def counts(self, tenant: Tenant, filters: Sequence[MemoryFilter]) -> list[int]:
        """How many memories each filter keeps, in one round trip."""
        keys, name = keys_of(tenant), self.index_of(tenant)
        return await self._pipelined_totals(
            [
                [
                    "FT.SEARCH",
                    name,
                    *CountQuery(filter_expression=self._filter(keys, flt)).get_args(),
                ]
                for flt in filters
            ]
        )

    async def _search(self, index: str, query: Any, replica: bool = True) -> list[dict[str, str]]:
        """A hit query's documents (from the search replica, if there is one, unless `replica`
        is False). FT.SEARCH goes through the client's own reply parser: redis-py's search
        Result objects cost a third of a re-ranked search's CPU."""
        args = search_args(index, query)
        # Each hit query runs inside its own aether.search.* span, which names the index, k,
        # the filters and the hits: Redis's span of the one command would say it again.
        with suppress_instrumentation():
            reply = await self._query(args, replica)
        return documents(reply, scores="WITHSCORES" in args)

    async def _query(self, args: list[Any], replica: bool = True) -> Any:
        """A read-only index query, on the replica when one is configured. One that fails
        there (unreachable, loading, not yet holding the index) runs on the primary instead,
        and so does every query for REPLICA_BACKOFF_S after, so a replica that is down costs
        one failed attempt, not one per search. A tenant without an index of its own yet
        (`tenant` layout) has no memories: no hits."""
        try:
            return await self._query_on(args, replica)
        except redis.exceptions.ResponseError as error:
            if self.per_tenant and missing_index(error):
                return NO_HITS
            raise

    async def _query_on(self, args: list[Any], replica: bool) -> Any:
        if (
            replica
            and self._reader is not None
            and time.monotonic() - self._reader_failed_at > REPLICA_BACKOFF_S
        ):
            try:
                return await self._reader.execute_command(
                    *args, **routed(self._reader, args[1], replica=True)
                )
            except (aioredis.RedisError, RedisClusterException, OSError) as error:
                self._reader_failed_at = time.monotonic()
                log.warning(
                    "search replica failed (%s): searching the primary for %.0f s",
                    error,
                    REPLICA_BACKOFF_S,
                )
        return await self._client.execute_command(*args, **routed(self._client, args[1]))

    @staticmethod
    def _attributes(index: str, flt: MemoryFilter, k: int) -> dict[str, Any]:
        # Filter field names only: the values are the caller's data.
        filters = [name for name, value in vars(flt).items() if value not in ("", (), None)]
        return {"aether.index": index, "aether.k": k, "aether.filters": filters}

    @staticmethod
    def _hits(docs: list[dict[str, Any]], score: Callable[[dict[str, Any]], float]) -> Hits:
        return Hits(
            [(doc["memory_id"], score(doc)) for doc in docs],
            {
                doc["memory_id"]: Facts(
                    event_time=_num(doc.get("event_time")),
                    importance=_num(doc.get("importance")),
                    session=doc.get("session_id") or "",
                    seq=int(_num(doc["seq"])) if doc.get("seq") else None,
                    words=int(_num(doc["words"])) if doc.get("words") else None,
                    asks=doc["asks"] == "1" if doc.get("asks") else None,
                    speaker=doc.get("speaker") or None,
                )
                for doc in docs
            },
        )

    async def _knn(
        self,
        span: str,
        tenant: Tenant,
        flt: MemoryFilter,
        expression: FilterExpression,
        vector: npt.NDArray[np.float32],
        k: int,
        batches: bool = False,
    ) -> Hits:
        """The k memories nearest `vector` among those `expression` keeps."""
        query = VectorQuery(
            vector=np.asarray(vector).astype(self._np_type).tobytes(),
            vector_field_name=self.vector_slot,
            return_fields=_HIT_FIELDS,
            filter_expression=expression,
            num_results=k,
            dtype=self.vector_type,
            # RediSearch otherwise brute-forces every memory that passes the filter; when that
            # is most of a large index, filtering HNSW results in batches is ~4.7x faster (1.6
            # vs 7.7 ms at 60k memories, bench/results/knn-hybrid.md).
            hybrid_policy="BATCHES" if batches else None,
            batch_size=max(50, 2 * k) if batches else None,
        )
        index = self.index_of(tenant)
        with operation(span, attributes=self._attributes(index, flt, k)) as current:
            current.set_attribute("aether.hybrid_policy", "BATCHES" if batches else "auto")
            # RediSearch's cosine distance is 1 - cos; only similarity leaves this module.
            hits = self._hits(
                await self._search(index, query), lambda doc: 1.0 - float(doc["vector_distance"])
            )
            current.set_attribute("aether.hits", len(hits.scores))
        return hits

    async def vector_search(
        self,
        tenant: Tenant,
        flt: MemoryFilter,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        batches: bool = False,
    ) -> Hits:
        """Top-k by cosine similarity, pre-filtered inside the index."""
        keys = keys_of(tenant)
        return await self._knn(
            "aether.search.vector", tenant, flt, self._filter(keys, flt), vector, k, batches
        )

    async def neighbors(
        self,
        tenant: Tenant,
        flt: MemoryFilter,
        vector: npt.NDArray[np.float32],
        positions: Mapping[str, Sequence[int]],
    ) -> Hits:
        """Cosine similarity to `vector` and the facts of the memories at these positions of
        these sessions (session id -> seqs) that pass the filter: one KNN query over a set small
        enough for RediSearch to score it exactly."""
        keys = keys_of(tenant)
        wanted: FilterExpression | None = None
        k = 0
        for session, seqs in positions.items():
            at: FilterExpression | None = None
            for seq in seqs:
                at = Num("seq") == seq if at is None else at | (Num("seq") == seq)
                k += 1
            if at is not None:
                clause = tag_in("session_id", session) & at
                wanted = clause if wanted is None else wanted | clause
        if wanted is None:
            return Hits([], {})
        return await self._knn(
            "aether.search.neighbors", tenant, flt, self._filter(keys, flt) & wanted, vector, k
        )

    async def vectors(
        self, tenant: Tenant, ids: Sequence[str]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The vectors of these memories in one command; absent ones are left out."""
        keys = keys_of(tenant)
        if not ids:
            return {}
        replies = await self._field_script(
            keys=[keys.memory(memory_id) for memory_id in ids], args=[self.vector_slot]
        )
        return {
            memory_id: np.frombuffer(raw, dtype=self._np_type).astype(np.float32)
            for memory_id, raw in zip(ids, replies, strict=True)
            if isinstance(raw, bytes)
        }

    async def keyword_search(self, tenant: Tenant, flt: MemoryFilter, text: str, k: int) -> Hits:
        """Top-k by BM25 over content and context, pre-filtered inside the index."""
        keys = keys_of(tenant)
        terms = keyword_terms(text)
        if not terms:
            return Hits([], {})
        query = KeywordQuery(
            terms,
            KEYWORD_FIELDS,
            text_scorer="BM25STD",
            filter_expression=self._filter(keys, flt),
            return_fields=_HIT_FIELDS,
            num_results=k,
        )
        index = self.index_of(tenant)
        with operation("aether.search.keyword", attributes=self._attributes(index, flt, k)) as span:
            hits = self._hits(
                await self._search(index, query), lambda doc: float(doc.get("score", 0.0))
            )
            span.set_attribute("aether.terms", len(terms))
            span.set_attribute("aether.hits", len(hits.scores))
        return hits
