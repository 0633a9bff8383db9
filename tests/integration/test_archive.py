"""The MongoDB archive against a real wire-protocol server (FerretDB on SQLite): write-behind
through the outbox, an archive outage, eviction and rehydration, forget in both tiers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aether.memory.v1 import agent_state_pb2, memory_pb2, memory_service_pb2
from bson import Binary
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.app import Running, serve
from aether_memory.domain import outbox
from aether_memory.domain.errors import StartupError
from aether_memory.domain.outbox import OutboxEntry
from aether_memory.domain.tenant import Tenant
from aether_memory.service.archiving import Archiver, Archivers
from aether_memory.settings import Settings
from aether_memory.stores.mongo.archive import doc_id
from aether_memory.stores.redis.due import partition_of
from aether_memory.stores.redis.embedded import embedded_redis
from aether_memory.stores.redis.keys import (
    ARCHIVER_LEASE,
    LEGACY_OUTBOX_KEY,
    OUTBOX_DUE,
    OUTBOX_TENANTS,
    TenantKeys,
    archiver_lease,
)
from aether_memory.stores.redis.lease import Lease
from aether_memory.stores.redis.outbox import RedisOutbox
from tests.support.faults import start_redis
from tests.support.servers import FerretDB, free_port

from .conftest import Client, failure, new_client
from .test_episode_service import episode, record
from .test_state_and_sessions import append

DAY = 24 * 3600.0
YEAR = 365 * DAY


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ferret(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FerretDB]:
    server = FerretDB(tmp_path_factory.mktemp("ferretdb"))
    server.start()
    yield server
    server.remove()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def archived(
    ferret: FerretDB, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with serve(
        archived_settings(ferret, tmp_path_factory.mktemp("redis-archived"))
    ) as running:
        yield running


def archived_settings(ferret: FerretDB, data_dir: Path, **more: object) -> Settings:
    """A service with its own embedded Redis, archiving into `ferret`, no maintenance tick."""
    return Settings(
        port=0,
        data_dir=data_dir,
        redis_url=None,
        mongo_url=ferret.url,
        archive_write_concern="1",
        maintenance_interval_s=3600,
        index_episodes=False,
        grace_s=1.0,
        **more,  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture(loop_scope="session")
async def aclient(archived: Running) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(archived.address) as channel:
        yield new_client(channel)


def archiver(running: Running) -> Archivers:
    assert running.archiver is not None
    return running.archiver


async def store(client: Client, content: str, **fields: object) -> memory_pb2.Memory:
    response = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="agent-1", content=content, **fields)  # type: ignore[arg-type]
        ),
        metadata=client.md,
    )
    return response.memory


async def get(client: Client, memory_id: str) -> memory_pb2.Memory:
    response = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=memory_id, view=memory_pb2.MEMORY_VIEW_FULL),
        metadata=client.md,
    )
    return response.memory


async def search(client: Client, query: str) -> list[str]:
    response = await client.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(agent_id="agent-1", query=query),
        metadata=client.md,
    )
    return [r.memory.id for r in response.results]


async def test_every_memory_episode_checkpoint_and_state_is_archived(
    archived: Running, aclient: Client
) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"a.b": 1, "$where": "keys MongoDB would refuse"})
    stored = [
        await store(aclient, f"fact number {i} about the archive", metadata=metadata)
        for i in range(12)
    ]
    acks = await record(aclient, [episode(f"ev-{i}") for i in range(25)])
    await append(aclient, "s1", "hi")
    await aclient.memory.CreateCheckpoint(
        memory_service_pb2.CreateCheckpointRequest(session_id="s1"), metadata=aclient.md
    )
    state = struct_pb2.Struct()
    state.update({"goal": "archive everything"})
    await aclient.memory.UpdateAgentState(
        memory_service_pb2.UpdateAgentStateRequest(
            agent_state=agent_state_pb2.AgentState(agent_id="agent-1", state=state)
        ),
        metadata=aclient.md,
    )
    await archiver(archived).drain()

    archive = archiver(archived).archive
    tenant = {"tenant": aclient.tenant}
    assert await archive.memories.count_documents(tenant) == 12
    assert await archive.episodes.count_documents(tenant) == 25
    assert await archive.checkpoints.count_documents(tenant) == 1
    assert await archive.agent_states.count_documents(tenant) == 1
    cold = await archive.get_memory(aclient.tenant, stored[3].id, time.time())
    assert cold is not None and cold.content == stored[3].content
    assert cold.metadata == {"a.b": 1, "$where": "keys MongoDB would refuse"}
    assert cold.embedding is not None and cold.embedding.shape == (384,)
    archived_ids = {d["episode_id"] async for d in archive.episodes.find(tenant)}
    assert archived_ids == {a.written.episode_id for a in acks}


async def test_archive_outage_loses_nothing_and_duplicates_nothing(
    archived: Running, aclient: Client, ferret: FerretDB
) -> None:
    worker = archiver(archived)
    before = [await store(aclient, f"written before the outage {i}") for i in range(5)]
    await worker.drain()
    failures = worker.failures
    ferret.stop()
    try:
        during = [await store(aclient, f"written while the archive is down {i}") for i in range(40)]
        acks = await record(aclient, [episode(f"down-{i}") for i in range(60)])
        assert len(acks) == 60 and all(a.written.episode_id for a in acks)
        edited = await aclient.memory.UpdateMemory(
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=before[0].id, importance=0.9),
                update_mask={"paths": ["importance"]},
            ),
            metadata=aclient.md,
        )
        for _ in range(100):  # the archiver notices and backs off; the service keeps serving
            if worker.failures > failures:
                break
            await asyncio.sleep(0.1)
        assert worker.failures > failures
        assert (await worker.backlog()).entries >= 40 + 60 + 1
    finally:
        ferret.start()
    await worker.drain(timeout_s=60)

    archive = worker.archive
    tenant = {"tenant": aclient.tenant}
    ids = [d["memory_id"] async for d in archive.memories.find(tenant, {"memory_id": 1})]
    assert sorted(ids) == sorted(m.id for m in before + during)  # each exactly once
    assert await archive.episodes.count_documents(tenant) == 60
    cold = await archive.get_memory(aclient.tenant, before[0].id, time.time())
    assert cold is not None and cold.importance == edited.memory.importance == 0.9


async def test_a_decayed_memory_leaves_redis_and_get_brings_it_back(
    archived: Running, aclient: Client
) -> None:
    anchor = await store(aclient, "The user's passport number ends in 4411.", importance=0.9)
    faded = await store(
        aclient,
        "The user once mentioned liking the colour teal.",
        importance=0.1,
        tags=["colour"],
        related_ids=[anchor.id],
    )
    await archiver(archived).drain()
    report = await archived.maintenance.full_pass(now=time.time() + YEAR)
    assert report.evicted >= 1

    keys = TenantKeys(aclient.tenant)
    assert not await archived.redis.exists(keys.memory(faded.id))
    assert faded.id not in await search(aclient, "favourite colour teal")

    back = await get(aclient, faded.id)
    assert (back.content, list(back.tags), back.importance) == (
        faded.content,
        ["colour"],
        faded.importance,
    )
    assert list(back.related_ids) == [anchor.id]
    assert back.embedding == pytest.approx(list((await get(aclient, faded.id)).embedding))
    assert await archived.redis.exists(keys.memory(faded.id))
    assert faded.id in await search(aclient, "favourite colour teal")


async def test_a_memory_archived_under_another_model_is_embedded_again_when_it_returns(
    archived: Running, aclient: Client
) -> None:
    stored = await store(aclient, "The user's dentist is Dr. Okafor.", importance=0.1)
    original = np.array((await get(aclient, stored.id)).embedding, dtype=np.float32)
    await archiver(archived).drain()
    archive = archiver(archived).archive
    doc = await archive.memories.find_one({"_id": doc_id(aclient.tenant, stored.id)})
    assert doc is not None and doc["model"] == "all-minilm-l6-v2"
    # As if another encoder of the same dimension wrote it (a store re-embedded since).
    foreign = np.random.default_rng(5).standard_normal(original.shape).astype(np.float32)
    await archive.memories.update_one(
        {"_id": doc["_id"]},
        {"$set": {"model": "another-384-model", "embedding": Binary(foreign.tobytes())}},
    )
    assert (await archived.maintenance.full_pass(now=time.time() + YEAR)).evicted >= 1
    assert not await archived.redis.exists(TenantKeys(aclient.tenant).memory(stored.id))

    back = np.array((await get(aclient, stored.id)).embedding, dtype=np.float32)
    assert float(back @ original) > 0.99  # this model's vector again, not the foreign one
    assert stored.id in await search(aclient, "who is the dentist?")


async def test_an_evicted_keyed_memory_is_found_and_replaced_by_its_key(
    archived: Running, aclient: Client
) -> None:
    async def put(content: str) -> memory_service_pb2.StoreMemoryResponse:
        return await aclient.memory.StoreMemory(  # type: ignore[no-any-return]
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    agent_id="agent-1", key="settings/theme", content=content, importance=0.1
                )
            ),
            metadata=aclient.md,
        )

    first = await put("The user prefers the dark theme.")
    await archiver(archived).drain()
    assert (await archived.maintenance.full_pass(now=time.time() + YEAR)).evicted >= 1
    keys = TenantKeys(aclient.tenant)
    assert not await archived.redis.exists(keys.memory(first.memory.id))

    back = await aclient.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(agent_id="agent-1", key="settings/theme"),
        metadata=aclient.md,
    )
    assert (back.memory.id, back.memory.key) == (first.memory.id, "settings/theme")
    await archiver(archived).drain()
    assert (await archived.maintenance.full_pass(now=time.time() + YEAR)).evicted >= 1
    assert not await archived.redis.exists(keys.memory(first.memory.id))

    # Stored again while only the archive holds it: the same memory takes the new text.
    second = await put("The user prefers the light theme.")
    assert second.replaced and second.memory.id == first.memory.id
    await archiver(archived).drain()
    docs = [
        d
        async for d in archiver(archived).archive.memories.find(
            {"tenant": aclient.tenant, "key": "settings/theme"}
        )
    ]
    assert [(d["memory_id"], d["content"]) for d in docs] == [
        (first.memory.id, "The user prefers the light theme.")
    ]


async def test_a_memory_the_archive_does_not_hold_yet_is_not_evicted(
    archived: Running, aclient: Client
) -> None:
    await archiver(archived).drain()
    # Another replica holds the archiver lease and archives nothing: the outbox waits.
    await archived.redis.set(ARCHIVER_LEASE, "another-replica", px=60_000)
    await asyncio.sleep(0.7)  # lets a read already blocked in this replica's archiver end
    try:
        kept = await store(aclient, "Stored while no archiver runs, weakly held.", importance=0.0)
        await archived.maintenance.full_pass(now=time.time() + YEAR)
        keys = TenantKeys(aclient.tenant)
        assert await archived.redis.exists(keys.memory(kept.id))
    finally:
        await archived.redis.delete(ARCHIVER_LEASE)
    await archiver(archived).drain()
    await archived.maintenance.full_pass(now=time.time() + YEAR)
    assert not await archived.redis.exists(keys.memory(kept.id))
    assert (await get(aclient, kept.id)).content == kept.content


async def test_forget_reaches_the_archive_and_evicted_memories(
    archived: Running, aclient: Client
) -> None:
    hot = await store(aclient, "Hot memory that will be forgotten.", importance=0.9)
    cold = await store(aclient, "Cold memory that will be forgotten.", importance=0.0)
    await archiver(archived).drain()
    # Forty days on, importance 0.9 still holds (strength 0.18) and 0.0 does not.
    await archived.maintenance.full_pass(now=time.time() + 40 * DAY)
    keys = TenantKeys(aclient.tenant)
    assert await archived.redis.exists(keys.memory(hot.id))
    assert not await archived.redis.exists(keys.memory(cold.id))

    response = await aclient.memory.ForgetMemories(
        memory_service_pb2.ForgetMemoriesRequest(
            agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[hot.id, cold.id])
        ),
        metadata=aclient.md,
    )
    assert sorted(response.forgotten_ids) == sorted([hot.id, cold.id])
    await archiver(archived).drain()
    archive = archiver(archived).archive
    for memory in (hot, cold):
        assert await archive.memories.find_one({"_id": doc_id(aclient.tenant, memory.id)}) is None
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get(aclient, memory.id)
        assert failure(info.value).code == grpc.StatusCode.NOT_FOUND


async def test_another_tenant_cannot_rehydrate_or_forget_an_archived_memory(
    archived: Running, aclient: Client
) -> None:
    secret = await store(aclient, "Only my tenant may read this.", importance=0.0)
    await archiver(archived).drain()
    await archived.maintenance.full_pass(now=time.time() + YEAR)
    async with grpc.aio.insecure_channel(archived.address) as channel:
        other = new_client(channel, f"t-{uuid.uuid4().hex[:10]}")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await get(other, secret.id)
        assert failure(info.value).code == grpc.StatusCode.NOT_FOUND
        response = await other.memory.ForgetMemories(
            memory_service_pb2.ForgetMemoriesRequest(
                agent_id="agent-1", ids=memory_service_pb2.MemoryIds(ids=[secret.id])
            ),
            metadata=other.md,
        )
        assert list(response.forgotten_ids) == []
    assert (await get(aclient, secret.id)).content == secret.content


async def test_replaying_a_large_batch_rewrites_without_duplicates(
    archived: Running, aclient: Client
) -> None:
    """Outbox entries replayed after a crash (here 150, more than one update command of FerretDB
    can take) overwrite the same documents."""
    await archived.redis.set(ARCHIVER_LEASE, "another-replica", px=60_000)  # hold the outbox still
    await asyncio.sleep(0.7)
    try:
        stored = [await store(aclient, f"replayed memory {i}") for i in range(150)]
        raw = await archived.redis.xrange(TenantKeys(aclient.tenant).outbox(), "-", "+")
    finally:
        await archived.redis.delete(ARCHIVER_LEASE)
    mine = [e for e in (OutboxEntry.decode(i, f) for i, f in raw) if e.tenant == aclient.tenant]
    assert len(mine) == 150
    await archiver(archived).drain()
    archive = archiver(archived).archive
    await asyncio.wait_for(archive.apply(mine), 30)
    ids = [d["memory_id"] async for d in archive.memories.find({"tenant": aclient.tenant})]
    assert sorted(ids) == sorted(m.id for m in stored)


async def test_every_worker_outlives_a_redis_kill_and_the_archive_catches_up(
    ferret: FerretDB, tmp_path: Path
) -> None:
    data, port = tmp_path / "redis", free_port()
    data.mkdir()
    redis_process = await start_redis(data, port)
    settings = Settings(
        port=0,
        redis_url=f"redis://127.0.0.1:{port}/0",
        data_dir=tmp_path / "unused",
        mongo_url=ferret.url,
        archive_write_concern="1",
        maintenance_interval_s=0.2,  # maintenance ticks meet the outage too
        grace_s=1.0,
    )
    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            client = new_client(ch)
            before = await store(client, "Stored before Redis was killed.")
            redis_process.kill()
            await asyncio.to_thread(redis_process.wait)
            for _ in range(100):  # the workers meet the outage and fail
                if running.workers["archiver"].restarts:
                    break
                await asyncio.sleep(0.05)
            redis_process = await start_redis(data, port)
            after = await store_when_up(client, "Stored after Redis came back.")
            archive = archiver(running).archive
            for _ in range(200):
                found = [
                    await archive.memories.find_one({"_id": doc_id(client.tenant, m.id)})
                    for m in (before, after)
                ]
                if all(found):
                    break
                await asyncio.sleep(0.05)
            assert all(found), "the archiver stopped for good"
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(60):  # a run that lasts a second reports the worker healthy again
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service="aether.worker.archiver")
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.1)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            failed = {n: s.restarts for n, s in running.workers.items() if s.restarts}
            assert "archiver" in failed, failed  # it did fail, and came back
            assert "ConnectionError" in running.workers["archiver"].last_error
            assert all(s.running for s in running.workers.values())
    finally:
        redis_process.terminate()
        await asyncio.to_thread(redis_process.wait)


async def store_when_up(client: Client, content: str) -> memory_pb2.Memory:
    for _ in range(100):
        try:
            return await store(client, content)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
    raise AssertionError("Redis did not come back")


async def test_a_read_that_needs_the_archive_while_it_is_down_is_unavailable_and_changes_nothing(
    archived: Running, aclient: Client, ferret: FerretDB
) -> None:
    hot = await store(aclient, "Still in Redis while the archive is down.")
    await archiver(archived).drain()
    ferret.stop()
    try:
        calls = [
            aclient.memory.GetMemory(  # not in Redis: only the archive could have it
                memory_service_pb2.GetMemoryRequest(id=str(uuid.uuid4())), metadata=aclient.md
            ),
            aclient.memory.ForgetMemories(  # by filter: archived memories are forgotten too
                memory_service_pb2.ForgetMemoriesRequest(
                    agent_id="agent-1", filter=memory_pb2.MemoryFilter()
                ),
                metadata=aclient.md,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            refused = failure(info.value)
            assert (refused.code, refused.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "BACKEND_UNAVAILABLE",
            )
            assert any(d.type_url.endswith("google.rpc.RetryInfo") for d in refused.status.details)
            assert "Traceback" not in (info.value.details() or "")
        assert (await get(aclient, hot.id)).content == hot.content  # the forget did nothing
    finally:
        ferret.start()


async def test_the_episode_script_writes_the_entry_the_outbox_format_defines(
    archived: Running, aclient: Client
) -> None:
    """The append script builds an episode's outbox entry itself (its stream id exists only
    there); it must be field for field what `outbox.episode_put` says."""
    await archived.redis.set(ARCHIVER_LEASE, "another-replica", px=60_000)  # hold the outbox still
    await asyncio.sleep(0.7)
    try:
        [ack] = await record(aclient, [episode("contract-1", session_id="s1")])
        raw = await archived.redis.xrange(TenantKeys(aclient.tenant).outbox(), "-", "+")
    finally:
        await archived.redis.delete(ARCHIVER_LEASE)
    stream_id = ack.written.episode_id
    [written] = [f for i, f in raw if f[b"tenant"] == aclient.tenant.encode()]
    expected = outbox.episode_put(
        aclient.tenant,
        stream_id,
        written[b"doc"],
        "agent-1",
        "s1",
        written[b"type"].decode(),
        written[b"outcome"].decode(),
    )
    assert {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in expected.items()} == (
        written
    )
    assert written[b"id"] == stream_id.encode()


@contextlib.asynccontextmanager
async def archiver_held_still(running: Running) -> AsyncIterator[None]:
    """The service's own archiver stops (another replica holds its lease) while a test drives
    one of its own over the same outbox and archive."""
    await running.redis.set(ARCHIVER_LEASE, "another-replica", px=60_000)
    await asyncio.sleep(0.7)  # its step in flight ends
    try:
        yield
    finally:
        await running.redis.delete(ARCHIVER_LEASE)


def driven(running: Running, batch: int) -> Archiver:
    return Archiver(
        RedisOutbox(running.redis, batch=batch),
        archiver(running).archive,
        Lease(running.redis, "aether:test:archiver-lease", 10_000),
        sweep_s=3600,
    )


async def archived_ids(running: Running, tenant: str) -> set[str]:
    archive = archiver(running).archive
    return {d["memory_id"] async for d in archive.memories.find({"tenant": tenant})}


async def test_each_tenant_writes_its_own_outbox_and_a_busy_one_holds_no_one_up(
    archived: Running,
) -> None:
    redis = archived.redis
    async with (
        archiver_held_still(archived),
        grpc.aio.insecure_channel(archived.address) as channel,
    ):
        busy, quiet = new_client(channel), new_client(channel)
        stored = [await store(busy, f"busy tenant's note {i}") for i in range(5)]
        [lone] = [await store(quiet, "the quiet tenant's only note")]
        streams = [TenantKeys(c.tenant).outbox() for c in (busy, quiet)]
        # Each write's entry is in its tenant's own stream (its slot), and marked due.
        assert [await redis.xlen(s) for s in streams] == [5, 1]
        assert not await redis.exists(LEGACY_OUTBOX_KEY)
        due = {m.decode() for m in await redis.zrange(OUTBOX_DUE, 0, -1)}
        assert set(streams) <= due
        listed = {t.decode() for t in await redis.smembers(OUTBOX_TENANTS)}
        assert {busy.tenant, quiet.tenant} <= listed

        mine = driven(archived, batch=2)
        await mine.step(block_ms=0)  # one batch from every due stream
        assert await archived_ids(archived, quiet.tenant) == {lone.id}
        assert len(await archived_ids(archived, busy.tenant)) == 2
        assert await redis.xlen(streams[0]) == 3
        # The busy stream may hold more: it is back on the due set, not left for the sweep.
        assert await redis.zscore(OUTBOX_DUE, streams[0]) is not None
        while await redis.xlen(streams[0]):
            await mine.step(block_ms=0)
        assert await archived_ids(archived, busy.tenant) == {m.id for m in stored}


async def test_an_entry_whose_mark_was_lost_is_found_by_the_sweep(archived: Running) -> None:
    redis = archived.redis
    async with (
        archiver_held_still(archived),
        grpc.aio.insecure_channel(archived.address) as channel,
    ):
        mine = driven(archived, batch=50)
        await mine.step(block_ms=0)  # its first step sweeps; the next ones only follow marks
        tenant = new_client(channel)
        memory = await store(tenant, "written by a replica that died before marking it")
        stream = TenantKeys(tenant.tenant).outbox()
        assert await redis.zrem(OUTBOX_DUE, stream) == 1  # as if the mark never came
        await mine.step(block_ms=0)
        assert await redis.xlen(stream) == 1
        assert await archived_ids(archived, tenant.tenant) == set()
        await mine.step(block_ms=0, sweep=True)
        assert await redis.xlen(stream) == 0
        assert await archived_ids(archived, tenant.tenant) == {memory.id}


async def test_the_single_outbox_of_earlier_versions_is_drained(archived: Running) -> None:
    """A deployment upgraded with a backlog in `aether:outbox` (every tenant's writes in one
    stream, read by the same consumer group) gets it archived."""
    redis = archived.redis
    async with (
        archiver_held_still(archived),
        grpc.aio.insecure_channel(archived.address) as channel,
    ):
        tenant = new_client(channel)
        memory = await store(tenant, "stored by the previous version")
        stream = TenantKeys(tenant.tenant).outbox()
        [(entry_id, fields)] = await redis.xrange(stream, "-", "+")
        await redis.xgroup_create(LEGACY_OUTBOX_KEY, "archivers", id="0", mkstream=True)
        await redis.xadd(LEGACY_OUTBOX_KEY, fields)  # where the previous version wrote it
        await redis.xdel(stream, entry_id)
        try:
            assert (await driven(archived, batch=50).backlog()).entries >= 1
            await driven(archived, batch=50).drain()
            assert await redis.xlen(LEGACY_OUTBOX_KEY) == 0
            assert await archived_ids(archived, tenant.tenant) == {memory.id}
        finally:
            await redis.delete(LEGACY_OUTBOX_KEY)


async def test_many_small_tenants_share_archive_writes(archived: Running) -> None:
    """Thirty tenants with one new memory each: one step reads the thirty streams in one round
    trip and writes them to the archive in one batch, not thirty."""
    real = archiver(archived).archive
    calls: list[int] = []

    class Counted:
        async def ensure(self) -> object:
            return await real.ensure()

        async def apply(self, entries: Sequence[OutboxEntry]) -> int:
            calls.append(len(entries))
            return await real.apply(entries)

    async with (
        archiver_held_still(archived),
        grpc.aio.insecure_channel(archived.address) as channel,
    ):
        mine = Archiver(
            RedisOutbox(archived.redis, batch=50),
            Counted(),
            Lease(archived.redis, "aether:test:archiver-lease", 10_000),
            sweep_s=3600,
        )
        await mine.step(block_ms=0)  # the first step's sweep takes whatever earlier tests left
        calls.clear()
        tenants = [new_client(channel) for _ in range(30)]
        stored = [await store(t, f"the only note of tenant {n}") for n, t in enumerate(tenants)]
        assert await mine.step(block_ms=0) == 30
        assert calls == [30]
        for tenant, memory in zip(tenants, stored, strict=True):
            assert await archived_ids(archived, tenant.tenant) == {memory.id}


async def test_writes_survive_redis_forgetting_its_scripts(archived: Running) -> None:
    """Stores and episode appends send their scripts by EVALSHA in one round trip with their
    outbox marks; a Redis that lost its scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT and
    the round trip is sent again with the script loaded: nothing fails, nothing is lost."""
    async with grpc.aio.insecure_channel(archived.address) as channel:
        tenant = new_client(channel)
        await archived.redis.script_flush()
        memory = await store(tenant, "stored after the scripts were flushed")
        await archived.redis.script_flush()
        acks = await record(tenant, [episode("after-flush-1"), episode("after-flush-2")])
        assert all(a.HasField("written") for a in acks)
        await archiver(archived).drain()
        assert await archived_ids(archived, tenant.tenant) == {memory.id}
        episodes = archiver(archived).archive.episodes
        assert await episodes.count_documents({"tenant": tenant.tenant}) == 2


async def test_partitions_are_archived_each_under_its_own_lease(
    ferret: FerretDB, tmp_path: Path
) -> None:
    """AETHER_ARCHIVE_PARTITIONS=3: each tenant's outbox is listed and marked in its own
    partition, one archiver per partition drains it under that partition's lease, and a start
    with another count is refused (the tenants would be looked for in the wrong partitions)."""
    settings = archived_settings(ferret, tmp_path, archive_partitions=3)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        clients: list[Client] = []
        while {partition_of(Tenant(c.tenant), 3) for c in clients} != {0, 1, 2}:
            clients.append(new_client(channel))
        stored = {
            c.tenant: {(await store(c, f"note {n} of {c.tenant}")).id for n in range(3)}
            for c in clients
        }
        for c in clients:
            await record(c, [episode(f"{c.tenant}-e1")])

        async def everything_archived() -> bool:
            return all([await archived_ids(running, t) == ids for t, ids in stored.items()])

        deadline = time.monotonic() + 30
        while not await everything_archived():
            assert time.monotonic() < deadline, "not archived"
            await asyncio.sleep(0.1)
        redis = running.redis
        for c in clients:
            mine = partition_of(Tenant(c.tenant), 3)
            for p in range(3):
                listed = await redis.sismember(f"{OUTBOX_TENANTS}:{p}", c.tenant)
                assert bool(listed) == (p == mine), (c.tenant, p)
            assert not await redis.sismember(OUTBOX_TENANTS, c.tenant)
        for p in range(3):  # this service's archivers hold every partition's lease
            assert await redis.exists(archiver_lease(p, 3))
        assert not await redis.exists(ARCHIVER_LEASE)
        parts = archiver(running).parts
        assert len(parts) == 3 and all(part.archived > 0 for part in parts)
        assert (await archiver(running).backlog()).entries == 0

    with pytest.raises(StartupError, match="split into 3 partitions"):
        async with serve(settings.model_copy(update={"archive_partitions": 2})):
            pass
    # An outbox from before partitions (listed, no count recorded) was one partition.
    async with embedded_redis(tmp_path) as url:
        client = aioredis.from_url(url)
        await client.delete("aether:meta:outbox")
        await client.sadd(OUTBOX_TENANTS, "old-tenant")
        await client.aclose()
    with pytest.raises(StartupError, match="split into 1 partitions"):
        async with serve(settings):
            pass
