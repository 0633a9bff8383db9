"""MemoryService end to end: long-term memories through generated stubs over a real channel."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
import redis.exceptions
from aether.memory.v1 import memory_pb2, memory_service_pb2
from google.protobuf import field_mask_pb2

from aether_memory.app import Running
from aether_memory.domain.tenant import Tenant
from aether_memory.service.access import AccessRecorder
from aether_memory.stores.redis.embedded import HASH_LISTPACK_VALUE
from aether_memory.stores.redis.keys import TenantKeys, keys_of
from aether_memory.stores.redis.memory_store import RedisMemoryStore

from .conftest import Client, failure, new_client

FACTS = [
    "I love hiking in the Alps with my dog Rex every summer.",
    "My sister Ana works as a nurse in Lisbon.",
    "I am allergic to peanuts and shellfish.",
    "My favourite programming language is Rust because of its type system.",
    "We adopted a grey cat called Mochi in March.",
]


async def store(
    client: Client, content: str, agent: str = "agent-1", **fields: object
) -> memory_pb2.Memory:
    response = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id=agent, content=content, **fields)  # type: ignore[arg-type]
        ),
        metadata=client.md,
    )
    return response.memory


async def search(client: Client, query: str, agent: str = "agent-1", **fields: object) -> list[str]:
    response = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(agent_id=agent, query=query, **fields),  # type: ignore[arg-type]
        metadata=client.md,
    )
    return [r.memory.content for r in response.results]


async def count(client: Client, agent: str = "agent-1") -> int:
    response = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(agent_id=agent, page_size=1000), metadata=client.md
    )
    return len(response.memories)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what outdoor activities do I enjoy?", FACTS[0]),
        ("which foods must I avoid?", FACTS[2]),
        ("where does my sibling live and work?", FACTS[1]),
        ("pets at home", FACTS[4]),
    ],
)
async def test_search_ranks_the_relevant_memory_first(
    client: Client, query: str, expected: str
) -> None:
    for fact in FACTS:
        await store(client, fact)
    results = await search(client, query, page_size=3)
    assert results[0] == expected


async def test_search_scores_are_similarities_with_a_breakdown(client: Client) -> None:
    for fact in FACTS:
        await store(client, fact)
    response = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(agent_id="agent-1", query="hiking with my dog"),
        metadata=client.md,
    )
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    top = response.results[0].breakdown
    assert 0.3 < top.vector_similarity <= 1.0 and top.keyword_score > 0
    assert all(-1.0 <= r.breakdown.vector_similarity <= 1.0 for r in response.results)


async def test_vector_and_keyword_modes_each_work_alone(client: Client) -> None:
    for fact in FACTS:
        await store(client, fact)
    vector = await search(client, "feline companion", mode=memory_service_pb2.SEARCH_MODE_VECTOR)
    assert vector[0] == FACTS[4]
    keyword = await search(client, "Lisbon", mode=memory_service_pb2.SEARCH_MODE_KEYWORD)
    assert keyword == [FACTS[1]]


async def test_a_lone_underscore_in_a_query_is_not_query_syntax(client: Client) -> None:
    # "_" alone is a RediSearch syntax error as a term (the fuzz test found it via DescribeSelf).
    await store(client, FACTS[1])
    keyword = memory_service_pb2.SEARCH_MODE_KEYWORD
    assert await search(client, "_ Lisbon _", mode=keyword) == [FACTS[1]]
    assert await search(client, "_", mode=keyword) == []
    assert await search(client, "_") == [FACTS[1]]  # the vector half still answers
    described = await client.memory.DescribeSelf(
        memory_service_pb2.DescribeSelfRequest(agent_id="agent-1", topic="_"), metadata=client.md
    )
    assert [m.memory.content for m in described.memories] == [FACTS[1]]


async def test_get_returns_the_memory_and_counts_the_access(client: Client) -> None:
    stored = await store(client, FACTS[0], tags=["hobby"], importance=0.9)
    assert (
        stored.tier == memory_pb2.MEMORY_TIER_LONG_TERM
        and stored.type == memory_pb2.MEMORY_TYPE_FACT
    )
    first = (
        await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.id), metadata=client.md
        )
    ).memory
    second = (
        await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.id, view=memory_pb2.MEMORY_VIEW_FULL),
            metadata=client.md,
        )
    ).memory
    assert (
        first.content == FACTS[0]
        and list(first.tags) == ["hobby"]
        and first.importance == pytest.approx(0.9)
    )
    assert (first.access_count, second.access_count) == (1, 2)
    assert not first.embedding and len(second.embedding) == 384


async def test_identical_content_is_deduplicated_after_normalization(client: Client) -> None:
    first = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="a", content="Ana lives in Lisbon")
        ),
        metadata=client.md,
    )
    second = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="a", content="  ana LIVES in\nlisbon ")
        ),
        metadata=client.md,
    )
    other_agent = await store(client, "Ana lives in Lisbon", agent="b")
    assert not first.deduplicated and second.deduplicated
    assert second.memory.id == first.memory.id and other_agent.id != first.memory.id
    assert await count(client, "a") == 1


async def test_concurrent_stores_of_the_same_content_keep_one_memory(client: Client) -> None:
    responses = await asyncio.gather(
        *(
            client.memory.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="a", content="same fact")
                ),
                metadata=client.md,
            )
            for _ in range(12)
        )
    )
    assert len({r.memory.id for r in responses}) == 1
    assert sum(not r.deduplicated for r in responses) == 1
    assert await count(client, "a") == 1


async def put_keyed(
    client: Client, key: str, content: str, agent: str = "a", **fields: object
) -> memory_service_pb2.StoreMemoryResponse:
    return await client.memory.StoreMemory(  # type: ignore[no-any-return]
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id=agent, key=key, content=content, **fields)  # type: ignore[arg-type]
        ),
        metadata=client.md,
    )


async def get_keyed(client: Client, key: str, agent: str = "a") -> memory_pb2.Memory:
    response = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(agent_id=agent, key=key), metadata=client.md
    )
    return response.memory


async def test_a_key_names_one_memory_that_a_second_store_replaces_in_place(
    client: Client,
) -> None:
    first = await put_keyed(client, "profile/diet", "Ana is vegetarian.", tags=["diet"])
    twin = await put_keyed(client, "profile/diet-copy", "Ana is vegetarian.")
    plain = await store(client, "Ana is vegetarian.", agent="a")
    assert not first.replaced and not first.deduplicated and first.memory.key == "profile/diet"
    # Keyed memories are not deduplicated by content: three memories hold the same text.
    assert len({first.memory.id, twin.memory.id, plain.id}) == 3

    second = await put_keyed(client, "profile/diet", "Ana eats fish again.", importance=0.9)
    assert second.replaced and not second.deduplicated
    assert second.memory.id == first.memory.id
    assert second.memory.create_time == first.memory.create_time
    assert second.memory.update_time.ToNanoseconds() > first.memory.update_time.ToNanoseconds()
    # Every updatable field comes from the request: the tags it no longer carries are gone.
    assert (second.memory.content, list(second.memory.tags)) == ("Ana eats fish again.", [])
    assert second.memory.importance == pytest.approx(0.9)

    got = await get_keyed(client, "profile/diet")
    assert (got.id, got.content, got.key) == (
        first.memory.id,
        "Ana eats fish again.",
        "profile/diet",
    )
    # The index holds the new text only: the old one is left in the two other memories.
    assert (await search(client, "eats fish", agent="a"))[:1] == ["Ana eats fish again."]
    found = await search(client, "vegetarian", agent="a", page_size=10)
    assert found.count("Ana is vegetarian.") == 2
    assert await count(client, "a") == 3
    # The key belongs to agent "a": agent "b" has no memory under it, and its own is another.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_keyed(client, "profile/diet", agent="b")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    other = await put_keyed(client, "profile/diet", "Bo is vegan.", agent="b")
    assert not other.replaced and other.memory.id != first.memory.id


async def test_a_forgotten_keyed_memory_frees_its_key(client: Client) -> None:
    first = await put_keyed(client, "k", "The build server is at 10.0.0.7.")
    await client.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="a", ids=memory_service_pb2.MemoryIds(ids=[first.memory.id])
        ),
        metadata=client.md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_keyed(client, "k")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    again = await put_keyed(client, "k", "The build server moved to 10.0.0.9.")
    assert not again.replaced and again.memory.id != first.memory.id


async def test_concurrent_first_stores_of_one_key_keep_one_memory(client: Client) -> None:
    responses = await asyncio.gather(
        *(put_keyed(client, "race", f"version {i}") for i in range(12))
    )
    assert len({r.memory.id for r in responses}) == 1
    assert sum(not r.replaced for r in responses) == 1
    assert await count(client, "a") == 1
    final = await get_keyed(client, "race")
    assert final.content in {f"version {i}" for i in range(12)}


async def test_get_by_key_refuses_an_id_beside_it_and_a_missing_agent(client: Client) -> None:
    for request, field in [
        (memory_service_pb2.GetMemoryRequest(agent_id="a", key="k", id="x"), "id"),
        (memory_service_pb2.GetMemoryRequest(key="k"), "agent_id"),
        (memory_service_pb2.GetMemoryRequest(agent_id="a", key="k" * 513), "key"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.memory.GetMemory(request, metadata=client.md)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure(caught.value).fields == [field]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put_keyed(client, "k" * 513, "too long a key")
    assert failure(caught.value).fields == ["memory.key"]
    assert await count(client, "a") == 0


async def test_list_pages_newest_first_with_tokens_bound_to_the_request(client: Client) -> None:
    for i in range(7):
        await store(client, f"memory number {i}")
    seen: list[str] = []
    token = ""
    while True:
        page = await client.memory.ListMemories(
            memory_service_pb2.ListMemoriesRequest(
                agent_id="agent-1", page_size=3, page_token=token
            ),
            metadata=client.md,
        )
        seen += [m.content for m in page.memories]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"memory number {i}" for i in reversed(range(7))]
    first = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(agent_id="agent-1", page_size=3), metadata=client.md
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.ListMemories(
            memory_service_pb2.ListMemoriesRequest(
                agent_id="agent-2", page_size=3, page_token=first.next_page_token
            ),
            metadata=client.md,
        )
    f = failure(info.value)
    assert (f.code, f.reason, f.fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
        ["page_token"],
    )


async def test_search_pages_do_not_overlap(client: Client) -> None:
    for i in range(9):
        await store(client, f"note {i} about gardening and tomatoes")
    first = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(
            agent_id="agent-1", query="gardening", page_size=4
        ),
        metadata=client.md,
    )
    second = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(
            agent_id="agent-1", query="gardening", page_size=4, page_token=first.next_page_token
        ),
        metadata=client.md,
    )
    ids = [r.memory.id for r in first.results] + [r.memory.id for r in second.results]
    assert len(ids) == len(set(ids)) == 8 and second.next_page_token


async def test_update_with_a_mask_changes_only_named_fields_and_reembeds(client: Client) -> None:
    stored = await store(client, "The meeting is on Monday", tags=["work"])
    updated = await client.memory.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(
                id=stored.id, content="Quarterly budget review with finance", tags=["ignored"]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        ),
        metadata=client.md,
    )
    assert updated.memory.content == "Quarterly budget review with finance"
    assert list(updated.memory.tags) == ["work"]
    vector_hits = await search(client, "money planning", mode=memory_service_pb2.SEARCH_MODE_VECTOR)
    assert vector_hits[0] == "Quarterly budget review with finance"
    assert await search(client, "Monday", mode=memory_service_pb2.SEARCH_MODE_KEYWORD) == []


async def test_update_rejects_immutable_paths(client: Client) -> None:
    stored = await store(client, "fact")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.UpdateMemory(
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=stored.id, agent_id="thief"),
                update_mask=field_mask_pb2.FieldMask(paths=["agent_id"]),
            ),
            metadata=client.md,
        )
    assert failure(info.value).fields == ["update_mask"]


async def test_forget_removes_from_get_search_and_links(client: Client) -> None:
    base = await store(client, "Rex is a golden retriever")
    linked = await store(client, "Rex loves chasing tennis balls", related_ids=[base.id])
    got = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=base.id), metadata=client.md
    )
    assert list(got.memory.related_ids) == [linked.id]  # links are kept both ways
    forgotten = await client.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[base.id])
        ),
        metadata=client.md,
    )
    assert list(forgotten.forgotten_ids) == [base.id]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=base.id), metadata=client.md
        )
    assert (failure(info.value).code, failure(info.value).reason) == (
        grpc.StatusCode.NOT_FOUND,
        "MEMORY_NOT_FOUND",
    )
    assert "Rex is a golden retriever" not in await search(client, "golden retriever")
    remaining = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=linked.id), metadata=client.md
    )
    assert list(remaining.memory.related_ids) == []


async def test_forget_with_cascade_and_by_filter(client: Client) -> None:
    base = await store(client, "Project Apollo kickoff", tags=["apollo"])
    child = await store(client, "Apollo budget approved", related_ids=[base.id])
    keep = await store(client, "Unrelated note")
    cascade = await client.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[base.id]), cascade=True
        ),
        metadata=client.md,
    )
    assert sorted(cascade.forgotten_ids) == sorted([base.id, child.id])
    await store(client, "tagged one", tags=["temp"])
    await store(client, "tagged two", tags=["temp"])
    by_filter = await client.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="agent-1", filter=memory_pb2.MemoryFilter(tags=["temp"])
        ),
        metadata=client.md,
    )
    assert len(by_filter.forgotten_ids) == 2
    remaining = await client.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(agent_id="agent-1"), metadata=client.md
    )
    assert [m.id for m in remaining.memories] == [keep.id]


async def test_summarize_links_an_extractive_summary_to_its_sources(client: Client) -> None:
    sentences = [
        "The user is planning a trip to Japan in April.",
        "They want to see the cherry blossoms in Kyoto.",
        "Their budget for the trip is about three thousand dollars.",
        "They asked about the weather in Tokyo during spring.",
    ]
    for s in sentences:
        await store(client, s, session_id="s-1")
    await store(client, "Different session entirely", session_id="s-2")
    response = await client.memory.SummarizeMemories(
        memory_service_pb2.SummarizeMemoriesRequest(
            agent_id="agent-1", session_id="s-1", max_sentences=2
        ),
        metadata=client.md,
    )
    summary = response.summary
    assert (
        summary.type == memory_pb2.MEMORY_TYPE_SUMMARY
        and summary.tier == memory_pb2.MEMORY_TIER_LONG_TERM
    )
    assert len(response.source_ids) == 4 and sorted(summary.related_ids) == sorted(
        response.source_ids
    )
    chosen = [s for s in sentences if s in summary.content]
    assert len(chosen) == 2 and summary.content == " ".join(chosen)


async def test_request_id_replays_the_first_response_and_rejects_a_different_body(
    client: Client,
) -> None:
    request_id = str(uuid.uuid4())
    request = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(agent_id="a", content="idempotent fact"), request_id=request_id
    )
    first = await client.memory.StoreMemory(request, metadata=client.md)
    again = await client.memory.StoreMemory(request, metadata=client.md)
    assert again == first and not again.deduplicated
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content="another fact"),
                request_id=request_id,
            ),
            metadata=client.md,
        )
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert await count(client, "a") == 1


async def test_batch_store_returns_one_response_per_request(client: Client) -> None:
    response = await client.memory.BatchStoreMemories(
        memory_service_pb2.BatchStoreMemoriesRequest(
            requests=[
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="agent-1", content=f)
                )
                for f in FACTS
            ]
        ),
        metadata=client.md,
    )
    assert [r.memory.content for r in response.responses] == FACTS
    assert await count(client) == len(FACTS)


async def test_tenants_never_see_each_others_memories(channel: grpc.aio.Channel) -> None:
    alice, bob = new_client(channel), new_client(channel)
    secret = await store(alice, "The vault code is 4711")
    await store(bob, "Bob's harmless note")
    assert await search(bob, "vault code") == ["Bob's harmless note"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bob.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=secret.id), metadata=bob.md
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    forgotten = await bob.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[secret.id])
        ),
        metadata=bob.md,
    )
    assert list(forgotten.forgotten_ids) == []
    assert await search(alice, "vault code") == ["The vault code is 4711"]


async def test_context_is_kept_and_searched_by_keyword_but_not_embedded(client: Client) -> None:
    reply = await store(client, "Yes, last Tuesday.", context="Did you renew your passport?")
    other = await store(client, "The passport office opens at nine.")
    assert reply.context == "Did you renew your passport?"
    keyword = await search(client, "renew", mode=memory_service_pb2.SEARCH_MODE_KEYWORD)
    assert keyword == ["Yes, last Tuesday."]  # the word is only in its context
    both = await search(client, "passport", mode=memory_service_pb2.SEARCH_MODE_KEYWORD)
    assert sorted(both) == sorted([reply.content, other.content])
    full = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=reply.id, view=memory_pb2.MEMORY_VIEW_FULL),
        metadata=client.md,
    )
    bare = await store(client, "Yes, last Tuesday.", agent="agent-2")  # same text, no context
    bare_full = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=bare.id, view=memory_pb2.MEMORY_VIEW_FULL),
        metadata=client.md,
    )
    assert list(full.memory.embedding) == pytest.approx(list(bare_full.memory.embedding))
    # Dedup looks at content only: the same reply with another context is the same memory.
    again = await store(client, "Yes, last Tuesday.", context="Did you call the bank?")
    assert again.id == reply.id
    updated = await client.memory.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(id=reply.id, context="Did you visit the dentist?"),
            update_mask=field_mask_pb2.FieldMask(paths=["context"]),
        ),
        metadata=client.md,
    )
    assert updated.memory.context == "Did you visit the dentist?"
    assert await search(client, "renew", mode=memory_service_pb2.SEARCH_MODE_KEYWORD) == []
    assert await search(client, "dentist", mode=memory_service_pb2.SEARCH_MODE_KEYWORD) == [
        reply.content
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await store(client, "Another reply.", context="x" * 8193)
    refused = failure(info.value)
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "PAYLOAD_TOO_LARGE" and "memory.context" in info.value.details()


async def test_an_index_made_before_context_existed_gains_the_fields(
    service: Running,
) -> None:
    name = f"old-index-{uuid.uuid4().hex[:6]}"
    await service.redis.execute_command(
        "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", f"old:{name}:",
        "SCHEMA", "tenant", "TAG", "content", "TEXT",
        "embedding", "VECTOR", "HNSW", "6", "TYPE", "FLOAT32", "DIM", "384",
        "DISTANCE_METRIC", "COSINE",
    )  # fmt: skip
    store_ = RedisMemoryStore(service.redis, index_name=name, dimension=384)
    await store_.ensure_index()
    info = await store_.index.info()
    names = {dict(zip(a[::2], a[1::2], strict=False)).get("identifier") for a in info["attributes"]}
    assert {"context", "lead", "seq"} <= names
    await store_.ensure_index()  # already there: nothing to add, no error
    await service.redis.execute_command("FT.DROPINDEX", name)


async def test_vectors_are_held_as_float16_and_an_older_index_keeps_its_type(
    service: Running, client: Client
) -> None:
    stored = await store(client, "Half-size vectors in the hot tier.")
    key = TenantKeys(client.tenant).memory(stored.id)
    assert await service.redis.hstrlen(key, "embedding") == 384 * 2
    full = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=stored.id, view=memory_pb2.MEMORY_VIEW_FULL),
        metadata=client.md,
    )
    vector = list(full.memory.embedding)
    assert len(vector) == 384 and sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-3)
    name = f"f32-index-{uuid.uuid4().hex[:6]}"
    older = RedisMemoryStore(service.redis, index_name=name, dimension=384, vector_type="float32")
    await older.ensure_index()
    newer = RedisMemoryStore(service.redis, index_name=name, dimension=384, vector_type="float16")
    await newer.ensure_index()
    assert newer.vector_type == "float32"  # the index's own type wins over the setting
    await service.redis.execute_command("FT.DROPINDEX", name)


async def test_memory_hashes_are_listpacks_and_a_lower_limit_is_reported(
    service: Running, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    stored = await store(client, "Compact hashes keep the vector inline.")
    key = TenantKeys(client.tenant).memory(stored.id)
    assert await service.redis.object("encoding", key) == b"listpack"
    name = f"listpack-{uuid.uuid4().hex[:6]}"
    probe = RedisMemoryStore(service.redis, index_name=name, dimension=384, vector_type="float16")
    await probe.ensure_index()
    assert "hash-max-listpack-value" not in caplog.text
    await service.redis.config_set("hash-max-listpack-value", 64)
    try:
        await probe.ensure_index()
    finally:
        await service.redis.config_set("hash-max-listpack-value", HASH_LISTPACK_VALUE)
        await service.redis.execute_command("FT.DROPINDEX", name)
    assert "hash-max-listpack-value is 64, below the 768 bytes" in caplog.text


async def test_search_counts_each_returned_memory_once_and_full_view_has_vectors(
    client: Client,
) -> None:
    for fact in FACTS:
        await store(client, fact)

    async def top(view: int) -> memory_pb2.Memory:
        response = await client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(
                agent_id="agent-1", query="my cat Mochi", page_size=1, view=view
            ),
            metadata=client.md,
        )
        return response.results[0].memory

    first = await top(memory_pb2.MEMORY_VIEW_BASIC)
    second = await top(memory_pb2.MEMORY_VIEW_FULL)
    assert first.id == second.id and first.content == FACTS[4]
    assert (first.access_count, second.access_count) == (1, 2)
    assert len(first.embedding) == 0 and len(second.embedding) == 384


async def test_reads_write_nothing_and_their_counts_are_written_after(
    service: Running, client: Client
) -> None:
    # Under appendfsync always a read that wrote would wait for an fsync: reads write nothing,
    # and their counts reach Redis later. With maxmemory exceeded Redis refuses every write (and
    # every script not flagged no-writes); reads still answer, counting this server's own reads,
    # and the counts are kept and retried until Redis takes them.
    stored = await store(client, FACTS[3])
    access_key = TenantKeys(client.tenant).access(stored.id)
    await service.redis.config_set("maxmemory", 1)
    try:
        counts = []
        for _ in range(2):
            got = await client.memory.GetMemory(
                memory_service_pb2.GetMemoryRequest(id=stored.id), metadata=client.md
            )
            counts.append(got.memory.access_count)
        found = await search(client, "favourite programming language")
        assert counts == [1, 2] and found == [FACTS[3]]
        with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
            await service.redis.set(f"probe-{uuid.uuid4().hex}", "x")
        assert await service.redis.hget(access_key, "count") is None
    finally:
        await service.redis.config_set("maxmemory", 0)
    for _ in range(100):  # the recorder retries every 0.5 s
        if await service.redis.hget(access_key, "count") == b"3":
            break
        await asyncio.sleep(0.05)
    assert await service.redis.hget(access_key, "count") == b"3"
    again = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=stored.id), metadata=client.md
    )
    assert again.memory.access_count == 4


async def test_stopping_the_access_recorder_writes_what_it_holds(
    service: Running, client: Client
) -> None:
    stored = await store(client, FACTS[4])
    tenant = Tenant(client.tenant)
    keys = keys_of(tenant)
    memories = RedisMemoryStore(service.redis, index_name="aether-memories", dimension=384)
    recorder = AccessRecorder(memories, interval_s=60)  # only stopping writes within the test
    recorder.record(tenant, [stored.id, "no-such-memory"], 1.0e9 + 5)
    recorder.record(tenant, [stored.id], 1.0e9)
    stop = asyncio.Event()
    running = asyncio.create_task(recorder.run(stop))
    await asyncio.sleep(0.1)
    assert await service.redis.exists(keys.access(stored.id)) == 0
    stop.set()
    await asyncio.wait_for(running, 5)
    assert await service.redis.hgetall(keys.access(stored.id)) == {
        b"count": b"2",
        b"last": repr(1.0e9 + 5).encode(),  # the latest read, whatever order they came in
    }
    assert await service.redis.exists(keys.access("no-such-memory")) == 0


async def test_frequency_weight_lifts_an_often_read_memory(client: Client) -> None:
    often = await store(client, "The team meets on Mondays at ten.")
    rare = await store(client, "The team meets on Mondays at ten in room four.")
    for _ in range(20):
        await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=often.id), metadata=client.md
        )

    async def ranked(frequency: float) -> list[str]:
        response = await client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(
                agent_id="agent-1",
                query="team meeting in room four",
                weights=memory_service_pb2.SearchWeights(relevance=0.1, frequency=frequency),
            ),
            metadata=client.md,
        )
        return [r.memory.id for r in response.results]

    assert (await ranked(0.0))[0] == rare.id
    assert (await ranked(1.0))[0] == often.id


async def test_an_update_racing_a_forget_never_brings_the_memory_back(client: Client) -> None:
    for i in range(30):
        memory = await store(client, f"Race {i}: the spare key is under the mat.")
        update = client.memory.UpdateMemory(
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=memory.id, content=f"Race {i}: it is in the shed."),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=client.md,
        )
        forget = client.memory.ForgetMemories(
            memory_service_pb2.ForgetMemoriesRequest(
                agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[memory.id])
            ),
            metadata=client.md,
        )
        updated, _ = await asyncio.gather(update, forget, return_exceptions=True)
        if isinstance(updated, grpc.aio.AioRpcError):
            assert updated.code() == grpc.StatusCode.NOT_FOUND  # it came after the forget
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.memory.GetMemory(
                memory_service_pb2.GetMemoryRequest(id=memory.id), metadata=client.md
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, f"round {i}: resurrected"
    assert await count(client) == 0


async def test_concurrent_updates_each_apply_to_what_they_read(client: Client) -> None:
    memory = await store(client, "Counter memory.", tags=["t0"])
    # Four updates of different fields at once: none may undo another's (lost update).
    await asyncio.gather(
        *(
            client.memory.UpdateMemory(
                memory_service_pb2.UpdateMemoryRequest(
                    memory=memory_pb2.Memory(id=memory.id, **fields),  # type: ignore[arg-type]
                    update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
                ),
                metadata=client.md,
            )
            for fields in (
                {"importance": 0.9},
                {"tags": ["t1"]},
                {"context": "Set by the third."},
                {"content": "Counter memory, renamed."},
            )
        )
    )
    got = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=memory.id), metadata=client.md
    )
    assert got.memory.importance == pytest.approx(0.9)
    assert list(got.memory.tags) == ["t1"]
    assert got.memory.context == "Set by the third."
    assert got.memory.content == "Counter memory, renamed."


async def test_concurrent_calls_with_one_request_id_store_once(client: Client) -> None:
    for round_ in range(20):
        request_id = f"race-{round_}-{uuid.uuid4().hex[:8]}"
        differing = [
            client.memory.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="a", content=f"Body {n} of {request_id}"),
                    request_id=request_id,
                ),
                metadata=client.md,
            )
            for n in range(3)
        ]
        results = await asyncio.gather(*differing, return_exceptions=True)
        stored = [r for r in results if not isinstance(r, BaseException)]
        refused = [failure(r) for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(stored) == 1 and len(refused) == 2, results
        assert all(f.reason == "REQUEST_ID_REUSED" for f in refused)
    assert await count(client, agent="a") == 20
    same = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(agent_id="a", content="Sent three times at once."),
        request_id=str(uuid.uuid4()),
    )
    twins = await asyncio.gather(
        *(client.memory.StoreMemory(same, metadata=client.md) for _ in range(3))
    )
    assert len({t.memory.id for t in twins}) == 1 and await count(client, agent="a") == 21


async def test_a_batch_with_a_reused_request_id_stores_nothing(client: Client) -> None:
    taken = str(uuid.uuid4())
    await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="a", content="The first use of the id."),
            request_id=taken,
        ),
        metadata=client.md,
    )
    fresh = str(uuid.uuid4())

    def item(content: str, request_id: str) -> memory_service_pb2.StoreMemoryRequest:
        return memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="a", content=content), request_id=request_id
        )

    batch = memory_service_pb2.BatchStoreMemoriesRequest(
        requests=[item("Item one.", fresh), item("Item two.", ""), item("Another body.", taken)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.memory.BatchStoreMemories(batch, metadata=client.md)
    assert failure(info.value).reason == "REQUEST_ID_REUSED"
    assert await count(client, agent="a") == 1  # nothing of the batch, before or after
    # Its claims were given back: the fresh id still works, for its own request.
    again = memory_service_pb2.BatchStoreMemoriesRequest(
        requests=[item("Item one.", fresh), item("Item one.", fresh), item("Item two.", "")]
    )
    stored = await client.memory.BatchStoreMemories(again, metadata=client.md)
    assert stored.responses[0].memory.id == stored.responses[1].memory.id
    assert await count(client, agent="a") == 3


async def test_a_redis_at_its_memory_limit_refuses_writes_clearly_and_still_reads(
    service: Running, client: Client
) -> None:
    kept = await store(client, "Stored before Redis filled up.")
    await service.redis.config_set("maxmemory", 1)  # every write now passes the limit
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await store(client, "Refused: no room.")
        refused = failure(info.value)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "STORAGE_FULL",
        )
        assert "OOM" not in (info.value.details() or "")  # Redis's own words stay inside
        assert await search(client, "filled up") == [kept.content]  # reads still work
    finally:
        await service.redis.config_set("maxmemory", 0)
    assert await count(client) == 1  # nothing of the refused write was stored


async def test_a_batch_cut_off_by_its_deadline_is_retried_whole_and_stores_each_once(
    client: Client,
) -> None:
    batch = memory_service_pb2.BatchStoreMemoriesRequest(
        requests=[
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content=f"Cut-off note {i} {uuid.uuid4()}"),
                request_id=str(uuid.uuid4()),
            )
            for i in range(100)
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:  # 100 stores take 0.4 s or more
        await client.memory.BatchStoreMemories(batch, metadata=client.md, timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The retry finds no claim left pending by the cut-off call (it would wait out 60 s).
    done = await client.memory.BatchStoreMemories(batch, metadata=client.md, timeout=30)
    assert len({r.memory.id for r in done.responses}) == 100
    assert await count(client, agent="a") == 100
