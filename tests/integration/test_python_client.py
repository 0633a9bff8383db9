"""The Python client wrapper: its tenant and key reach every kind of call, sync and async."""

from __future__ import annotations

import asyncio
import socket
import uuid

import grpc
import pytest
from aether.memory.v1 import episode_pb2, episode_service_pb2, memory_pb2, memory_service_pb2
from google.protobuf import json_format

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
        # A key names one memory of the agent: adding under it again replaces the text.
        city = await memory.add("Ana lives in Lisbon.", agent="me", key="ana/city")
        moved = await memory.add("Ana moved to Porto.", agent="me", key="ana/city")
        assert (city.replaced, moved.replaced, moved.id) == (False, True, city.id)
        got = await memory.get(key="ana/city", agent="me")
        assert (got.id, got.content, got.key) == (city.id, "Ana moved to Porto.", "ana/city")


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


def _agent_loop(address: str, tenant: str) -> tuple[str, list[str]]:
    """An agent loop adopting the wrapper: a session with its task, a tool whose calls become
    episodes (one cached, one failing), a prompt block, then compress and close."""
    runs: list[str] = []
    with Memory(address, tenant=tenant, agent="planner") as memory:
        memory.add("The user is allergic to peanuts.", tags=["health"])
        session = memory.start_session("Plan dinner for Friday")

        @session.tool(cache_ttl_s=600)
        def find_restaurants(city: str, cuisine: str = "any") -> list[str]:
            runs.append(city)
            if city == "Atlantis":
                raise LookupError("no such city")
            return [f"{cuisine} place in {city}"]

        assert find_restaurants("Lisbon", cuisine="thai") == ["thai place in Lisbon"]
        assert find_restaurants("Lisbon", "thai") == ["thai place in Lisbon"]  # from the cache
        with pytest.raises(LookupError):
            find_restaurants("Atlantis")
        session.remember("Booked Thai Garden for Friday at 8pm, peanut-free menu.")
        session.remember("Friday's guest is the user's sister Ana.")
        context = session.context("what should dinner avoid?")
        closed = session.compress_and_close()
        assert closed is not None and closed.session_id == session.id
        return context, runs


async def test_the_agent_wrapper_records_caches_retrieves_and_closes(
    service: Running, channel: object
) -> None:
    tenant = f"aw-{uuid.uuid4().hex[:8]}"
    context, runs = await asyncio.to_thread(_agent_loop, service.address, tenant)
    assert runs == ["Lisbon", "Atlantis"]  # the second Lisbon call came from the cache
    assert context.startswith("Relevant memories:\n- [")
    assert "allergic to peanuts" in context.split("Recent conversation:")[0]
    assert context.endswith("Recent conversation:\nuser: Plan dinner for Friday")
    raw = new_client(channel, tenant)  # type: ignore[arg-type]
    listed = await raw.episodes.ListEpisodes(
        episode_service_pb2.ListEpisodesRequest(page_size=10), metadata=raw.md
    )
    calls = [e for e in listed.episodes if e.name == "find_restaurants"]
    outcomes = [episode_pb2.EpisodeOutcome.Name(e.outcome) for e in calls]
    assert outcomes == ["EPISODE_OUTCOME_SUCCESS"] * 2 + ["EPISODE_OUTCOME_FAILURE"]
    first, cached, failed = (json_format.MessageToDict(e.payload) for e in calls)
    assert first["arguments"] == {"city": "Lisbon", "cuisine": "thai"}
    assert first["result"] == ["thai place in Lisbon"] and "cached" not in first
    assert cached["cached"] is True and failed["error"].startswith("LookupError")
    assert all(e.latency.ToNanoseconds() >= 0 and e.session_id for e in calls)
    closing = listed.episodes[-1]
    assert (closing.name, closing.type) == ("session_closed", episode_pb2.EPISODE_TYPE_CHECKPOINT)


async def test_the_async_agent_wrapper_survives_memory_being_unreachable(
    service: Running, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncMemory(service.address, tenant=f"aw-{uuid.uuid4().hex[:8]}") as memory:
        session = await memory.start_session()

        @session.tool()
        async def add(a: int, b: int) -> int:
            return a + b

        assert await add(2, 3) == 5
        with pytest.raises(TypeError):
            session.tool()(lambda: 1)  # a sync function needs the sync Session
        assert await session.context() == ""  # no query, no messages
        assert await session.compress_and_close() is None  # it stored nothing
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    async with AsyncMemory(nowhere, timeout_s=5) as unreachable:
        session = unreachable.session("s")

        @session.tool(cache_ttl_s=60)
        async def multiply(a: int, b: int) -> int:
            return a * b

        assert await multiply(4, 5) == 20  # the tool answers; memory's part is skipped
    warned = [r.getMessage() for r in caplog.records if r.name == "aether_memory_client"]
    assert any("episode not recorded for multiply: StatusCode.UNAVAILABLE" in w for w in warned)
    assert any("tool cache not read" in w for w in warned), warned
