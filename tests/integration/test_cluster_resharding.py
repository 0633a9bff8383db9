"""A tenant's hash slot moves to another primary (`aether-memory move-slot`) while an agent of
that tenant writes and searches through the service: every memory and episode, those written
during the move included, is there and searchable afterwards on the new primary, and no call
fails other than UNAVAILABLE (a write whose keys were split between the nodes for a moment).

During the move a search answers from the part of the tenant moved so far (the source hands
searches to the target, see slot_move.py); the test records how many searches found their
memory then, and requires none to fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import episode_service_pb2, memory_service_pb2
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import key_slot

from aether_memory.app import Running, serve
from aether_memory.slot_move import move_slot
from tests.support.cluster import LocalCluster, local_cluster
from tests.support.waiting import until

from .conftest import new_client
from .test_episode_service import episode, list_all, record
from .test_memory_service import search, store

S = memory_service_pb2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("reshard"), primaries=3, replicas=0) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = cluster.service_settings(tmp_path_factory.mktemp("reshard-service"))
    async with serve(settings) as running:
        yield running


async def test_a_tenant_slot_moves_while_its_agent_writes_and_searches(
    service: Running, cluster: LocalCluster
) -> None:
    tenant, neighbour = cluster.spread_tenants(3, "rs")[:2]
    slot = key_slot(("{" + tenant + "}").encode())
    source = cluster.owner(slot).port
    target = next(n.port for n in cluster.primaries if n.port != source)
    async with grpc.aio.insecure_channel(service.address) as channel:
        agent, other = new_client(channel, tenant), new_client(channel, neighbour)
        seeded = {}
        for n in range(60):
            memory = await store(agent, f"Fact {n}: the {n}th lighthouse keeper kept a diary.")
            seeded[memory.id] = memory.content
        await store(other, "The neighbour tenant lives elsewhere.")
        await record(
            agent, [episode(f"before-{n}", payload_text="checked the tide") for n in range(5)]
        )
        assert (await search(agent, "the 7th lighthouse keeper"))[0] == seeded_content(seeded, 7)

        stop = asyncio.Event()
        written: dict[str, str] = {}
        refused: list[grpc.StatusCode] = []
        found_during: list[bool] = []  # per search that ran while the keys moved
        moving = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                try:
                    memory = await store(agent, f"Late note {n} written while the slot moved.")
                except grpc.aio.AioRpcError as error:
                    refused.append(error.code())
                    await asyncio.sleep(0.02)
                    continue
                written[memory.id] = memory.content
                n += 1

        async def look() -> None:
            n = 0
            while not stop.is_set():
                wanted = seeded_content(seeded, n % 60)
                try:
                    hits = await search(agent, wanted)
                except grpc.aio.AioRpcError as error:
                    refused.append(error.code())
                    continue
                if moving.is_set():
                    found_during.append(bool(hits) and hits[0] == wanted)
                n += 1
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(write()), asyncio.create_task(look())]
        await until(lambda: len(written) >= 5, "writes before the move")
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes])
        moving.set()
        try:
            # Two keys per MIGRATE: a move long enough for searches and writes to run inside.
            moved = await move_slot(
                client,
                cluster.service_settings(),
                slot,
                f"127.0.0.1:{target}",
                batch=2,
                progress=False,
            )
        finally:
            moving.clear()
            await client.aclose()
        count = len(written)
        await until(lambda: len(written) >= count + 5, "writes after the move", within_s=30)
        stop.set()
        await asyncio.gather(*tasks)

        assert found_during, "no search ran while the keys moved"
        assert cluster.owner(slot).port == target
        assert moved.tenants >= 1 and moved.keys >= 60
        assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}, refused
        listed = await agent.memory.ListMemories(
            S.ListMemoriesRequest(agent_id="agent-1", page_size=1000), metadata=agent.md
        )
        assert {m.id: m.content for m in listed.memories} == seeded | written
        for content in [seeded_content(seeded, 7), *list(written.values())[-3:]]:
            assert (await search(agent, content))[0] == content
        assert await search(other, "neighbour tenant") == ["The neighbour tenant lives elsewhere."]
        assert [e.event_id for e in await list_all(agent)] == [f"before-{n}" for n in range(5)]
        await record(agent, [episode("after", payload_text="checked the tide again")])
        response = await until_episodes(agent, 6)
        assert sorted(r.episode.event_id for r in response.results) == sorted(
            [f"before-{n}" for n in range(5)] + ["after"]
        )
        print(
            f"moved {moved.keys} keys in {moved.seconds:.2f} s; searches during the move that "
            f"found their memory: {sum(found_during)} of {len(found_during)}"
        )


def seeded_content(seeded: dict[str, str], n: int) -> str:
    return f"Fact {n}: the {n}th lighthouse keeper kept a diary."


async def until_episodes(agent: object, count: int) -> episode_service_pb2.SearchEpisodesResponse:
    client = agent
    response = None

    async def indexed() -> bool:
        nonlocal response
        response = await client.episodes.SearchEpisodes(  # type: ignore[attr-defined]
            episode_service_pb2.SearchEpisodesRequest(query="tide", page_size=50),
            metadata=client.md,  # type: ignore[attr-defined]
        )
        return response.index_lag == 0 and len(response.results) >= count

    await until(indexed, f"{count} episodes indexed on the new primary", within_s=30)
    assert response is not None
    return response
