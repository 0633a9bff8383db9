"""One index per tenant (AETHER_INDEX_LAYOUT=tenant), through the service: on one Redis, and on a
real Redis Cluster of 3 primaries (AETHER_REDIS_CLUSTER) with tenants on every node and the
archive on.

Each tenant's memories and episodes are stored, searched (hybrid, keyword, by event time),
listed, counted, updated and forgotten; identical content in every tenant must never cross; the
deployment-wide counts add every tenant's index up; a tenant with nothing stored searches
nothing without an error. A store keeps the layout it started with: the other one is refused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import pytest_asyncio
from aether.memory.v1 import episode_service_pb2, memory_pb2, memory_service_pb2
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from redis.cluster import key_slot

from aether_memory.app import Running, serve
from aether_memory.domain.episodes import EpisodeDoc, EpisodeQuery
from aether_memory.domain.errors import StartupError
from aether_memory.domain.memory import Memory, MemoryFilter
from aether_memory.domain.tenant import Tenant
from aether_memory.index_layout_command import Refused, to_tenant_layout
from aether_memory.settings import Settings
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.keys import index_tenants
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from aether_memory.stores.redis.search import info_field, routed
from aether_memory.stores.redis.vector_slots import held_vectors
from tests.support.cluster import LocalCluster, archived_service, local_cluster
from tests.support.waiting import until

from .conftest import Client, new_client
from .test_episode_service import episode, record
from .test_memory_service import FACTS, search, store

S = memory_service_pb2
INDEX = "aether-memories"
DAY_ONE = 1_700_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas=0) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def on_cluster(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with archived_service(cluster, tmp_path_factory.mktemp("on-cluster")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def on_one_redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data_dir: Path = tmp_path_factory.mktemp("tenant-layout")
    settings = Settings(
        port=0,
        data_dir=data_dir,
        redis_url=None,
        index_layout="tenant",
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    async with serve(settings) as running:
        yield running


async def episode_hits(client: Client, query: str) -> list[str]:
    response = await client.episodes.SearchEpisodes(
        episode_service_pb2.SearchEpisodesRequest(query=query, page_size=50), metadata=client.md
    )
    return [r.episode.event_id for r in response.results] if response.index_lag == 0 else []


async def listed(client: Client) -> list[str]:
    response = await client.memory.ListMemories(
        S.ListMemoriesRequest(agent_id="agent-1", page_size=100), metadata=client.md
    )
    return [m.content for m in response.memories]


async def episode_indexed(client: Client) -> bool:
    return await episode_hits(client, "weather") == [f"e-{client.tenant}"]


async def top_memory(client: Client, query: str) -> memory_pb2.Memory:
    """The first memory a default search of agent-1's memories answers."""
    found = await client.memory.SearchMemories(
        S.SearchMemoriesRequest(agent_id="agent-1", query=query), metadata=client.md
    )
    return found.results[0].memory


