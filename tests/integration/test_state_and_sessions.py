"""Working memory, checkpoints, the tool-result cache, agent state, the self-model, and the
standard health and reflection services."""

from __future__ import annotations

import asyncio
import uuid
from unittest.mock import ANY

import grpc
import pytest
from aether.memory.v1 import agent_state_pb2, memory_service_pb2, working_memory_pb2
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aether_memory.app import Running
from aether_memory.domain.errors import TooLarge
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.documents import DocumentStore
from aether_memory.stores.redis.keys import keys_of
from tests.support.waiting import until

from .conftest import Client, failure
from .test_memory_service import store


def msg(role: str, content: str) -> working_memory_pb2.ContextMessage:
    return working_memory_pb2.ContextMessage(role=role, content=content)


def struct(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def append(client: Client, session: str, *contents: str) -> working_memory_pb2.Session:
    response = await client.memory.AppendWorkingMemory(
        memory_service_pb2.AppendWorkingMemoryRequest(
            session_id=session, agent_id="agent-1", messages=[msg("user", c) for c in contents]
        ),
        metadata=client.md,
    )
    return response.session


async def test_working_memory_appends_in_order_and_counts_revisions(client: Client) -> None:
    await append(client, "s1", "hello")
    session = await append(client, "s1", "how are you?", "fine")
    assert [m.content for m in session.messages] == ["hello", "how are you?", "fine"]
    assert session.revision == 2 and session.agent_id == "agent-1"
    assert session.expire_time.seconds > session.update_time.seconds
    got = await client.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="s1"), metadata=client.md
    )
    assert got.session.messages == session.messages


async def test_concurrent_appends_lose_nothing(client: Client) -> None:
    await asyncio.gather(*(append(client, "busy", f"m{i}") for i in range(20)))
    got = await client.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="busy"), metadata=client.md
    )
    assert sorted(m.content for m in got.session.messages) == sorted(f"m{i}" for i in range(20))
    assert got.session.revision == 20


async def test_put_with_a_stale_revision_fails_and_changes_nothing(client: Client) -> None:
    session = await append(client, "s2", "original")
    put = memory_service_pb2.PutWorkingMemoryRequest(
        session=working_memory_pb2.Session(
            session_id="s2", messages=[msg("user", "replaced")], state=struct(step=3)
        ),
        expected_revision=session.revision,
    )
    replaced = await client.memory.PutWorkingMemory(put, metadata=client.md)
    assert replaced.session.revision == 2 and replaced.session.state["step"] == 3
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.PutWorkingMemory(put, metadata=client.md)  # revision 1 is stale now
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REVISION_MISMATCH")
    got = await client.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="s2"), metadata=client.md
    )
    assert [m.content for m in got.session.messages] == ["replaced"] and got.session.revision == 2


async def test_unknown_session_is_not_found(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.GetWorkingMemory(
            memory_service_pb2.GetWorkingMemoryRequest(session_id="never"), metadata=client.md
        )
    assert failure(info.value).reason == "SESSION_NOT_FOUND"


async def test_checkpoints_are_numbered_listed_and_restored(client: Client) -> None:
    await append(client, "s3", "step one")
    first = await client.memory.CreateCheckpoint(
        memory_service_pb2.CreateCheckpointRequest(session_id="s3", label="after one"),
        metadata=client.md,
    )
    await append(client, "s3", "step two")
    second = await client.memory.CreateCheckpoint(
        memory_service_pb2.CreateCheckpointRequest(session_id="s3"), metadata=client.md
    )
    await append(client, "s3", "a bad step")
    assert (first.checkpoint.number, second.checkpoint.number) == (1, 2)
    listed = await client.memory.ListCheckpoints(
        memory_service_pb2.ListCheckpointsRequest(session_id="s3"), metadata=client.md
    )
    assert [(c.number, c.label) for c in listed.checkpoints] == [(2, ""), (1, "after one")]
    restored = await client.memory.RestoreCheckpoint(
        memory_service_pb2.RestoreCheckpointRequest(session_id="s3", number=1), metadata=client.md
    )
    assert [m.content for m in restored.session.messages] == ["step one"]
    assert restored.session.revision == 4  # a restore is a new write, never a step back
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.RestoreCheckpoint(
            memory_service_pb2.RestoreCheckpointRequest(session_id="s3", number=9),
            metadata=client.md,
        )
    assert failure(info.value).reason == "CHECKPOINT_NOT_FOUND"


async def test_restore_while_appends_continue_is_atomic(client: Client) -> None:
    await append(client, "s4", "base")
    await client.memory.CreateCheckpoint(
        memory_service_pb2.CreateCheckpointRequest(session_id="s4"), metadata=client.md
    )
    results = await asyncio.gather(
        *(append(client, "s4", f"w{i}") for i in range(10)),
        client.memory.RestoreCheckpoint(
            memory_service_pb2.RestoreCheckpointRequest(session_id="s4", number=1),
            metadata=client.md,
        ),
    )
    restored = results[-1].session
    # The restored window is the snapshot exactly, never a mix of snapshot and concurrent writes.
    assert [m.content for m in restored.messages] == ["base"]
    got = await client.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="s4"), metadata=client.md
    )
    assert got.session.messages[0].content == "base"
    assert got.session.revision == 12


