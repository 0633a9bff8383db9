"""Bad input gets a clear status naming the field, and never changes what is stored."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
from aether.memory.v1 import episode_service_pb2, memory_pb2, memory_service_pb2
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_memory.app import Running
from aether_memory.domain.paging import MAX_OFFSET, PageTokens
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.keys import PAGE_TOKEN_SECRET_KEY
from aether_memory.transport.convert import MAX_STRUCT_DEPTH, dict_to_struct
from aether_memory.transport.paging import page_fingerprint

from .conftest import Client, failure
from .test_memory_service import count, search, store


async def expect(
    call: object, code: grpc.StatusCode, reason: str, fields: list[str] | None = None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    f = failure(info.value)
    assert (f.code, f.reason) == (code, reason), f
    if fields is not None:
        assert f.fields == fields


def store_request(**fields: object) -> memory_service_pb2.StoreMemoryRequest:
    memory = memory_pb2.Memory(agent_id="agent-1", content="valid content")
    for name, value in fields.items():
        if name in ("tags", "embedding", "related_ids"):
            getattr(memory, name).extend(value)  # type: ignore[call-overload]
        else:
            setattr(memory, name, value)
    return memory_service_pb2.StoreMemoryRequest(memory=memory)


@pytest.mark.parametrize(
    ("fields", "code", "reason", "violations"),
    [
        ({"content": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["memory.content"]),
        (
            {"content": " \n\t "},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ["memory.content"],
        ),
        ({"agent_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["memory.agent_id"]),
        ({"tier": 99}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["memory.tier"]),
        ({"type": 42}, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ["memory.type"]),
        (
            {"importance": 1.5},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ["memory.importance"],
        ),
        (
            {"tags": ["ok", "bad\x01tag"]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ["memory.tags[1]"],
        ),
        (
            {"embedding": [0.1] * 383},
            grpc.StatusCode.INVALID_ARGUMENT,
            "EMBEDDING_DIMENSION_MISMATCH",
            ["memory.embedding"],
        ),
        ({"content": "x" * 40_000}, grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE", []),
    ],
)
async def test_bad_store_request_is_rejected_and_nothing_is_stored(
    client: Client,
    fields: dict[str, object],
    code: grpc.StatusCode,
    reason: str,
    violations: list[str],
) -> None:
    await store(client, "an existing memory")
    await expect(
        client.memory.StoreMemory(store_request(**fields), metadata=client.md),
        code,
        reason,
        violations,
    )
    assert await count(client) == 1


async def test_a_precomputed_embedding_of_the_right_dimension_is_used(client: Client) -> None:
    vector = [0.0] * 384
    vector[7] = 1.0
    stored = (
        await client.memory.StoreMemory(store_request(embedding=vector), metadata=client.md)
    ).memory
    hits = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(
            agent_id="agent-1", query_embedding=vector, mode=memory_service_pb2.SEARCH_MODE_VECTOR
        ),
        metadata=client.md,
    )
    assert hits.results[0].memory.id == stored.id
    assert hits.results[0].breakdown.vector_similarity == pytest.approx(1.0, abs=1e-5)


async def test_batch_with_one_bad_item_stores_nothing(client: Client) -> None:
    good = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(agent_id="agent-1", content="fine")
    )
    bad = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(agent_id="agent-1", content="")
    )
    await expect(
        client.memory.BatchStoreMemories(
            memory_service_pb2.BatchStoreMemoriesRequest(requests=[good, good, bad]),
            metadata=client.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["requests[2].memory.content"],
    )
    assert await count(client) == 0


async def test_oversized_batch_is_resource_exhausted(client: Client) -> None:
    item = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(agent_id="agent-1", content="x")
    )
    await expect(
        client.memory.BatchStoreMemories(
            memory_service_pb2.BatchStoreMemoriesRequest(requests=[item] * 101), metadata=client.md
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "PAYLOAD_TOO_LARGE",
    )
    assert await count(client) == 0


async def test_unknown_id_is_not_found_with_resource_info(client: Client) -> None:
    await expect(
        client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id="01HZZZZZZZZZZZZZZZZZZZZZZZ"), metadata=client.md
        ),
        grpc.StatusCode.NOT_FOUND,
        "MEMORY_NOT_FOUND",
    )


@pytest.mark.parametrize("token", ["garbage", "AAAA", "x" * 80, "!!!"])
async def test_malformed_page_token_is_invalid_argument(client: Client, token: str) -> None:
    await expect(
        client.memory.ListMemories(
            memory_service_pb2.ListMemoriesRequest(agent_id="agent-1", page_token=token),
            metadata=client.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    )


async def test_negative_page_size_and_unknown_filter_enum_are_named(client: Client) -> None:
    await expect(
        client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(
                agent_id="agent-1",
                query="x",
                page_size=-1,
                filter=memory_pb2.MemoryFilter(tiers=[77]),
            ),
            metadata=client.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["filter.tiers[0]", "page_size"],
    )


async def test_malformed_tenant_metadata_is_rejected(client: Client) -> None:
    await expect(
        client.memory.ListMemories(
            memory_service_pb2.ListMemoriesRequest(agent_id="agent-1"),
            metadata=(("aether-tenant", "a}b{c*"),),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["aether-tenant"],
    )


SYNTAX = [
    "@tag:{x} | -y *z*",
    '"quoted" (parens) ~tilde',
    "a|b}c{d",
    "*",
    "../../etc/passwd",
    "x:y:cp:1",
    "%00-%ff",
    "\\escaped\\",
    "@agent_id:{*}",
    "{default}",
]


@pytest.mark.parametrize("text", SYNTAX)
async def test_redisearch_syntax_is_plain_text_in_content_tags_and_ids(
    client: Client, text: str
) -> None:
    stored = await store(client, f"note {text}", agent=text, tags=[text], session_id=text)
    await store(client, "a decoy memory of another agent", agent="agent-decoy", tags=["decoy"])
    listed = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(
            agent_id=text, filter=memory_pb2.MemoryFilter(tags=[text], session_id=text)
        ),
        metadata=client.md,
    )
    assert [m.id for m in listed.memories] == [stored.id]
    found = await search(client, f"note {text}", agent=text)
    assert found == [f"note {text}"]


alphabet = st.characters(blacklist_categories=("Cs", "Cc"))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    agent=st.text(alphabet, min_size=1, max_size=40), tag=st.text(alphabet, min_size=1, max_size=40)
)
async def test_any_agent_id_and_tag_round_trip_as_exact_filters(
    client: Client, agent: str, tag: str
) -> None:
    content = f"property based memory {agent} {tag}"
    if agent != agent.strip() or tag != tag.strip():
        # RediSearch trims tag values when indexing, so these could never be found: refused.
        probe = agent if agent == agent.strip() else "probe-agent"
        before = await count(client, probe)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await store(client, content, agent=agent, tags=[tag])
        f = failure(info.value)
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(f.fields) <= {"memory.agent_id", "memory.tags[0]"} and f.fields
        assert await count(client, probe) == before
        return
    stored = await store(client, content, agent=agent, tags=[tag])
    listed = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(
            agent_id=agent, filter=memory_pb2.MemoryFilter(tags=[tag])
        ),
        metadata=client.md,
    )
    assert stored.id in [m.id for m in listed.memories]
    assert all(m.agent_id == agent and tag in m.tags for m in listed.memories)


FORGED = [(1 << 63, b""), (1 << 32, b""), (MAX_OFFSET + 1, b""), (0, b"zz"), (0, b"1-2-3")]
FORGED += [(0, b"99999999999999999999-0"), (0, "\u00e9-1".encode())]


@pytest.mark.parametrize(("offset", "position"), FORGED)
async def test_a_token_sealed_with_the_right_key_is_still_checked_for_what_it_says(
    service: Running, client: Client, offset: int, position: bytes
) -> None:
    """Were the key ever known (a configured secret leaked), a sealed token could say anything;
    what it says is checked before any of it reaches Redis."""
    secret = await service.redis.get(PAGE_TOKEN_SECRET_KEY)
    assert secret is not None and len(secret) == 64  # made for this Redis, in no source file
    tokens = PageTokens(hashlib.sha256(secret).digest())
    tenant = Tenant(client.tenant)
    await store(client, "A memory to list.")
    calls = [
        (client.memory.ListMemories, memory_service_pb2.ListMemoriesRequest(agent_id="agent-1")),
        (
            client.memory.SearchMemories,
            memory_service_pb2.SearchMemoriesRequest(agent_id="agent-1", query="memory"),
        ),
        (
            client.memory.ListCheckpoints,
            memory_service_pb2.ListCheckpointsRequest(session_id="s"),
        ),
        (client.episodes.ListEpisodes, episode_service_pb2.ListEpisodesRequest()),
    ]
    for method, request in calls:
        request.page_token = tokens.encode(
            page_fingerprint(tokens, tenant, request), offset, position
        )
        await expect(
            method(request, metadata=client.md),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
            ["page_token"],
        )


@pytest.mark.parametrize("cursor", ["99999999999999999999-0", "0-18446744073709551616", "1-x"])
async def test_a_cursor_redis_cannot_read_is_invalid_argument(client: Client, cursor: str) -> None:
    call = client.episodes.SubscribeEpisodes(
        episode_service_pb2.SubscribeEpisodesRequest(after_cursor=cursor), metadata=client.md
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    refused = failure(info.value)
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["after_cursor"])


@pytest.mark.parametrize(
    ("method", "shape"),
    [
        ("/aether.memory.v1.MemoryService/GetMemory", "unary"),
        ("/aether.memory.v1.MemoryService/StoreMemory", "unary"),
        ("/aether.memory.v1.EpisodeService/SubscribeEpisodes", "server-stream"),
        ("/aether.memory.v1.EpisodeService/RecordEpisodes", "bidi"),
    ],
)
async def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    channel: grpc.aio.Channel, client: Client, method: str, shape: str
) -> None:
    garbage = b"\xff\xff\xff"  # not a protobuf message of any type
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if shape == "unary":
            await channel.unary_unary(method)(garbage, metadata=client.md)
        elif shape == "server-stream":
            async for _ in channel.unary_stream(method)(garbage, metadata=client.md):
                pass
        else:

            async def requests() -> AsyncIterator[bytes]:
                yield garbage

            async for _ in channel.stream_stream(method)(requests(), metadata=client.md):
                pass
    refused = failure(info.value)
    assert (refused.code, refused.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])
    for internal in ("DecodeError", "Traceback", "Wire format", "Unexpected"):
        assert internal not in (info.value.details() or "")


def nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


async def test_metadata_nested_past_the_limit_is_refused_and_the_limit_reads_back(
    client: Client,
) -> None:
    deepest = nested(MAX_STRUCT_DEPTH)
    stored = await client.memory.StoreMemory(
        store_request(metadata=dict_to_struct(deepest)), metadata=client.md
    )
    found = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(agent_id="agent-1", query="valid content"),
        metadata=client.md,
    )
    assert [r.memory.id for r in found.results] == [stored.memory.id]
    assert json_format.MessageToDict(found.results[0].memory.metadata) == deepest
    for levels in (MAX_STRUCT_DEPTH + 1, 33):
        request = store_request(content=f"deeper {levels}", metadata=dict_to_struct(nested(levels)))
        await expect(
            client.memory.StoreMemory(request, metadata=client.md),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ["memory.metadata" + ".a" * MAX_STRUCT_DEPTH],
        )
    assert await count(client) == 1


async def test_an_embedding_near_the_float32_limit_is_normalized_and_zeros_are_refused(
    client: Client,
) -> None:
    huge = [0.0] * 384
    huge[3] = 3e38  # its square overflows float32
    stored = await client.memory.StoreMemory(store_request(embedding=huge), metadata=client.md)
    full = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=stored.memory.id, view=memory_pb2.MEMORY_VIEW_FULL),
        metadata=client.md,
    )
    assert full.memory.embedding[3] == pytest.approx(1.0, abs=1e-3)  # not stored as zeros
    await expect(
        client.memory.StoreMemory(
            store_request(content="zeros", embedding=[0.0] * 384), metadata=client.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ["memory.embedding"],
    )
