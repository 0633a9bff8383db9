"""Searches on a Redis replica (AETHER_REDIS_READ_URL): the index queries run there, reads by id
and writes stay on the primary, and a replica that stops answering hands searches back to the
primary without failing one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest_asyncio
import redis.asyncio as aioredis
from aether.memory.v1 import memory_pb2, memory_service_pb2

from aether_memory.app import serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.keys import TenantKeys
from tests.support.faults import start_redis
from tests.support.servers import free_port
from tests.support.waiting import until

from .conftest import new_client


@dataclass
class Pair:
    primary: aioredis.Redis
    replica: aioredis.Redis
    primary_url: str
    replica_url: str


@pytest_asyncio.fixture(loop_scope="session")
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    ports = free_port(), free_port()
    processes = []
    for name, port in zip(("primary", "replica"), ports, strict=True):
        (tmp_path / name).mkdir()
        processes.append(await start_redis(tmp_path / name, port))
    urls = [f"redis://127.0.0.1:{port}/0" for port in ports]
    primary, replica = (aioredis.from_url(url) for url in urls)
    await replica.execute_command("REPLICAOF", "127.0.0.1", ports[0])

    async def linked() -> bool:
        return bool((await replica.info("replication")).get("master_link_status") == "up")

    await until(linked, "the replica is in sync with the primary", within_s=30)
    try:
        yield Pair(primary, replica, urls[0], urls[1])
    finally:
        await primary.aclose()
        await replica.aclose()
        for process in processes:
            process.kill()
            await asyncio.to_thread(process.wait)


async def searches(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_FT.SEARCH", {}).get("calls", 0))


async def test_searches_run_on_the_replica_and_fall_back_to_the_primary(
    pair: Pair, tmp_path: Path
) -> None:
    settings = Settings(
        port=0,
        data_dir=tmp_path / "data",
        redis_url=pair.primary_url,
        redis_read_url=pair.replica_url,
        index_episodes=False,
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
        client = new_client(ch, "replicated")
        stored = await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content="The backup runs at 02:00 UTC.")
            ),
            metadata=client.md,
        )
        key = TenantKeys("replicated").memory(stored.memory.id)
        # What a search sees is what the replica applied: here within the wait for it.
        await until(lambda: pair.replica.exists(key), "the replica applied the write")

        async def search() -> list[str]:
            response = await client.memory.SearchMemories(
                memory_service_pb2.SearchMemoriesRequest(agent_id="a", query="when is the backup?"),
                metadata=client.md,
            )
            return [r.memory.id for r in response.results]

        on_primary, on_replica = await searches(pair.primary), await searches(pair.replica)
        assert await search() == [stored.memory.id]
        assert await searches(pair.replica) > on_replica  # the index queries ran there
        assert await searches(pair.primary) == on_primary  # and none on the primary

        await pair.replica.shutdown(nosave=True)  # the replica goes away
        assert await search() == [stored.memory.id]  # answered all the same
        assert await searches(pair.primary) > on_primary  # by the primary
