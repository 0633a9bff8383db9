"""The Python client wrapper: its tenant and key reach every kind of call, sync and async."""

from __future__ import annotations

import asyncio
import uuid

from aether.memory.v1 import episode_pb2, episode_service_pb2, memory_pb2, memory_service_pb2

from aether_memory.app import Running
from aether_memory_client import AsyncClient, Client

from .conftest import new_client


async def test_async_client_scopes_unary_and_streaming_calls_to_its_tenant(
    service: Running, channel: object
) -> None:
    tenant = f"pc-{uuid.uuid4().hex[:8]}"
    async with AsyncClient(service.address, tenant=tenant) as client:
        acks = await client.record(
            [episode_pb2.Episode(event_id=f"p{i}", agent_id="a", type=1) for i in range(150)]
        )
        assert [a.WhichOneof("result") for a in acks] == ["written"] * 150
        stored = await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content="Scoped by the client.")
            )
        )
    raw = new_client(channel, tenant)  # type: ignore[arg-type]
    listed = await raw.episodes.ListEpisodes(
        episode_service_pb2.ListEpisodesRequest(page_size=1000), metadata=raw.md
    )
    assert len(listed.episodes) == 150
    got = await raw.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=stored.memory.id), metadata=raw.md
    )
    assert got.memory.content == "Scoped by the client."


async def test_sync_client_records_and_reads_in_its_tenant(service: Running) -> None:
    tenant = f"pc-{uuid.uuid4().hex[:8]}"

    def work() -> tuple[int, int]:
        with Client(service.address, tenant=tenant) as client:
            acks = client.record(
                [episode_pb2.Episode(event_id=f"s{i}", agent_id="a", type=1) for i in range(3)]
            )
            again = client.record([episode_pb2.Episode(event_id="s0", agent_id="a", type=1)])
            assert again[0].written.duplicate  # a resent id acks the original
            listed = client.episodes.ListEpisodes(episode_service_pb2.ListEpisodesRequest())
            return len(acks), len(listed.episodes)

    assert await asyncio.to_thread(work) == (3, 3)