async def test_tool_cache_hits_regardless_of_argument_order_and_expires(client: Client) -> None:
    args_a = struct(city="Lisbon", units="metric")
    args_b = struct_pb2.Struct()
    args_b.update({"units": "metric", "city": "Lisbon"})
    miss = await client.memory.GetToolResult(
        memory_service_pb2.GetToolResultRequest(tool_name="weather", arguments=args_a),
        metadata=client.md,
    )
    assert not miss.hit
    await client.memory.PutToolResult(
        memory_service_pb2.PutToolResultRequest(
            tool_result=agent_state_pb2.ToolResult(
                tool_name="weather", arguments=args_a, result=struct(temp=21)
            ),
            ttl=duration_pb2.Duration(seconds=1),
        ),
        metadata=client.md,
    )
    hit = await client.memory.GetToolResult(
        memory_service_pb2.GetToolResultRequest(tool_name="weather", arguments=args_b),
        metadata=client.md,
    )
    assert hit.hit and hit.tool_result.result["temp"] == 21
    other_tool = await client.memory.GetToolResult(
        memory_service_pb2.GetToolResultRequest(tool_name="forecast", arguments=args_a),
        metadata=client.md,
    )
    assert not other_tool.hit

    async def expired() -> bool:
        found = await client.memory.GetToolResult(
            memory_service_pb2.GetToolResultRequest(tool_name="weather", arguments=args_a),
            metadata=client.md,
        )
        return not found.hit

    await until(expired, "the tool result put with a 1 s TTL expired")


