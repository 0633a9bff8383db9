"""`aether-memory move-slot SLOT HOST:PORT`: move one hash slot of a Redis Cluster to another
primary (adding a shard, rebalancing) with the tenants' search indexes.

An index of this Search module (RediSearch 2.10, no coordinator) lives on the node where it was
created and never moves with a slot. So before any key of the slot moves, the target node gets
the index of every tenant in the slot (FT.CREATE after ASKING, while it imports the slot): each
key is indexed there as it arrives. Then the keys move in batches (MIGRATE), and the slot is
handed over (SETSLOT NODE) on the target, the source and every other primary.

While the keys move, the source redirects a tenant's searches to the target (ASK: the index
name is no key on the source), which answers with the part of the tenant moved so far; writes
for the slot carry on (a script whose keys are split between the nodes answers TRYAGAIN, which
the service answers as UNAVAILABLE with a retry delay). `docs/operations.md` says why the keys
are not copied first. A tenant that writes its first memory during the move gets its index on
the target (the service's FT.CREATE follows the source's ASK). The source keeps an empty index
per moved tenant (about 58 KB), which it cannot drop: the name's slot is no longer its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from tqdm import tqdm

from .domain.tenant import Tenant
from .settings import Settings
from .stores.redis.episode_index import RedisEpisodeIndex
from .stores.redis.keys import index_meta, tenant_tag
from .stores.redis.memory_store import RedisMemoryStore

BATCH = 100  # keys per MIGRATE
MIGRATE_TIMEOUT_MS = 10_000


class Refused(Exception):
    """What the command will not do, said to the user."""


@dataclass
class Moved:
    keys: int
    tenants: int
    seconds: float


def _tenants_of(keys: Sequence[bytes]) -> set[Tenant]:
    """The tenants whose hash tag these keys carry (deployment keys carry none)."""
    return {tenant for key in keys if (tenant := tenant_tag(key.decode())) is not None}


async def _indexes(cluster: Any, settings: Settings) -> tuple[Any, ...]:
    """The memory and episode indexes of the deployment, as the service made them."""
    meta = await cluster.hgetall(index_meta(settings.index_name))
    held = {k.decode(): v.decode() for k, v in meta.items()}
    if held.get("layout") != "tenant":
        raise Refused(
            f"{settings.index_name} is not one index per tenant (AETHER_INDEX_LAYOUT=tenant): "
            "a shared index cannot follow a slot"
        )
    dimension = int(held["dimension"])
    memories = RedisMemoryStore(
        cluster,
        index_name=settings.index_name,
        dimension=dimension,
        vector_type=held["vector_type"],
        vector_slot=held["vector_slot"],
        layout="tenant",
        tenant_vectors=held["tenant_vectors"],
    )
    episodes = RedisEpisodeIndex(
        cluster, index_name=f"{settings.index_name}-episodes", dimension=dimension, layout="tenant"
    )
    return memories, episodes


async def move_slot(
    cluster: RedisCluster,
    settings: Settings,
    slot: int,
    target: str,
    *,
    batch: int = BATCH,
    progress: bool = True,
) -> Moved:
    """Move `slot` to the primary at `target` ("host:port"), `batch` keys per MIGRATE."""
    started = time.monotonic()
    if not 0 <= slot < 16384:
        raise Refused(f"slot {slot} is not a hash slot (0-16383)")
    await cluster.initialize()
    indexes = await _indexes(cluster, settings)
    source = cluster.nodes_manager.get_node_from_slot(slot)
    primaries = {node.name: node for node in cluster.get_primaries()}
    if target not in primaries:
        raise Refused(f"{target} is not a primary of this cluster: {sorted(primaries)}")
    if primaries[target].name == source.name:
        raise Refused(f"slot {slot} is on {target} already")
    destination = primaries[target]
    # redis-py types replies as unions over every decode mode; replies are read as bytes here.
    src: Any = aioredis.Redis(host=source.host, port=int(source.port))
    dst: Any = aioredis.Redis(host=destination.host, port=int(destination.port))
    try:
        src_id = (await src.execute_command("CLUSTER", "MYID")).decode()
        dst_id = (await dst.execute_command("CLUSTER", "MYID")).decode()
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        # The slot's tenants' indexes on the target first; again once the source migrates:
        # a tenant may have made its first key on the source in between.
        made: set[Tenant] = set()
        await _index_tenants(src, dst, slot, indexes, made)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        await _index_tenants(src, dst, slot, indexes, made)
        total = int(await src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        moved = 0
        with tqdm(
            total=total, desc=f"slot {slot}", unit="key", file=sys.stderr, disable=not progress
        ) as bar:
            while keys := await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                # A tenant seen for the first time now (its first key written meanwhile).
                for tenant in _tenants_of(keys) - made:
                    for index in indexes:
                        await index.create_index_on(dst, tenant)
                    made.add(tenant)
                await src.execute_command(
                    "MIGRATE",
                    destination.host,
                    destination.port,
                    "",
                    0,
                    MIGRATE_TIMEOUT_MS,
                    "REPLACE",
                    "KEYS",
                    *keys,
                )
                moved += len(keys)
                bar.update(len(keys))
        await dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        await src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        for node in primaries.values():
            if node.name not in (source.name, destination.name):
                other: Any = aioredis.Redis(host=node.host, port=int(node.port))
                try:
                    await other.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                finally:
                    await other.aclose()
    finally:
        await src.aclose()
        await dst.aclose()
    return Moved(moved, len(made), time.monotonic() - started)


async def _index_tenants(
    src: Any, dst: Any, slot: int, indexes: Sequence[Any], made: set[Tenant]
) -> None:
    """Every tenant with a key in the slot on the source gets its indexes on the target."""
    count = int(await src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    keys = await src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, max(count, 1))
    for tenant in _tenants_of(keys) - made:
        for index in indexes:
            await index.create_index_on(dst, tenant)
        made.add(tenant)


async def run(args: argparse.Namespace) -> int:
    settings = Settings()
    if not settings.redis_cluster or not settings.redis_url:
        print("aether-memory: move-slot needs AETHER_REDIS_CLUSTER=true and AETHER_REDIS_URL")
        return 2
    cluster = RedisCluster.from_url(settings.redis_url)
    try:
        moved = await move_slot(cluster, settings, args.slot, args.target)
    except Refused as refused:
        print(f"aether-memory: {refused}", file=sys.stderr)
        return 1
    finally:
        await cluster.aclose()
    print(
        f"slot {args.slot} is on {args.target}: {moved.keys} keys of {moved.tenants} tenants "
        f"moved in {moved.seconds:.1f} s"
    )
    return 0
