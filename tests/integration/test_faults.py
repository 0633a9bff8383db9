"""Redis killed (SIGKILL) and restarted under load: the service reports NOT_SERVING while Redis is
gone, recovers by itself, and every acknowledged write is there afterwards (AOF, fsync always)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import memory_pb2, memory_service_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.app import serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import redis_command

from .conftest import new_client
from .test_episode_service import episode, list_all, record


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_redis(data: Path, port: int) -> subprocess.Popen[bytes]:
    process = await asyncio.to_thread(
        subprocess.Popen,
        redis_command(data, port, "always"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        for _ in range(200):
            try:
                if await client.ping():
                    return process
            except (aioredis.ConnectionError, aioredis.BusyLoadingError):
                await asyncio.sleep(0.05)
        raise RuntimeError("Redis did not start")
    finally:
        await client.aclose()


async def wait_health(channel: grpc.aio.Channel, wanted: int, within_s: float) -> float:
    stub = health_pb2_grpc.HealthStub(channel)
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if reply.status == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never became {wanted}")


async def test_redis_killed_and_restarted_mid_load_loses_no_acked_write(tmp_path: Path) -> None:
    data, port = tmp_path / "redis", free_port()
    data.mkdir()
    redis_process = await start_redis(data, port)
    settings = Settings(
        port=0,
        redis_url=f"redis://127.0.0.1:{port}/0",
        data_dir=tmp_path / "unused",
        index_episodes=False,
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    acked_events: set[str] = set()
    acked_memories: dict[str, str] = {}
    failures = 0
    stop = asyncio.Event()
    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            client = new_client(ch, "faults")

            async def record_episodes(writer: int) -> None:
                nonlocal failures
                n = 0
                while not stop.is_set():
                    batch = [episode(f"w{writer}-{n + i}") for i in range(20)]
                    try:
                        acks = await record(client, batch)
                    except grpc.aio.AioRpcError:
                        failures += 1
                        await asyncio.sleep(0.05)
                        continue  # the same event ids again: idempotent
                    acked_events.update(
                        a.event_id for a in acks if a.WhichOneof("result") == "written"
                    )
                    if all(a.WhichOneof("result") == "written" for a in acks):
                        n += 20

            async def store_memories() -> None:
                nonlocal failures
                i = 0
                while not stop.is_set():
                    content = f"Fault-test fact number {i}."
                    try:
                        response = await client.memory.StoreMemory(
                            memory_service_pb2.StoreMemoryRequest(
                                memory=memory_pb2.Memory(agent_id="a", content=content)
                            ),
                            metadata=client.md,
                        )
                    except grpc.aio.AioRpcError:
                        failures += 1
                        await asyncio.sleep(0.05)
                        continue
                    acked_memories[response.memory.id] = content
                    i += 1

            load = [asyncio.create_task(record_episodes(w)) for w in range(3)]
            load.append(asyncio.create_task(store_memories()))
            await asyncio.sleep(1.0)
            before_kill = len(acked_events)
            redis_process.kill()  # SIGKILL: no chance to flush anything
            redis_process.wait()
            noticed = await wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING, 5)
            await asyncio.sleep(0.5)
            redis_process = await start_redis(data, port)
            recovered = await wait_health(ch, health_pb2.HealthCheckResponse.SERVING, 10)
            during = len(acked_events)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*load)
            print(
                f"acked {len(acked_events)} episodes and {len(acked_memories)} memories; "
                f"{failures} calls failed while Redis was down; NOT_SERVING after {noticed:.2f}s,"
                f" SERVING {recovered:.2f}s after the restart"
            )
            assert before_kill > 100 and len(acked_events) > during  # load before and after

            stored = [e.event_id for e in await list_all(client)]
            assert len(stored) == len(set(stored))  # nothing twice
            assert acked_events <= set(stored)  # nothing acknowledged lost
            for memory_id, content in acked_memories.items():
                got = await client.memory.GetMemory(
                    memory_service_pb2.GetMemoryRequest(id=memory_id), metadata=client.md
                )
                assert got.memory.content == content
    finally:
        redis_process.terminate()
        redis_process.wait()
