"""Every write keeps to its tenant's slot, as a Redis Cluster needs.

The service runs against a Redis in cluster mode that owns every slot. Such a node runs any
single-key command, but refuses a script or transaction whose keys hash to more than one slot
(CROSSSLOT), which a multi-node cluster would refuse too. With the archive on, every kind of
write goes through it: memories, episodes (their append script, the indexer's group, the
archive outbox), working memory, checkpoints, agent state and the tool cache; then the archiver
and the episode indexer must both catch up.

Searches are not checked here: on a one-node cluster this Search module returns keys without
their fields (it does on three nodes: test_cluster_search.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import agent_state_pb2, memory_pb2, memory_service_pb2
from google.protobuf import struct_pb2

from aether_memory.app import Running, serve
from aether_memory.domain.tenant import Tenant
from aether_memory.settings import Settings
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.keys import keys_of
from tests.support.cluster import LocalCluster, local_cluster
from tests.support.servers import FerretDB

from .conftest import Client, new_client
from .test_archive import archiver, store
from .test_episode_service import episode, record
from .test_state_and_sessions import append

S = memory_service_pb2


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("one-node"), primaries=1, replicas=0) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(
    one_node: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    ferret = FerretDB(tmp_path_factory.mktemp("ferretdb-one-slot"))
    ferret.start()
    settings = Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp("one-slot"),
        redis_url=f"redis://127.0.0.1:{one_node.primaries[0].port}",
        mongo_url=ferret.url,
        archive_write_concern="1",
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    try:
        async with serve(settings) as running:
            yield running
    finally:
        ferret.remove()


async def test_every_kind_of_write_runs_in_one_slot_and_is_archived_and_indexed(
    service: Running,
) -> None:
    async with grpc.aio.insecure_channel(service.address) as channel:
        client: Client = new_client(channel)
        memories = [await store(client, f"fact {i} kept in one slot") for i in range(3)]
        batch = await client.memory.BatchStoreMemories(
            S.BatchStoreMemoriesRequest(
                requests=[
                    S.StoreMemoryRequest(
                        memory=memory_pb2.Memory(
                            agent_id="agent-1", session_id="s1", content=f"turn {i}"
                        )
                    )
                    for i in range(4)
                ]
            ),
            metadata=client.md,
        )
        assert all(r.memory.id for r in batch.responses)
        await client.memory.UpdateMemory(
            S.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=memories[0].id, importance=0.9),
                update_mask={"paths": ["importance"]},
            ),
            metadata=client.md,
        )
        forgotten = await client.memory.ForgetMemories(
            S.ForgetMemoriesRequest(agent_id="agent-1", ids=S.MemoryIds(ids=[memories[2].id])),
            metadata=client.md,
        )
        assert list(forgotten.forgotten_ids) == [memories[2].id]

        acks = await record(client, [episode(f"ev-{i}") for i in range(10)])
        again = await record(client, [episode("ev-3"), episode("ev-10")])
        assert all(a.WhichOneof("result") == "written" for a in acks + again)
        assert [a.written.duplicate for a in again] == [True, False]

        await append(client, "s1", "hello", "again")
        await client.memory.CreateCheckpoint(
            S.CreateCheckpointRequest(session_id="s1"), metadata=client.md
        )
        await append(client, "s1", "after the checkpoint")
        await client.memory.RestoreCheckpoint(
            S.RestoreCheckpointRequest(session_id="s1", number=1), metadata=client.md
        )
        state = struct_pb2.Struct()
        state.update({"goal": "one slot"})
        await client.memory.UpdateAgentState(
            S.UpdateAgentStateRequest(
                agent_state=agent_state_pb2.AgentState(agent_id="agent-1", state=state)
            ),
            metadata=client.md,
        )
        arguments, result = struct_pb2.Struct(), struct_pb2.Struct()
        arguments.update({"city": "Oslo"})
        result.update({"celsius": 3})
        await client.memory.PutToolResult(
            S.PutToolResultRequest(
                tool_result=agent_state_pb2.ToolResult(
                    tool_name="weather", arguments=arguments, result=result
                )
            ),
            metadata=client.md,
        )

        await archiver(service).drain()
        archive = archiver(service).archive
        tenant = {"tenant": client.tenant}
        assert await archive.memories.count_documents(tenant) == 2 + 4  # one was forgotten
        assert await archive.episodes.count_documents(tenant) == 11
        assert await archive.checkpoints.count_documents(tenant) == 1
        assert await archive.agent_states.count_documents(tenant) == 1

        queue = RedisEpisodeIndex(service.redis, index_name="lag-only", dimension=1)
        tenant_ = Tenant(client.tenant)
        for _ in range(600):  # the indexer runs in its own task: up to 60 s
            if not await queue.lag(tenant_):
                break
            await asyncio.sleep(0.1)
        assert await queue.lag(tenant_) == 0
        written = [a.written.episode_id for a in acks + again[1:]]
        docs = [keys_of(tenant_).episode_doc(i) for i in written]
        assert await service.redis.exists(*docs) == 11