async def every_operation_keeps_to_its_tenant(running: Running, tenants: list[str]) -> None:
    """Identical facts in every tenant: a hit from another tenant would show by its id."""
    async with grpc.aio.insecure_channel(running.address) as channel:
        clients = [new_client(channel, t) for t in tenants]
        own: dict[str, set[str]] = {}
        for c in clients:
            facts = [await store(c, fact) for fact in FACTS]
            # A batch, with event times for a time-bounded search.
            batch = await c.memory.BatchStoreMemories(
                S.BatchStoreMemoriesRequest(
                    requests=[
                        S.StoreMemoryRequest(
                            memory=memory_pb2.Memory(
                                agent_id="agent-1",
                                content=f"Trip {i} to Porto.",
                                event_time=Timestamp(seconds=DAY_ONE + i * 86_400),
                            )
                        )
                        for i in range(3)
                    ]
                ),
                metadata=c.md,
            )
            own[c.tenant] = {m.id for m in facts} | {r.memory.id for r in batch.responses}
            await record(c, [episode(f"e-{c.tenant}", payload_text="looked up the weather")])

        for c in clients:
            hybrid = await c.memory.SearchMemories(
                S.SearchMemoriesRequest(agent_id="agent-1", query="hiking with my dog Rex"),
                metadata=c.md,
            )
            assert hybrid.results[0].memory.content == FACTS[0]
            assert hybrid.results[0].breakdown.keyword_score > 0
            assert hybrid.results[0].breakdown.vector_similarity > 0.3
            assert {r.memory.id for r in hybrid.results} <= own[c.tenant]
            trips = await c.memory.SearchMemories(
                S.SearchMemoriesRequest(
                    agent_id="agent-1",
                    query="Porto",
                    filter=memory_pb2.MemoryFilter(
                        start_time=Timestamp(seconds=DAY_ONE + 86_400),
                        end_time=Timestamp(seconds=DAY_ONE + 10 * 86_400),
                    ),
                ),
                metadata=c.md,
            )
            assert sorted(r.memory.content for r in trips.results) == [
                "Trip 1 to Porto.",
                "Trip 2 to Porto.",
            ]
            assert {r.memory.id for r in trips.results} <= own[c.tenant]
            assert len(await listed(c)) == len(FACTS) + 3

        # Forget and update in the first tenant only; the others keep theirs.
        first, *others = clients
        hiking = await top_memory(first, "hiking with my dog Rex")
        await first.memory.ForgetMemories(
            S.ForgetMemoriesRequest(agent_id="agent-1", ids=S.MemoryIds(ids=[hiking.id])),
            metadata=first.md,
        )
        assert FACTS[0] not in await search(first, "hiking with my dog Rex")
        for c in others:
            assert (await search(c, "hiking with my dog Rex"))[0] == FACTS[0]
        sister = await top_memory(first, "sister Ana nurse")
        await first.memory.UpdateMemory(
            S.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=sister.id, content="My sister Ana moved to Madeira."),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=first.md,
        )
        assert (await search(first, "Madeira"))[0] == "My sister Ana moved to Madeira."
        for c in others:
            assert "My sister Ana moved to Madeira." not in await search(c, "Madeira")

        for c in clients:
            await until(
                lambda c=c: episode_indexed(c), f"{c.tenant}'s episode indexed", within_s=30
            )

        # A tenant that never stored anything searches and lists nothing, without an error.
        empty = new_client(channel)
        assert await search(empty, "hiking") == []
        assert await listed(empty) == []
        assert await episode_hits(empty, "weather") == []

    # The deployment-wide count adds every tenant's index up.
    counting = RedisMemoryStore(running.redis, index_name=INDEX, dimension=384, layout="tenant")
    counts = await counting.tier_counts()
    assert sum(counts.values()) == len(tenants) * (len(FACTS) + 3) - 1


