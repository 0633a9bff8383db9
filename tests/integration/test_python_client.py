"""The Python client wrapper: its tenant and key reach every kind of call, sync and async."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from aether.memory.v1 import episode_pb2, episode_service_pb2, memory_pb2, memory_service_pb2

from aether_memory.app import Running
from aether_memory_client import (
    Added,
    AsyncClient,
    AsyncMemory,
    Client,
    Hit,
    Memory,
    Message,
)

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


def _use_memory(address: str, tenant: str) -> None:
    with Memory(address, tenant=tenant, agent="me") as memory:
        added = memory.add(
            "I am allergic to peanuts.",
            tags=["health"],
            metadata={"source": "chat"},
            importance=0.9,
        )
        assert isinstance(added, Added) and not added.deduplicated
        assert memory.add("I am allergic to peanuts.").deduplicated  # the same content again
        review = memory.add("The quarterly review moved to Thursday.", tags=["work"])
        hits = memory.search("which foods should I avoid?", k=2)
        assert all(isinstance(h, Hit) for h in hits)
        assert hits[0].id == added.id and hits[0].score >= hits[-1].score
        assert hits[0].tags == ("health",) and hits[0].metadata == {"source": "chat"}
        assert hits[0].importance == 0.9 and hits[0].similarity > 0.3
        assert [h.id for h in memory.search("quarterly review", tags=["health"])] == [added.id]
        assert memory.search("quarterly review", k=1)[0].id == review.id
        assert memory.search("orbital mechanics of neutron stars", min_similarity=0.4) == []
        assert memory.get(added.id).content == "I am allergic to peanuts."
        assert memory.forget(added.id) == [added.id]
        try:
            memory.get(added.id)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("a forgotten memory was found")
        assert memory.search("peanuts", agent="someone-else") == []


async def test_the_high_level_memory_api_speaks_plain_dataclasses(service: Running) -> None:
    await asyncio.to_thread(_use_memory, service.address, f"hl-{uuid.uuid4().hex[:8]}")
    async with AsyncMemory(service.address, tenant=f"hl-{uuid.uuid4().hex[:8]}") as memory:
        added = await memory.add("Ana works as a nurse in Lisbon.", agent="me")
        hits = await memory.search("where does Ana work?", agent="me", k=1)
        assert [(h.id, h.content) for h in hits] == [(added.id, "Ana works as a nurse in Lisbon.")]
        assert (await memory.get(added.id)).agent_id == "me"
        assert await memory.forget(added.id, agent="me") == [added.id]


def _use_sessions(address: str, tenant: str) -> None:
    with Memory(address, tenant=tenant, agent="me") as memory:
        chat = memory.session("trip")
        assert chat.messages() == []  # never written
        chat.append("user", "Book a table for two.")
        saved = chat.checkpoint("before the booking")
        after = chat.append("assistant", "Booked at 8pm.")
        assert [m.content for m in after] == ["Book a table for two.", "Booked at 8pm."]
        assert chat.restore(saved) == [Message("user", "Book a table for two.")]
        assert chat.messages() == [Message("user", "Book a table for two.")]
        remembered = chat.remember("The user prefers window seats.")
        assert memory.get(remembered.id).session_id == "trip"
        first = memory.record("restaurant_search", outcome="success", session="trip", event_id="e1")
        assert memory.record("restaurant_search", event_id="e1") == first  # no second copy
        with pytest.raises(ValueError):
            memory.record("x", kind="no_such_kind")


async def test_sessions_checkpoints_and_episodes_through_the_high_level_api(
    service: Running, channel: object
) -> None:
    tenant = f"hs-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(_use_sessions, service.address, tenant)
    raw = new_client(channel, tenant)  # type: ignore[arg-type]
    listed = await raw.episodes.ListEpisodes(
        episode_service_pb2.ListEpisodesRequest(page_size=10), metadata=raw.md
    )
    assert [(e.event_id, e.session_id) for e in listed.episodes] == [("e1", "trip")]
    async with AsyncMemory(service.address, tenant=tenant, agent="me") as memory:
        chat = memory.session("trip")
        assert [m.content for m in await chat.messages()] == ["Book a table for two."]
        number = await chat.checkpoint()
        await chat.append("user", "Make it three.")
        assert len(await chat.restore(number)) == 1
        assert await memory.record("web_search", kind="tool_call") != ""
