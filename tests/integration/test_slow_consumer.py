"""A subscriber that stops reading must not make the server buffer the stream in memory.

The service runs in its own process so its resident memory can be measured: a subscriber
attaches and reads nothing while 20,000 episodes of about 2 KB (40 MB) are recorded; then it
reads again and must receive every episode once, in order.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
from aether.memory.v1 import episode_pb2, episode_service_pb2, episode_service_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.stores.redis.embedded import embedded_redis
from tests.support.servers import free_port

EPISODES = 20_000
BATCH = 500
MD = (("aether-tenant", "slow"),)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def test_a_stalled_subscriber_does_not_grow_server_memory(tmp_path: Path) -> None:
    async with embedded_redis(tmp_path / "redis") as redis_url:
        port = free_port()
        env = {
            **os.environ,
            "AETHER_PORT": str(port),
            "AETHER_REDIS_URL": redis_url,
            "AETHER_INDEX_EPISODES": "false",
            "AETHER_MAINTENANCE_INTERVAL_S": "3600",
            "AETHER_EPISODE_MAX_LEN": "100000",
        }
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "aether_memory",
            "serve",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _exercise(f"127.0.0.1:{port}", server.pid)
        finally:
            server.terminate()
            await server.wait()


async def _exercise(target: str, pid: int) -> None:
    blob = "x" * 2000
    async with grpc.aio.insecure_channel(target) as writer_channel:
        health = health_pb2_grpc.HealthStub(writer_channel)
        for _ in range(300):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        stub = episode_service_pb2_grpc.EpisodeServiceStub(writer_channel)

        async def record(start: int, count: int) -> None:
            async def requests():  # type: ignore[no-untyped-def]
                for b in range(start, start + count, BATCH):
                    episodes = []
                    for n in range(b, min(start + count, b + BATCH)):
                        payload = struct_pb2.Struct()
                        payload.update({"n": n, "blob": blob})
                        episodes.append(
                            episode_pb2.Episode(
                                event_id=f"e{n}",
                                agent_id="a",
                                type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                                payload=payload,
                            )
                        )
                    yield episode_service_pb2.RecordEpisodesRequest(episodes=episodes)

            async for _ in stub.RecordEpisodes(requests(), metadata=MD):
                pass

        await record(0, 2000)  # warm-up: allocator pools, connections, script cache
        first = await _first_cursor(stub)
        async with grpc.aio.insecure_channel(target) as reader_channel:
            reader = episode_service_pb2_grpc.EpisodeServiceStub(reader_channel)
            subscription = reader.SubscribeEpisodes(
                episode_service_pb2.SubscribeEpisodesRequest(after_cursor=first),
                metadata=MD,
            )
            await asyncio.sleep(0.5)  # it attached; it now reads nothing
            before = rss_mb(pid)
            await record(2000, EPISODES)
            await asyncio.sleep(1.0)
            during = rss_mb(pid)
            growth = during - before
            print(
                f"server RSS {before:.0f} MB -> {during:.0f} MB with a stalled subscriber "
                f"while {EPISODES} episodes (~{EPISODES * 2 // 1000} MB) were recorded"
            )
            assert growth < 20, f"server grew {growth:.0f} MB"

            seen: list[str] = []
            async for response in subscription:
                if response.HasField("episode"):
                    seen.append(response.episode.event_id)
                    if len(seen) == 2000 - 1 + EPISODES:
                        break
            subscription.cancel()
    assert seen == [f"e{n}" for n in range(1, 2000 + EPISODES)]


async def _first_cursor(stub: episode_service_pb2_grpc.EpisodeServiceStub) -> str:
    page = await stub.ListEpisodes(
        episode_service_pb2.ListEpisodesRequest(page_size=1), metadata=MD
    )
    return page.episodes[0].cursor
