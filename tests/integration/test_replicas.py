"""Two service replicas on one Redis, as behind a load balancer: whatever one acknowledged, the
other serves (searches, reads, retried request ids, live episodes), concurrent writers on both
lose nothing, and access counts add up across them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio
import redis.asyncio as aioredis
from aether.memory.v1 import (
    episode_pb2,
    episode_service_pb2,
    memory_pb2,
    memory_service_pb2,
    working_memory_pb2,
)

from aether_memory.app import Running, serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from tests.support.faults import start_redis
from tests.support.servers import free_port
from tests.support.waiting import until

from .conftest import Client, new_client

TENANT = "replicas"


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[Running, Running]]:
    port = free_port()
    (tmp_path / "redis").mkdir()
    redis = await start_redis(tmp_path / "redis", port)
    try:
        async with contextlib.AsyncExitStack() as stack:
            running = []
            for name in ("a", "b"):
                settings = Settings(
                    port=0,
                    data_dir=tmp_path / name,
                    redis_url=f"redis://127.0.0.1:{port}/0",
                    index_episodes=False,
                    maintenance_interval_s=3600,
                    grace_s=1.0,
                )
                running.append(await stack.enter_async_context(serve(settings)))
            yield running[0], running[1]
    finally:
        redis.kill()
        await asyncio.to_thread(redis.wait)


@pytest_asyncio.fixture(loop_scope="session")
async def clients(replicas: tuple[Running, Running]) -> AsyncIterator[tuple[Client, Client]]:
    a, b = replicas
    async with (
        grpc.aio.insecure_channel(a.address) as channel_a,
        grpc.aio.insecure_channel(b.address) as channel_b,
    ):
        yield new_client(channel_a, TENANT), new_client(channel_b, TENANT)


def store_request(content: str, **fields: object) -> memory_service_pb2.StoreMemoryRequest:
    memory = memory_pb2.Memory(agent_id="agent", content=content)
    return memory_service_pb2.StoreMemoryRequest(memory=memory, **fields)  # type: ignore[arg-type]


async def test_what_one_replica_acknowledged_the_other_serves(
    clients: tuple[Client, Client],
) -> None:
    a, b = clients
    stored = await a.memory.StoreMemory(
        store_request("The staging database moved to eu-west-3."), metadata=a.md
    )
    found = await b.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(agent_id="agent", query="where is staging?"),
        metadata=b.md,
    )
    assert [r.memory.id for r in found.results][:1] == [stored.memory.id]
    # A request id retried on the other replica gets the first answer, not a second memory.
    first = await a.memory.StoreMemory(
        store_request("Deploys freeze on Fridays.", request_id="r-1"), metadata=a.md
    )
    again = await b.memory.StoreMemory(
        store_request("Deploys freeze on Fridays.", request_id="r-1"), metadata=b.md
    )
    assert again == first


async def test_an_episode_recorded_on_one_replica_reaches_a_subscriber_on_the_other(
    replicas: tuple[Running, Running], clients: tuple[Client, Client]
) -> None:
    _, running_b = replicas
    a, b = clients
    subscription = b.episodes.SubscribeEpisodes(
        episode_service_pb2.SubscribeEpisodesRequest(), metadata=b.md
    )

    async def first_episode() -> str:
        async for response in subscription:
            if response.HasField("episode"):
                return response.episode.event_id
        return ""

    waiting = asyncio.create_task(first_episode())

    def live() -> bool:
        reader = running_b.tails.readers.get(TENANT)
        return reader is not None and bool(reader.subscribers)

    await until(live, "the subscription on B reads live")
    await a.episodes.RecordEpisode(
        episode_service_pb2.RecordEpisodeRequest(
            episode=episode_pb2.Episode(
                event_id="on-a", agent_id="agent", type=episode_pb2.EPISODE_TYPE_TOOL_CALL
            )
        ),
        metadata=a.md,
    )
    assert await asyncio.wait_for(waiting, 10) == "on-a"
    subscription.cancel()


async def test_concurrent_writers_on_both_replicas_lose_nothing(
    clients: tuple[Client, Client],
) -> None:
    a, b = clients

    async def append(client: Client, n: int) -> None:
        await client.memory.AppendWorkingMemory(
            memory_service_pb2.AppendWorkingMemoryRequest(
                session_id="shared",
                messages=[working_memory_pb2.ContextMessage(role="user", content=f"m{n}")],
            ),
            metadata=client.md,
        )

    async def put(client: Client, n: int) -> memory_service_pb2.StoreMemoryResponse:
        request = memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="agent", key="profile/city", content=f"city {n}")
        )
        return await client.memory.StoreMemory(request, metadata=client.md)  # type: ignore[no-any-return]

    await asyncio.gather(*(append(c, n) for n in range(20) for c in (a, b)))
    session = await b.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="shared"), metadata=b.md
    )
    assert len(session.session.messages) == 40 and session.session.revision == 40

    # One key stored from both replicas at once: one memory, whichever write came last.
    puts = await asyncio.gather(*(put(c, n) for n in range(6) for c in (a, b)))
    assert len({p.memory.id for p in puts}) == 1
    assert sum(not p.replaced for p in puts) == 1
    got = await a.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(agent_id="agent", key="profile/city"), metadata=a.md
    )
    assert got.memory.content in {f"city {n}" for n in range(6)}


async def test_reads_on_both_replicas_add_up_in_the_access_count(
    clients: tuple[Client, Client],
) -> None:
    a, b = clients
    stored = await a.memory.StoreMemory(
        store_request("The on-call rota is in Notion."), metadata=a.md
    )
    request = memory_service_pb2.GetMemoryRequest(id=stored.memory.id)
    for client, reads in ((a, 3), (b, 2)):
        for _ in range(reads):
            await client.memory.GetMemory(request, metadata=client.md)

    async def counted() -> bool:
        # ListMemories shows the counts in Redis and counts no read itself.
        listed = [
            await c.memory.ListMemories(
                memory_service_pb2.ListMemoriesRequest(agent_id="agent"), metadata=c.md
            )
            for c in (a, b)
        ]
        counts = [
            next(m.access_count for m in r.memories if m.id == stored.memory.id) for r in listed
        ]
        return counts == [5, 5]

    await until(counted, "both replicas show the five reads made through either", within_s=20)


async def test_replicas_starting_together_both_find_or_make_the_indexes(tmp_path: Path) -> None:
    """Replicas (and `serve --workers`) start at once: each checks that an index is missing and
    creates it, and all but one find it made meanwhile. Each must start, not fail on
    "Index already exists" (a `--workers` worker did, and was restarted)."""
    port = free_port()
    redis = await start_redis(tmp_path, port)
    clients = [aioredis.Redis(port=port) for _ in range(4)]
    try:
        for attempt in range(10):
            name = f"race-{attempt}"
            memories = [RedisMemoryStore(c, index_name=name, dimension=8) for c in clients]
            episodes = [
                RedisEpisodeIndex(c, index_name=f"{name}-episodes", dimension=8) for c in clients
            ]
            await asyncio.gather(*(m.ensure_index() for m in memories))
            await asyncio.gather(*(e.ensure() for e in episodes))
            assert {m.dimension for m in memories} == {8}
            names = {n.decode() for n in await clients[0].execute_command("FT._LIST")}
            assert {name, f"{name}-episodes"} <= names
    finally:
        for c in clients:
            await c.aclose()
        redis.kill()
        await asyncio.to_thread(redis.wait)
