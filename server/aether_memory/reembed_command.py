"""`aether-memory reembed`: move a store to another bundled model while the service serves.

    aether-memory reembed --model all-mpnet-base-v2      # build and fill the new index
    AETHER_MODEL=all-mpnet-base-v2 AETHER_INDEX_NAME=aether-memories-all-mpnet-base-v2 \\
        aether-memory serve                               # the cut-over: a restart
    AETHER_INDEX_NAME=aether-memories-all-mpnet-base-v2 aether-memory reembed --drop-source

The first step talks to the service's Redis (AETHER_REDIS_URL, or the embedded Redis of the
server running on AETHER_DATA_DIR), embeds on this machine with its own threads (`--threads`,
to leave the service its cores) and may be stopped and run again: it resumes where the vectors
end. See service/reembed.py for what happens to writes during and after it.

With one index per tenant (AETHER_INDEX_LAYOUT=tenant, on one Redis or a Redis Cluster), the
new indexes are one per tenant too, each made empty when the fill first reaches the tenant: a
document is in it once its new vector is written. A fresh run therefore first clears the new
slot from every hash; a vector an abandoned run left there would pass for filled, and its hash
would never reach the new index (one shared index would keep the stale vector instead).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from tqdm import tqdm

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.pack import ModelPack, PackError
from aether_embeddings.runtime import Embedder

from .service.reembed import SCAN_COUNT, Reembedder
from .settings import Settings
from .stores.redis.episode_index import RedisEpisodeIndex
from .stores.redis.episode_log import RedisEpisodeLog
from .stores.redis.keys import EPISODE_DOC_PREFIX, MEMORY_PREFIX, index_meta, index_tenants
from .stores.redis.memory_store import RedisMemoryStore
from .stores.redis.search import pipelined_totals, tenant_index_names
from .stores.redis.vector_slots import (
    BUILDING,
    COMPLETE,
    FILLED,
    SLOTS,
    SlotFill,
    VectorAttribute,
    drop_index,
    held_vectors,
    other_slot,
    reembed_state,
    set_reembed_state,
)

MAX_PASSES = 5  # a pass after the first only catches up with what the service wrote meanwhile


class Refused(Exception):
    """What the command will not do, said to the user."""


@dataclass(frozen=True)
class Source:
    """What the serving index holds: its vectors, and how many memories and episode documents
    it indexes (for the progress bars)."""

    vectors: VectorAttribute
    memories: int
    episode_slot: str
    episodes: int
    tenant_vectors: str | None = None  # one index per tenant: how each holds its vectors

    @property
    def documents(self) -> int:
        return self.memories + self.episodes


async def _held_shared(client: Any, source: str) -> Source | None:
    held = await held_vectors(client, source)
    if held is None or held[0] is None:
        return None
    episodes = await held_vectors(client, f"{source}-episodes")
    episode_slot = episodes[0].slot if episodes and episodes[0] is not None else SLOTS[0]
    return Source(held[0], held[1], episode_slot, episodes[1] if episodes else 0)


async def _held_per_tenant(client: Any, source: str) -> Source | None:
    """The source's vectors as its meta hash records them (one index per tenant: no index
    holds them all), and its documents counted over every tenant's index."""
    meta = {k.decode(): v.decode() for k, v in (await client.hgetall(index_meta(source))).items()}
    if meta.get("layout") != "tenant" or "vector_slot" not in meta:
        return None
    vectors = VectorAttribute(meta["vector_slot"], int(meta["dimension"]), meta["vector_type"])
    episode_slot = await client.hget(index_meta(f"{source}-episodes"), "vector_slot")
    memories, episodes = [
        sum(await pipelined_totals(client, [["FT.SEARCH", i, "*", "LIMIT", 0, 0] for i in names]))
        for names in [await tenant_index_names(client, n) for n in (source, f"{source}-episodes")]
    ]
    return Source(
        vectors,
        memories,
        episode_slot.decode() if episode_slot is not None else SLOTS[0],
        episodes,
        meta.get("tenant_vectors"),
    )


async def _drop_slots(client: Any, corpora: list[tuple[str, str, str, int]], what: str) -> None:
    """Remove a slot from every hash of each (name, key prefix, slot, hashes) corpus."""
    for name, prefix, slot, count in corpora:
        walk = SlotFill(client, prefix, slot, guard=None)
        cursor = None
        with _bar(count, f"{what} {name}") as bar:
            while cursor != 0:
                cursor, walked, _ = await walk.drop(cursor or 0, SCAN_COUNT, slot)
                bar.update(walked)


def _bar(total: int, description: str) -> Any:
    return tqdm(total=total, desc=description, unit="doc", file=sys.stderr, dynamic_ncols=True)