async def test_every_operation_keeps_to_its_tenant_on_one_redis(on_one_redis: Running) -> None:
    await every_operation_keeps_to_its_tenant(
        on_one_redis, [f"t-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    )


async def test_every_operation_keeps_to_its_tenant_on_a_cluster_of_three_primaries(
    on_cluster: Running, cluster: LocalCluster
) -> None:
    tenants = cluster.spread_tenants(4)
    await every_operation_keeps_to_its_tenant(on_cluster, tenants)
    # Concurrent searches of tenants on every node, each sent straight to the node that holds
    # its tenant's index: redis-py on its own sends FT.SEARCH to a random node, and the MOVED
    # answers that follow make it close every connection under the calls in flight.
    async with grpc.aio.insecure_channel(on_cluster.address) as channel:
        clients = [new_client(channel, t) for t in tenants]
        bursts = await asyncio.gather(
            *(search(c, "hiking with my dog Rex") for c in clients for _ in range(8))
        )
    assert all(hits[0] == FACTS[0] for hits in bursts[8:])
    assert on_cluster.redis.reinitialize_counter == 0  # type: ignore[attr-defined]
    # Every tenant's index lives on the node that holds the tenant.
    for node in cluster.primaries:
        names = {n.decode() for n in node.client().execute_command("FT._LIST")}
        tenant_indexes = {n for n in names if n.startswith(INDEX + ":{")}
        assert tenant_indexes, f"node {node.port} holds no tenant's index"
        for name in tenant_indexes:
            assert cluster.owner(key_slot(name.encode())).port == node.port
    # The archiver, reading every tenant's outbox on every node, archived every write.
    assert on_cluster.archiver is not None
    await on_cluster.archiver.drain()
    archive = on_cluster.archiver.archive
    for tenant in tenants:  # the first forgot one
        kept = len(FACTS) + 3 - (tenant == tenants[0])
        assert await archive.memories.count_documents({"tenant": tenant}) == kept
        assert await archive.episodes.count_documents({"tenant": tenant}) == 1


async def a_large_tenant_moves_to_hnsw_while_it_is_searched(running: Running, tenant: str) -> None:
    """A tenant past the size moves from its FLAT index to HNSW under a running service:
    every search before, during and after finds its memory, and later writes are searchable."""
    name = f"{INDEX}:{{{tenant}}}"
    async with grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, tenant)
        for fact in FACTS:
            await store(client, fact)
        grower = RedisMemoryStore(
            running.redis, index_name=INDEX, dimension=384, layout="tenant", tenant_hnsw_above=4
        )
        await grower.ensure_index()
        assert await vector_algorithm(running, name) == "FLAT"
        found: list[list[str]] = []
        stop = asyncio.Event()

        async def searching() -> None:
            while not stop.is_set():
                found.append(await search(client, "hiking with my dog Rex"))

        task = asyncio.create_task(searching())
        await asyncio.sleep(0.2)
        moved = await grower.grow_indexes()
        await asyncio.sleep(0.2)
        stop.set()
        await task
        assert Tenant(tenant) in moved
        assert len(found) >= 2 and all(hits[0] == FACTS[0] for hits in found), found
        assert await vector_algorithm(running, name) == "HNSW"  # the name answers by its alias
        assert Tenant(tenant) not in await grower.grow_indexes()  # moved once
        # A process that meets the tenant for the first time does not hide the alias.
        fresh = RedisMemoryStore(running.redis, index_name=INDEX, dimension=384, layout="tenant")
        await fresh.ensure_index()
        await fresh.prepare(Tenant(tenant))
        assert await vector_algorithm(running, name) == "HNSW"
        await store(client, "The boat trip to Madeira is in August.")
        assert (await search(client, "sailing to Madeira"))[0] == (
            "The boat trip to Madeira is in August."
        )


async def vector_algorithm(running: Running, name: str) -> str:
    info = await running.redis.execute_command("FT.INFO", name, **routed(running.redis, name))
    for attribute in info_field(info, "attributes"):
        if not isinstance(attribute, dict):  # RESP2: a list of pairs
            attribute = dict(zip(attribute[::2], attribute[1::2], strict=False))
        if attribute.get(b"type") == b"VECTOR":
            return str(attribute[b"algorithm"].decode())
    raise AssertionError(f"{name} has no vector field")


async def test_a_large_tenant_moves_to_hnsw_on_one_redis(on_one_redis: Running) -> None:
    await a_large_tenant_moves_to_hnsw_while_it_is_searched(on_one_redis, "grows")


async def test_a_large_tenant_moves_to_hnsw_on_a_cluster(
    on_cluster: Running, cluster: LocalCluster
) -> None:
    for tenant in cluster.spread_tenants(3, "grows"):  # on every node
        await a_large_tenant_moves_to_hnsw_while_it_is_searched(on_cluster, tenant)


async def test_a_store_keeps_the_layout_it_started_with(on_one_redis: Running) -> None:
    client = on_one_redis.redis
    shared = RedisMemoryStore(client, index_name=INDEX, dimension=384, layout="shared")
    with pytest.raises(StartupError, match="one index per tenant"):
        await shared.ensure_index()
    legacy = RedisMemoryStore(client, index_name="legacy-shared", dimension=384)
    await legacy.ensure_index()
    per_tenant = RedisMemoryStore(
        client, index_name="legacy-shared", dimension=384, layout="tenant"
    )
    with pytest.raises(StartupError, match="shared by every tenant"):
        await per_tenant.ensure_index()
    other_model = RedisMemoryStore(client, index_name=INDEX, dimension=768, layout="tenant")
    with pytest.raises(StartupError, match="384-d"):
        await other_model.ensure_index()


async def indexed(client: Any, name: str) -> bool:
    info = await client.ft(name).info()
    return not int(info.get(b"indexing", info.get("indexing", 0)))


async def test_a_shared_index_moves_to_one_index_per_tenant_in_place(
    on_one_redis: Running,
) -> None:
    client = on_one_redis.redis
    name = f"moving-{uuid.uuid4().hex[:6]}"
    shared = RedisMemoryStore(client, index_name=name, dimension=8, vector_type="float32")
    await shared.ensure_index()
    shared_episodes = RedisEpisodeIndex(client, index_name=f"{name}-episodes", dimension=8)
    await shared_episodes.ensure()
    rng = np.random.default_rng(7)
    tenants = [Tenant(t) for t in [f"t-{uuid.uuid4().hex[:8]}" for _ in range(3)]]
    vectors: dict[str, np.ndarray] = {}
    for t in tenants:
        for i in range(4):
            vector = rng.normal(size=8).astype(np.float32)
            vector /= np.linalg.norm(vector)
            memory = Memory(
                id=f"{t.name}-{i}", agent_id="a", content=f"note {i} on sailing", embedding=vector
            )
            vectors[memory.id] = vector
            await shared.store(t, memory, f"fp-{i}", None)
        docs = [EpisodeDoc(t, f"1-{i}", "a", "", "tool_call", "ok", 1.0) for i in range(2)]
        await shared_episodes.write(docs, rng.normal(size=(2, 8)).astype(np.float32), {})

    # The shared index covers every memory hash in this Redis (the other tests' too), once it
    # has scanned them.
    await until(lambda: indexed(client, name), f"{name} scanned the keys it found")
    documents = sum([(await held_vectors(client, n))[1] for n in (name, f"{name}-episodes")])
    assert documents >= 3 * 4 + 3 * 2
    settings = Settings(index_name=name, redis_url=on_one_redis.redis_url)
    moved = await to_tenant_layout(client, settings, progress=False)
    # Every document under the prefixes is written again: the other tests' too, which this
    # 8-d index cannot hold (their vectors are 384-d) in either layout.
    assert moved.documents >= documents
    assert {t.name for t in tenants} <= {
        t.decode() for t in await client.smembers(index_tenants(name))
    }
    assert await held_vectors(client, name) is None  # the shared indexes are gone
    assert await held_vectors(client, f"{name}-episodes") is None
    with pytest.raises(StartupError, match="one index per tenant"):
        await RedisMemoryStore(client, index_name=name, dimension=8).ensure_index()
    with pytest.raises(Refused, match="already has one index per tenant"):
        await to_tenant_layout(client, settings, progress=False)

    per_tenant = RedisMemoryStore(client, index_name=name, dimension=8, layout="tenant")
    await per_tenant.ensure_index()
    assert per_tenant.vector_type == "float32"  # the shared index's, not the settings' default
    episodes = RedisEpisodeIndex(
        client, index_name=f"{name}-episodes", dimension=8, layout="tenant"
    )
    everything = MemoryFilter(agent_id="a")
    for t in tenants:
        assert await per_tenant.count(t, everything) == 4
        for i in range(4):
            hits = await per_tenant.vector_search(t, everything, vectors[f"{t.name}-{i}"], 4)
            assert hits.scores[0][0] == f"{t.name}-{i}"
            assert {memory_id for memory_id, _ in hits.scores} == {
                f"{t.name}-{j}" for j in range(4)
            }
        keyword = await per_tenant.keyword_search(t, everything, "sailing", 10)
        assert len(keyword.scores) == 4
        query = EpisodeQuery("", "", (), (), None, None, 0, 10)
        found = await episodes.search(t, query, rng.normal(size=8).astype(np.float32))
        assert sorted(hit.stream_id for hit in found) == ["1-0", "1-1"]
