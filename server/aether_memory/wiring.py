"""Builds every part of the service from Settings and the connections the lifecycle opened.

`app.serve` owns the lifecycle (the data-dir lock, telemetry, Redis, the embedder, the gRPC
server, the workers, shutdown in order); everything a request or a worker uses is made here, in
one place, so a new part is wired by adding it to `Parts`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from redis.cluster import LoadBalancingStrategy

from aether_embeddings.batching import MicroBatcher

from .diskspace import DiskGuard
from .domain.errors import StartupError
from .domain.lifecycle import LifecyclePolicy
from .domain.paging import PageTokens
from .service.access import AccessRecorder
from .service.agent_state import AgentStates
from .service.archiving import Archivers
from .service.episode_index import EpisodeIndexer
from .service.episodes import Episodes
from .service.idempotency import Idempotent
from .service.maintenance import Maintenance
from .service.memories import MemoryBank
from .service.reembed import Reembedder
from .service.self_model import SelfModel
from .service.sessions import Sessions
from .service.summarizer import ChatSummarizer
from .service.tool_cache import ToolCache
from .settings import Settings
from .stores.mongo.archive import MongoArchive
from .stores.redis.api_keys import ApiKeys
from .stores.redis.documents import DocumentStore
from .stores.redis.episode_index import RedisEpisodeIndex
from .stores.redis.episode_log import RedisEpisodeLog
from .stores.redis.episode_tail import EpisodeTails
from .stores.redis.idempotency import RequestLog
from .stores.redis.keys import (
    MAINTENANCE_LEASE,
    OUTBOX_META,
    OUTBOX_TENANTS,
    PAGE_TOKEN_SECRET_KEY,
    archiver_lease,
)
from .stores.redis.lease import Lease
from .stores.redis.memory_store import RedisMemoryStore
from .stores.redis.outbox import RedisOutbox
from .stores.redis.pool import connect
from .stores.redis.replication import ReplicaWait
from .stores.redis.vector_slots import BUILDING, FILLED, reembed_state
from .transport.access import AccessInterceptor
from .transport.episode_servicer import EpisodeServicer
from .transport.memory_servicer import MemoryServicer

log = logging.getLogger(__name__)
# The archiver's lease: a replica that dies holding it stops archiving for at most this long.
ARCHIVER_LEASE_MS = 10_000


@dataclass
class Parts:
    """What `build` made: the servicers and interceptor the server runs, and the workers'
    owners."""

    memory_store: RedisMemoryStore
    episode_log: RedisEpisodeLog
    episode_index: RedisEpisodeIndex
    episode_indexer: EpisodeIndexer
    bank: MemoryBank
    access: AccessRecorder
    archiver: Archivers | None
    maintenance: Maintenance
    memories: MemoryServicer
    episodes: EpisodeServicer
    tails: EpisodeTails
    interceptor: AccessInterceptor
    reembedder: Reembedder | None  # the index was built by `reembed` and is not complete
    search_reader: Any = None  # the replica client searches run on, if any


async def page_token_key(client: aioredis.Redis, settings: Settings) -> bytes:
    """The configured secret, or (unset or empty) one made once for this Redis: a key written
    in the source would let anyone seal page tokens that say what they like."""
    configured = settings.page_token_secret
    if configured is not None and configured.get_secret_value():
        secret = configured.get_secret_value().encode()
    else:
        await client.set(PAGE_TOKEN_SECRET_KEY, secrets.token_hex(32), nx=True)
        stored = await client.get(PAGE_TOKEN_SECRET_KEY) or b""
        secret = stored.encode() if isinstance(stored, str) else stored
    return hashlib.sha256(secret).digest()


def _archive(settings: Settings, stack: contextlib.AsyncExitStack) -> MongoArchive | None:
    if not settings.mongo_url:
        log.warning(
            "no MONGO_URL: running hot-only, without an archive; decayed memories stay in Redis"
        )
        return None
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    stack.push_async_callback(mongo.close)
    return MongoArchive(mongo, settings.archive_database, settings.archive_write_concern)


def _summarizer(settings: Settings, stack: contextlib.AsyncExitStack) -> ChatSummarizer | None:
    if not settings.summarizer_url:
        return None
    key = settings.summarizer_api_key
    summarizer = ChatSummarizer(
        settings.summarizer_url,
        settings.summarizer_model,
        key.get_secret_value() if key else None,
        settings.summarizer_timeout_s,
    )
    stack.push_async_callback(summarizer.aclose)
    return summarizer


async def _replica(settings: Settings, stack: contextlib.AsyncExitStack) -> aioredis.Redis | None:
    """The client of the replica that runs searches, when one is configured: on a cluster, a
    cluster client whose connections may read from replicas (READONLY)."""
    if settings.redis_cluster and settings.redis_cluster_search_replicas:
        assert settings.redis_url is not None
        reader = connect(
            settings.redis_url,
            cluster=True,
            load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS,
            decode_responses=False,
        )
        await reader.initialize()  # its slot map, for routing
    elif settings.redis_read_url:
        reader = connect(settings.redis_read_url, decode_responses=False)
    else:
        return None
    stack.push_async_callback(reader.aclose)
    return reader


async def _check_outbox_partitions(client: aioredis.Redis, partitions: int) -> None:
    """The outbox keeps the partitions it was first split into: with another count, a tenant's
    listing and due marks would be looked for in the wrong partition."""
    redis: Any = client
    if not await redis.hexists(OUTBOX_META, "partitions") and await redis.exists(OUTBOX_TENANTS):
        await redis.hsetnx(OUTBOX_META, "partitions", 1)  # an outbox from before partitions
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hsetnx(OUTBOX_META, "partitions", partitions)
        pipe.hget(OUTBOX_META, "partitions")
        _, held = await pipe.execute()
    if int(held) != partitions:
        raise StartupError(
            f"the archive outbox is split into {int(held)} partitions: set "
            f"AETHER_ARCHIVE_PARTITIONS={int(held)} (changing it is not supported)"
        )


async def build(
    settings: Settings,
    client: aioredis.Redis,
    batcher: MicroBatcher,
    vector_space: str,
    stack: contextlib.AsyncExitStack,
) -> Parts:
    """Every part, its indexes and consumer groups ensured; closers go on `stack`."""
    archive = _archive(settings, stack)
    archived = archive is not None
    if archived:
        await _check_outbox_partitions(client, settings.archive_partitions)
    memory_store = RedisMemoryStore(
        client,
        index_name=settings.index_name,
        dimension=batcher.embedder.dimension,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        hnsw_ef_runtime=settings.hnsw_ef_runtime,
        vector_type=settings.vector_type,
        archived=archived,
        archive_partitions=settings.archive_partitions,
        model=batcher.embedder.pack.manifest.model_name,
        reader=(reader := await _replica(settings, stack)),
        layout=settings.index_layout,
        tenant_vectors=settings.tenant_index_vectors,
        tenant_hnsw_above=settings.tenant_index_hnsw_above,
    )
    await memory_store.ensure_index()
    episode_log = RedisEpisodeLog(
        client,
        max_len=settings.episode_max_len,
        archived=archived,
        archive_partitions=settings.archive_partitions,
    )
    episode_index = RedisEpisodeIndex(
        client,
        index_name=f"{settings.index_name}-episodes",
        dimension=batcher.dimension,
        batch=settings.episode_index_batch,
        layout=settings.index_layout,
    )
    await episode_index.ensure()
    episode_indexer = EpisodeIndexer(episode_index, batcher)
    documents = DocumentStore(
        client,
        working_ttl_s=settings.working_ttl_s,
        checkpoint_ttl_s=settings.checkpoint_ttl_s,
        max_messages=settings.max_session_messages,
        max_checkpoints=settings.max_checkpoints,
        # What the largest response may carry, less room for the rest of it.
        max_session_bytes=settings.max_message_bytes - 64 * 1024,
        archived=archived,
        archive_partitions=settings.archive_partitions,
    )
    access = AccessRecorder(memory_store)
    bank = MemoryBank(
        memory_store, batcher, settings, access, archive, _summarizer(settings, stack)
    )
    await bank.claim_vector_space(vector_space)
    reembedder = None
    source, state = await reembed_state(client, settings.index_name)
    if state in (BUILDING, FILLED):
        log.warning(
            "index %s, built by `aether-memory reembed` from %s, is %s: the re-embedder worker "
            "embeds what it lacks (memories the old service wrote since), then marks it complete",
            settings.index_name,
            source,
            state,
        )
        reembedder = Reembedder(
            client, batcher.embed_many, memory_store, episode_index, episode_log
        )
    archiver = None
    if archive is not None:
        n = settings.archive_partitions
        archiver = Archivers(
            [
                (
                    RedisOutbox(client, batch=settings.archive_batch, partition=p, partitions=n),
                    Lease(client, archiver_lease(p, n), ARCHIVER_LEASE_MS),
                )
                for p in range(n)
            ],
            archive,
        )
    maintenance = Maintenance(
        memory_store,
        archive,
        LifecyclePolicy(
            promote_accesses=settings.promote_accesses,
            promote_importance=settings.promote_importance,
            decay_half_life_s=settings.decay_half_life_s,
            evict_below=settings.decay_evict_below,
        ),
        lease=Lease(client, MAINTENANCE_LEASE, max(1, int(settings.maintenance_interval_s * 1000))),
        batch=settings.maintenance_batch,
        interval_s=settings.maintenance_interval_s,
        episodes=(episode_log, episode_index),
        episode_retention_s=settings.episode_retention_s,
        access=access,
    )
    replicas = (
        ReplicaWait(client, settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
        if settings.redis_wait_replicas
        else None
    )
    tokens = PageTokens(await page_token_key(client, settings))
    tails = EpisodeTails(episode_log)  # one shared reader per tenant for all subscribers
    episodes = EpisodeServicer(
        Episodes(episode_log, tails, episode_index, bank.embed_query), tokens, settings, replicas
    )
    states = AgentStates(documents)
    memories = MemoryServicer(
        bank,
        Sessions(documents),
        states,
        Idempotent(RequestLog(client, settings.request_id_ttl_s)),
        ToolCache(documents, settings.tool_cache_ttl_s),
        tokens,
        settings,
        SelfModel(bank, states, episode_log),
        replicas,
    )
    interceptor = AccessInterceptor(
        ApiKeys(client) if settings.require_api_keys else None,
        default_tenant=settings.default_tenant,
        rate_per_s=settings.rate_limit_per_s,
        burst=settings.rate_limit_burst,
        max_streams=settings.max_streams_per_tenant,
        key_cache_s=settings.api_key_cache_s,
        write_guard=(
            DiskGuard(settings.data_dir, int(settings.min_free_disk_mb * 2**20)).check
            if (settings.redis_url is None or settings.parent_runs_redis)
            and settings.min_free_disk_mb > 0
            else None
        ),
    )
    return Parts(
        memory_store,
        episode_log,
        episode_index,
        episode_indexer,
        bank,
        access,
        archiver,
        maintenance,
        memories,
        episodes,
        tails,
        interceptor,
        reembedder,
        reader,
    )