async def build(client: aioredis.Redis, settings: Settings, args: argparse.Namespace) -> str:
    """Create (or resume) the new index and fill it; its name."""
    try:
        pack = await asyncio.to_thread(
            lambda: (
                ModelPack.open(Path(args.pack))
                if args.pack
                else ensure_default_pack(args.variant, model=args.model)
            )
        )
    except PackError as error:
        raise Refused(str(error)) from None
    source = settings.index_name
    target = args.index or f"{source}-{pack.manifest.model_name}"
    if target == source:
        raise Refused(f"the new index needs a name other than {source} (--index)")
    per_tenant = settings.index_layout == "tenant"
    held = await (_held_per_tenant if per_tenant else _held_shared)(client, source)
    if held is None:
        raise Refused(f"no index {source} with vectors in this Redis (AETHER_INDEX_NAME)")
    source_vectors = held.vectors
    older, _ = await reembed_state(client, source)
    if older is not None:
        raise Refused(
            f"{source} was built from {older}, whose vectors still fill the other slot: drop "
            f"them first (AETHER_INDEX_NAME={source} aether-memory reembed --drop-source)"
        )
    was_from, state = await reembed_state(client, target)
    exists = (
        await client.hexists(index_meta(target), "layout")
        if per_tenant
        else await held_vectors(client, target) is not None
    )
    if exists and was_from != source:
        raise Refused(f"index {target} exists and was not built from {source}: choose --index")
    space = pack.manifest.vector_space
    store = RedisMemoryStore(
        client,
        index_name=target,
        dimension=pack.manifest.dimension,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        hnsw_ef_runtime=settings.hnsw_ef_runtime,
        vector_type=source_vectors.vector_type,
        vector_slot=other_slot(source_vectors.slot),
        layout=settings.index_layout,
        tenant_vectors=held.tenant_vectors or settings.tenant_index_vectors,
    )
    recorded = await store.vector_space()
    if recorded is not None and recorded != space:
        raise Refused(f"index {target} holds vectors of {recorded}, not of {space}")
    if state != COMPLETE:  # recorded first: a run stopped while clearing resumes as this one
        await set_reembed_state(client, target, source, BUILDING)
    if was_from is None:
        # A slot an abandoned re-embedding filled would pass for filled (and, one index per
        # tenant, its hashes would never be written into the new indexes): start it empty.
        new_slots = [
            ("memories", MEMORY_PREFIX, store.vector_slot, held.memories),
            ("episodes", EPISODE_DOC_PREFIX, other_slot(held.episode_slot), held.episodes),
        ]
        await _drop_slots(client, new_slots, "clearing the new slot of")
    await store.ensure_index()
    await store.record_vector_space(space)
    embedder = Embedder(pack, threads=args.threads, spin=False)
    episode_log = RedisEpisodeLog(client, max_len=settings.episode_max_len)
    async with MicroBatcher(embedder, max_batch=32, cache_size=0) as batcher:
        episode_index = RedisEpisodeIndex(
            client,
            index_name=f"{target}-episodes",
            dimension=batcher.dimension,
            vector_slot=other_slot(held.episode_slot),
            layout=settings.index_layout,
        )
        await episode_index.ensure()
        reembedder = Reembedder(client, batcher.embed_many, store, episode_index, episode_log)
        total = held.documents
        print(
            f"re-embedding {held.memories} memories and their episodes from {source} "
            f"({source_vectors.dimension}-d) into {target} ({pack.manifest.dimension}-d, "
            f"{space}) while the service serves",
            file=sys.stderr,
        )
        for number in range(1, MAX_PASSES + 1):
            with _bar(total, "re-embedding" if number == 1 else f"catching up ({number})") as bar:
                filled = await reembedder.fill(lambda _, walked: bar.update(walked))
            total = filled.walked
            if filled.written == 0:
                break
    if state != COMPLETE:
        await set_reembed_state(client, target, source, FILLED)
    return target


async def drop_source(client: aioredis.Redis, settings: Settings) -> str:
    """After the cut-over: drop the index the serving one replaced, and its vectors."""
    target = settings.index_name
    source, state = await reembed_state(client, target)
    if source is None:
        raise Refused(f"index {target} (AETHER_INDEX_NAME) was not built by `reembed`")
    if state != COMPLETE:
        raise Refused(
            f"index {target} is {state}: serve it (AETHER_INDEX_NAME={target} and its model) "
            "until the service logs that it is complete, then drop its source"
        )
    per_tenant = settings.index_layout == "tenant"
    held = await (_held_per_tenant if per_tenant else _held_shared)(client, target)
    if held is None:
        raise Refused(f"no index {target} in this Redis")
    old_slots = [
        ("memories", MEMORY_PREFIX, other_slot(held.vectors.slot), held.memories),
        ("episodes", EPISODE_DOC_PREFIX, other_slot(held.episode_slot), held.episodes),
    ]
    redis: Any = client
    for name in (source, f"{source}-episodes"):
        if per_tenant:
            for index in await tenant_index_names(client, name):
                await drop_index(client, index)
            await redis.delete(index_tenants(name))
        else:
            await drop_index(client, name)
    await _drop_slots(client, old_slots, "dropping the old vectors of")
    await redis.delete(index_meta(source))
    await redis.delete(index_meta(f"{source}-episodes"))
    await redis.hdel(index_meta(target), "reembed_source", "reembed_state")
    return source


async def run(args: argparse.Namespace, client: aioredis.Redis) -> int:
    """The command, on a Redis that answers; its exit status."""
    settings = Settings()
    try:
        if args.drop_source:
            source = await drop_source(client, settings)
            print(f"dropped index {source} and its vectors", file=sys.stderr)
            return 0
        target = await build(client, settings, args)
        model = (
            f"AETHER_MODEL_PACK={args.pack}"
            if args.pack
            else f"AETHER_MODEL={args.model} AETHER_MODEL_VARIANT={args.variant}"
        )
        print(
            f"index {target} holds the new model's vectors. Cut over by restarting the service "
            f"with {model} AETHER_INDEX_NAME={target}: it embeds what the old service wrote "
            "since, and "
            f"logs when the index is complete. Then: AETHER_INDEX_NAME={target} "
            "aether-memory reembed --drop-source",
            file=sys.stderr,
        )
        return 0
    except Refused as error:
        print(f"aether-memory reembed: {error}", file=sys.stderr)
        return 2
