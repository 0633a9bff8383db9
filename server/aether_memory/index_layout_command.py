"""`aether-memory index-layout tenant`: move a store from one shared index to one index per tenant
(AETHER_INDEX_LAYOUT=tenant), in place, before it goes onto a Redis Cluster or to drop the
tenant filter from every query.

    aether-memory index-layout tenant     # with the service stopped
    AETHER_INDEX_LAYOUT=tenant aether-memory serve

The keys stay where they are (each already carries its tenant's hash tag). The command records
the new layout first, so a service of either layout refuses to start until it is done, then
walks every memory and episode document (SCAN), makes each tenant's index (empty) before its
first document, and writes each document's `tenant` field again, which makes RediSearch index
it into its tenant's index. The walk's position is saved after every step: stopped, the command
resumes where it was. At the end every tenant's count in its own index must equal its count in
the shared index, or the walk starts over; only then are the shared indexes dropped (their
documents kept).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redisvl.query import CountQuery
from tqdm import tqdm

from .domain.tenant import Tenant
from .settings import Settings
from .stores.redis.episode_index import RedisEpisodeIndex
from .stores.redis.keys import (
    EPISODE_DOC_PREFIX,
    MEMORY_PREFIX,
    index_meta,
    index_tenants,
    tenant_index,
    tenant_of,
)
from .stores.redis.memory_store import RedisMemoryStore
from .stores.redis.query import tag_in
from .stores.redis.scripts import evalsha_pipelined
from .stores.redis.search import missing_index, total
from .stores.redis.vector_slots import SLOTS, drop_index, held_vectors
from .stores.redis.walk import scan_step

SCAN_COUNT = 500
# In the index's meta hash while the command runs: "<phase> <cursor>", the walk's next step
# (phase 0 walks the memories, phase 1 the episode documents, 2: both walked).
CURSOR_FIELD = "layout_walk"
PREFIXES = (MEMORY_PREFIX, EPISODE_DOC_PREFIX)

# Writes a document's tenant field again, so every index over its prefix indexes it; a document
# gone since the walk listed it is skipped. KEYS: the document.
_REINDEX_SCRIPT = """
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if not tenant then return 0 end
redis.call('HSET', KEYS[1], 'tenant', tenant)
return 1
"""


class Refused(Exception):
    """What the command will not do, said to the user."""


@dataclass
class Moved:
    documents: int = 0  # written again during the walk
    tenants: int = 0  # with an index of their own at the end


async def _count(client: Any, index: str, tenant: Tenant | None = None) -> int:
    """Documents in an index (a shared one: of `tenant`); 0 where there is no such index."""
    query = CountQuery(tag_in("tenant", tenant.name) if tenant is not None else "*")
    try:
        return total(await client.execute_command("FT.SEARCH", index, *query.get_args()))
    except aioredis.ResponseError as error:
        if missing_index(error):
            return 0
        raise


async def _indexed(client: Any, name: str) -> None:
    """Wait while an index still scans its keys (after a restart RediSearch rebuilds every index
    in the background, and its counts grow until it is done)."""
    while True:
        try:
            info = await client.ft(name).info()
        except aioredis.ResponseError as error:
            if missing_index(error):
                return
            raise
        indexing = info.get(b"indexing", info.get("indexing", 0))
        if not int(indexing):
            return
        await asyncio.sleep(0.5)


async def to_tenant_layout(client: Any, settings: Settings, progress: bool = True) -> Moved:
    name = settings.index_name
    episodes_name = f"{name}-episodes"
    meta = index_meta(name)
    memories_held = await held_vectors(client, name)
    layout = await client.hget(meta, "layout")
    if memories_held is None:
        if layout == b"tenant":
            raise Refused(f"{name} already has one index per tenant")
        raise Refused(f"no index {name} in this Redis (AETHER_INDEX_NAME)")
    vectors, memories_total = memories_held
    if vectors is None:
        raise Refused(f"index {name} holds no vectors")
    episodes_held = await held_vectors(client, episodes_name)
    episode_slot = (
        episodes_held[0].slot if episodes_held is not None and episodes_held[0] else SLOTS[0]
    )
    episodes_total = episodes_held[1] if episodes_held is not None else 0
    # From here on a service of either layout refuses to start (memory_store.ensure_index).
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(meta, "layout", "tenant")
        pipe.hsetnx(meta, "dimension", str(vectors.dimension))
        pipe.hset(meta, mapping={"vector_type": vectors.vector_type, "vector_slot": vectors.slot})
        pipe.hsetnx(meta, "tenant_vectors", settings.tenant_index_vectors)
        pipe.hget(meta, "tenant_vectors")
        *_, tenant_vectors = await pipe.execute()
    store = RedisMemoryStore(
        client,
        index_name=name,
        dimension=vectors.dimension,
        vector_type=vectors.vector_type,
        vector_slot=vectors.slot,
        layout="tenant",
        tenant_vectors=tenant_vectors.decode(),
    )
    episodes = RedisEpisodeIndex(
        client,
        index_name=episodes_name,
        dimension=vectors.dimension,
        vector_slot=episode_slot,
        layout="tenant",
    )
    moved = Moved()
    bar = tqdm(
        total=memories_total + episodes_total,
        desc="documents",
        unit="doc",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    with bar:
        for attempt in range(2):
            moved.documents += await _walk(client, meta, (store.prepare, episodes.prepare), bar)
            for index in (name, episodes_name):
                await _indexed(client, index)
            wrong = await _mismatches(client, name, episodes_name)
            if not wrong:
                break
            await client.hdel(meta, CURSOR_FIELD)  # the next walk starts over
            if attempt == 1:
                raise Refused(
                    "tenants whose own index does not count what the shared one does: "
                    + ", ".join(wrong[:10])
                    + " (are writes still arriving? stop the service and run this again)"
                )
            bar.reset(total=memories_total + episodes_total)
    for index in (name, episodes_name):
        await drop_index(client, index)
    await client.hdel(meta, CURSOR_FIELD)
    moved.tenants = await client.scard(index_tenants(name))
    return moved


async def _walk(client: Any, meta: str, prepare: Sequence[Any], bar: Any) -> int:
    """Walk every document under each prefix in turn, from where an earlier run stopped: each
    tenant's index made before its first document is written again."""
    reindex = client.register_script(_REINDEX_SCRIPT)
    saved = await client.hget(meta, CURSOR_FIELD)
    phase, cursor = (int(x) for x in saved.split()) if saved is not None else (0, 0)
    written = 0
    for at in range(phase, len(PREFIXES)):
        while True:
            cursor, names = await scan_step(client, cursor, PREFIXES[at] + "*", SCAN_COUNT, "HASH")
            for tenant in {tenant_of(n.decode()) for n in names}:
                await prepare[at](tenant)
            if names:
                replies = await evalsha_pipelined(client, reindex, [([k], []) for k in names])
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                written += sum(int(x) for x in replies)
                bar.update(len(names))
            await client.hset(meta, CURSOR_FIELD, f"{at + (cursor == 0)} {cursor}")
            if cursor == 0:
                break
    return written


async def _mismatches(client: Any, name: str, episodes_name: str) -> list[str]:
    """Tenants whose own memory or episode index counts other than the shared one does."""
    wrong: list[str] = []
    listed = await client.smembers(index_tenants(name))
    listed |= await client.smembers(index_tenants(episodes_name))
    for raw in sorted(listed):
        tenant = Tenant(raw.decode())
        for shared in (name, episodes_name):
            own = await _count(client, tenant_index(shared, tenant.name))
            if own != await _count(client, shared, tenant):
                wrong.append(tenant.name)
                break
    return wrong


async def run(args: argparse.Namespace, client: aioredis.Redis) -> int:
    settings = Settings()
    try:
        moved = await to_tenant_layout(client, settings)
    except Refused as refused:
        print(f"aether-memory: {refused}", file=sys.stderr)
        return 1
    print(
        f"{moved.documents} documents indexed into {moved.tenants} tenants' own indexes; start "
        f"the service with AETHER_INDEX_LAYOUT=tenant and AETHER_INDEX_NAME={settings.index_name}"
    )
    return 0
