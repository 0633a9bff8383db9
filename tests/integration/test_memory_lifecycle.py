"""Tier transitions on the hot-only service: promotion, bounded maintenance ticks, no eviction
without an archive, and summarized working memory moving out of the working tier."""

from __future__ import annotations

import time

from aether.memory.v1 import memory_pb2, memory_service_pb2

from aether_memory.app import Running
from aether_memory.domain.lifecycle import LifecyclePolicy
from aether_memory.domain.memory import MemoryFilter
from aether_memory.domain.tenant import Tenant
from aether_memory.service.maintenance import Maintenance
from aether_memory.stores.redis.keys import TenantKeys
from aether_memory.stores.redis.lease import Lease
from aether_memory.stores.redis.memory_store import RedisMemoryStore

from .conftest import Client
from .test_memory_service import store

SHORT = memory_pb2.MEMORY_TIER_SHORT_TERM
LONG = memory_pb2.MEMORY_TIER_LONG_TERM
WORKING = memory_pb2.MEMORY_TIER_WORKING
YEAR = 365 * 24 * 3600.0


async def get(client: Client, memory_id: str) -> memory_pb2.Memory:
    response = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=memory_id), metadata=client.md
    )
    return response.memory


async def test_repeated_reads_and_high_importance_promote_to_long_term(
    service: Running, client: Client
) -> None:
    read_often = await store(client, "The user's dentist is Dr. Okafor.", tier=SHORT)
    important = await store(client, "The user is diabetic.", tier=SHORT, importance=0.95)
    ordinary = await store(client, "The user asked about the weather.", tier=SHORT)
    for _ in range(3):
        await get(client, read_often.id)
    assert read_often.HasField("expire_time")

    await service.maintenance.full_pass()

    keys = TenantKeys(client.tenant)
    for promoted in (read_often, important):
        now = await get(client, promoted.id)
        assert now.tier == LONG and not now.HasField("expire_time")
        assert await service.redis.ttl(keys.memory(promoted.id)) == -1  # persisted
    stays = await get(client, ordinary.id)
    assert stays.tier == SHORT and stays.HasField("expire_time")
    assert await service.redis.ttl(keys.memory(ordinary.id)) > 0


async def test_without_an_archive_decayed_memories_stay_in_redis(
    service: Running, client: Client
) -> None:
    weak = await store(client, "A weakly held long-term memory.", importance=0.0)
    report = await service.maintenance.full_pass(now=time.time() + YEAR)
    assert report.evicted == 0
    assert (await get(client, weak.id)).content == weak.content


async def test_each_tick_visits_a_bounded_batch_and_the_walk_covers_everything(
    service: Running, client: Client
) -> None:
    for i in range(7):
        await store(client, f"tick walk memory {i}", tier=SHORT, importance=0.9)
    # Many memories stored in one burst share their creation time (to the 10 ms the index
    # reports): a walk keyed on it used to stall on them for good.
    burst = memory_service_pb2.BatchStoreMemoriesRequest(
        requests=[
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    agent_id="burst", content=f"burst memory {i}", embedding=[1.0] * 384
                )
            )
            for i in range(40)
        ]
    )
    await client.memory.BatchStoreMemories(burst, metadata=client.md)
    store_ = RedisMemoryStore(service.redis, index_name="aether-memories", dimension=384)
    lease = Lease(service.redis, "test:maintenance:lease", 60_000)
    small = Maintenance(store_, None, LifecyclePolicy(), lease=lease, batch=3, interval_s=60)
    await service.redis.delete("aether:maintenance:cursor")
    scanned = []
    total = len([k async for k in service.redis.scan_iter(match="aether:mem:*", _type="HASH")])
    for _ in range(10 * total):
        report = await small.tick()
        assert report.scanned <= 3 * 4  # SCAN's COUNT is a hint: about a batch per tick
        scanned.append(report.scanned)
        if report.wrapped:
            break
    assert report.wrapped
    listed = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(agent_id="agent-1", page_size=100),
        metadata=client.md,
    )
    assert [m.tier for m in listed.memories] == [LONG] * 7  # every one was reached
    assert sum(scanned) >= 7 and len(scanned) >= 3


async def test_summarized_working_memories_leave_the_working_tier(client: Client) -> None:
    turns = [
        "The user wants a vegetarian lasagne recipe.",
        "They have no oven, only a stovetop.",
        "They are cooking for six people on Saturday.",
    ]
    sources = [await store(client, t, session_id="cook", tier=WORKING) for t in turns]
    response = await client.memory.SummarizeMemories(
        memory_service_pb2.SummarizeMemoriesRequest(
            agent_id="agent-1", session_id="cook", max_sentences=2
        ),
        metadata=client.md,
    )
    assert sorted(response.source_ids) == sorted(m.id for m in sources)
    for source in sources:
        moved = await get(client, source.id)
        assert moved.tier == SHORT and moved.content == source.content
        assert moved.expire_time.ToSeconds() > source.expire_time.ToSeconds()
    working = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(
            agent_id="agent-1", filter=memory_pb2.MemoryFilter(tiers=[WORKING])
        ),
        metadata=client.md,
    )
    assert list(working.memories) == []


async def test_batched_knn_filtering_finds_what_the_default_plan_finds(
    service: Running, client: Client
) -> None:
    """The BATCHES hybrid policy (used for agents with many memories) returns the same ranking."""
    for i in range(30):
        await store(
            client, f"Batched filtering memory {i} about {['tea', 'trains', 'tax'][i % 3]}."
        )
    store_ = RedisMemoryStore(service.redis, index_name="aether-memories", dimension=384)
    await store_.ensure_index()  # takes on the index's vector type
    query = await service.embedder.embed("which trains?", "query")
    flt = MemoryFilter(agent_id="agent-1")
    default = await store_.vector_search(Tenant(client.tenant), flt, query, 10)
    batched = await store_.vector_search(Tenant(client.tenant), flt, query, 10, batches=True)
    assert [i for i, _ in batched.scores] == [i for i, _ in default.scores]
    assert len(batched.scores) == 10
