"""`aether-memory reembed`: move a store to another bundled model while the service serves.

    aether-memory reembed --model all-mpnet-base-v2      # build and fill the new index
    AETHER_MODEL=all-mpnet-base-v2 AETHER_INDEX_NAME=aether-memories-all-mpnet-base-v2 \\
        aether-memory serve                               # the cut-over: a restart
    AETHER_INDEX_NAME=aether-memories-all-mpnet-base-v2 aether-memory reembed --drop-source

The first step talks to the service's Redis (AETHER_REDIS_URL, or the embedded Redis of the
server running on AETHER_DATA_DIR), embeds on this machine with its own threads (`--threads`,
to leave the service its cores) and may be stopped and run again: it resumes where the vectors
end. See service/reembed.py for what happens to writes during and after it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
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
from .stores.redis.keys import EPISODE_DOC_PREFIX, MEMORY_PREFIX, index_meta
from .stores.redis.memory_store import RedisMemoryStore
from .stores.redis.vector_slots import (
    BUILDING,
    COMPLETE,
    FILLED,
    SLOTS,
    SlotFill,
    drop_index,
    held_vectors,
    other_slot,
    reembed_state,
    set_reembed_state,
)

MAX_PASSES = 5  # a pass after the first only catches up with what the service wrote meanwhile


class Refused(Exception):
    """What the command will not do, said to the user."""


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
    if settings.index_layout == "tenant":
        raise Refused(
            "re-embedding is built for the shared index only; with one index per tenant "
            "(AETHER_INDEX_LAYOUT=tenant) store the memories again under a new AETHER_INDEX_NAME"
        )
    source = settings.index_name
    target = args.index or f"{source}-{pack.manifest.model_name}"
    if target == source:
        raise Refused(f"the new index needs a name other than {source} (--index)")
    held = await held_vectors(client, source)
    source_vectors, memories = held if held is not None else (None, 0)
    if source_vectors is None:
        raise Refused(f"no index {source} with vectors in this Redis (AETHER_INDEX_NAME)")
    episodes_held = await held_vectors(client, f"{source}-episodes")
    episode_slot = (
        episodes_held[0].slot if episodes_held and episodes_held[0] is not None else SLOTS[0]
    )
    was_from, state = await reembed_state(client, target)
    if await held_vectors(client, target) is not None and was_from != source:
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
    )
    recorded = await store.vector_space()
    if recorded is not None and recorded != space:
        raise Refused(f"index {target} holds vectors of {recorded}, not of {space}")
    await store.ensure_index()
    await store.record_vector_space(space)
    if state != COMPLETE:
        await set_reembed_state(client, target, source, BUILDING)
    embedder = Embedder(pack, threads=args.threads, spin=False)
    episode_log = RedisEpisodeLog(client, max_len=settings.episode_max_len)
    async with MicroBatcher(embedder, max_batch=32, cache_size=0) as batcher:
        episode_index = RedisEpisodeIndex(
            client,
            index_name=f"{target}-episodes",
            dimension=batcher.dimension,
            vector_slot=other_slot(episode_slot),
        )
        await episode_index.ensure()
        reembedder = Reembedder(client, batcher.embed_many, store, episode_index, episode_log)
        total = memories + (episodes_held[1] if episodes_held else 0)
        print(
            f"re-embedding {memories} memories and their episodes from {source} "
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
    held = await held_vectors(client, target)
    if held is None or held[0] is None:
        raise Refused(f"no index {target} in this Redis")
    episodes_held = await held_vectors(client, f"{target}-episodes")
    corpora = [("memories", MEMORY_PREFIX, held[0].slot, held[1])]
    if episodes_held is not None and episodes_held[0] is not None:
        corpora.append(("episodes", EPISODE_DOC_PREFIX, episodes_held[0].slot, episodes_held[1]))
    await drop_index(client, source)
    await drop_index(client, f"{source}-episodes")
    for name, prefix, slot, count in corpora:
        walk = SlotFill(client, prefix, slot, guard=None)
        cursor = None
        with _bar(count, f"dropping old {name} vectors") as bar:
            while cursor != 0:
                cursor, walked, _ = await walk.drop(cursor or 0, SCAN_COUNT, other_slot(slot))
                bar.update(walked)
    redis: Any = client
    await redis.delete(index_meta(source))
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