async def test_agent_state_updates_named_keys_only(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.GetAgentState(
            memory_service_pb2.GetAgentStateRequest(agent_id="a"), metadata=client.md
        )
    assert failure(info.value).reason == "AGENT_STATE_NOT_FOUND"
    await client.memory.UpdateAgentState(
        memory_service_pb2.UpdateAgentStateRequest(
            agent_state=agent_state_pb2.AgentState(
                agent_id="a", state=struct(goal="ship", mood="calm")
            )
        ),
        metadata=client.md,
    )
    updated = await client.memory.UpdateAgentState(
        memory_service_pb2.UpdateAgentStateRequest(
            agent_state=agent_state_pb2.AgentState(
                agent_id="a", state=struct(goal="rest", mood="ignored")
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state.goal"]),
        ),
        metadata=client.md,
    )
    assert dict(updated.agent_state.state) == {"goal": "rest", "mood": "calm"}
    assert updated.agent_state.revision == 2


async def test_describe_self_reports_memories_counts_state_and_outcomes(client: Client) -> None:
    from aether.memory.v1 import episode_pb2, episode_service_pb2

    await store(client, "I speak Portuguese and English", agent="me")
    await store(client, "I prefer tea over coffee", agent="me", type=2)
    await client.memory.UpdateAgentState(
        memory_service_pb2.UpdateAgentStateRequest(
            agent_state=agent_state_pb2.AgentState(agent_id="me", state=struct(task="translate"))
        ),
        metadata=client.md,
    )
    for i, outcome in enumerate([1, 1, 2]):
        await client.episodes.RecordEpisode(
            episode_service_pb2.RecordEpisodeRequest(
                episode=episode_pb2.Episode(
                    event_id=f"e{i}",
                    agent_id="me",
                    type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                    outcome=outcome,
                    latency=duration_pb2.Duration(nanos=(i + 1) * 100_000_000),
                )
            ),
            metadata=client.md,
        )
    response = await client.memory.DescribeSelf(
        memory_service_pb2.DescribeSelfRequest(agent_id="me", topic="which languages do I know?"),
        metadata=client.md,
    )
    assert response.memories[0].memory.content == "I speak Portuguese and English"
    counts = {(c.tier, c.type): c.count for c in response.memory_counts}
    assert sum(counts.values()) == 2 and len(counts) == 2
    assert response.agent_state.state["task"] == "translate"
    stats = response.episode_stats
    assert (stats.total, stats.succeeded, stats.failed) == (3, 2, 1)
    assert stats.mean_latency.ToMilliseconds() == 200


async def test_health_reports_serving_for_each_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "aether.memory.v1.MemoryService", "aether.memory.v1.EpisodeService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_both_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in responses:
        names |= {s.name for s in response.list_services_response.service}
    assert {"aether.memory.v1.MemoryService", "aether.memory.v1.EpisodeService"} <= names


async def test_times_read_back_equal_the_times_a_write_returned(client: Client) -> None:
    # RedisJSON once printed ~1 float in 8 with a digit fewer; 30 writes would expose that.
    for i in range(30):
        written = await append(client, "clock", f"tick {i}")
        read = await client.memory.GetWorkingMemory(
            memory_service_pb2.GetWorkingMemoryRequest(session_id="clock"), metadata=client.md
        )
        assert read.session.messages == written.messages
        assert read.session.update_time == written.update_time


async def test_an_append_no_response_could_carry_is_refused_and_the_session_still_reads(
    client: Client,
) -> None:
    chunk = ["x" * 30_000] * 100  # 3 MB: fits one response
    first = await append(client, "big", *chunk)
    assert first.revision == 1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await append(client, "big", *chunk)  # 6 MB in all: no response could carry it
    refused = failure(info.value)
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "PAYLOAD_TOO_LARGE",
    )
    got = await client.memory.GetWorkingMemory(
        memory_service_pb2.GetWorkingMemoryRequest(session_id="big"), metadata=client.md
    )
    assert got.session.revision == 1 and len(got.session.messages) == 100  # nothing was saved


async def test_the_append_script_trims_counts_sets_the_agent_and_refuses_whole(
    service: Running,
) -> None:
    """The session append script against real Redis, with small limits."""
    docs = DocumentStore(
        service.redis,
        working_ttl_s=60,
        checkpoint_ttl_s=60,
        max_messages=3,
        max_checkpoints=3,
        max_session_bytes=1500,
    )
    tenant = Tenant(f"t-{uuid.uuid4().hex[:10]}")
    keys = keys_of(tenant)
    first = await docs.append_session(tenant, "s", "", [{"role": "user", "content": "m0"}])
    assert (first["revision"], first["agent_id"], len(first["messages"])) == (1, "", 1)
    said = [{"role": "user", "content": f"m{i}", "metadata": {"i": i}} for i in range(1, 5)]
    trimmed = await docs.append_session(tenant, "s", "planner", said)
    assert [m["content"] for m in trimmed["messages"]] == ["m2", "m3", "m4"]  # the newest 3
    assert (trimmed["revision"], trimmed["agent_id"]) == (2, "planner")  # set once it had none
    again = await docs.append_session(
        tenant, "s", "someone-else", [{"role": "a", "content": "é 🙂"}]
    )
    assert again["agent_id"] == "planner" and again["messages"][-1]["content"] == "é 🙂"
    assert 55 <= await service.redis.ttl(keys.session("s")) <= 60
    with pytest.raises(TooLarge):
        await docs.append_session(tenant, "s", "", [{"role": "user", "content": "x" * 2000}])
    assert await docs.get_session(tenant, "s") == {**again, "expire_time": ANY}  # unchanged
    with pytest.raises(TooLarge):
        await docs.append_session(tenant, "new", "", [{"role": "user", "content": "x" * 2000}])
    assert not await service.redis.exists(keys.session("new"))  # not even created
