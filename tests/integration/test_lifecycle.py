"""A service's whole life: drain with live streams, restart on the same data, nothing acked lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from aether.memory.v1 import episode_service_pb2, memory_pb2, memory_service_pb2
from grpc_health.v1 import health_pb2

from aether_memory.app import serve
from aether_memory.domain.errors import StartupError
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import data_dir_lock, embedded_redis, redis_command
from tests.support.faults import wait_health
from tests.support.servers import free_port
from tests.support.waiting import until

from .conftest import failure, new_client
from .test_episode_service import episode, list_all, record


async def test_drain_ends_subscriptions_cleanly_and_a_restart_keeps_every_acked_write(
    tmp_path: Path,
) -> None:
    settings = Settings(port=0, data_dir=tmp_path / "data", redis_url=None, grace_s=5.0)
    async with serve(settings) as running:
        channel = grpc.aio.insecure_channel(running.address)  # outlives the server on purpose
        client = new_client(channel, "lifecycle")
        acks = await record(client, [episode(f"k{i}") for i in range(50)], [episode("k50")])
        assert all(a.WhichOneof("result") == "written" for a in acks)
        stored = await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    agent_id="a", content="The launch code is in the blue folder"
                )
            ),
            metadata=client.md,
        )
        subscription = client.episodes.SubscribeEpisodes(
            episode_service_pb2.SubscribeEpisodesRequest(after_cursor=acks[-1].written.cursor),
            metadata=client.md,
        )

        async def drain_subscription() -> grpc.aio.AioRpcError:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in subscription:
                    pass
            return info.value

        watcher = asyncio.create_task(drain_subscription())

        def attached() -> bool:
            reader = running.tails.readers.get(client.tenant)
            return reader is not None and bool(reader.subscribers)

        await until(attached, "the subscription reads live before the server drains")
    # Leaving `serve` drained the server, stopped workers and shut the embedded Redis down.
    error = await asyncio.wait_for(watcher, 10)
    await channel.close()
    f = failure(error)
    assert (f.code, f.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")

    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, "lifecycle")
        assert [e.event_id for e in await list_all(client)] == [a.event_id for a in acks]
        got = await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.memory.id), metadata=client.md
        )
        assert got.memory.content == "The launch code is in the blue folder"
        for _ in range(50):  # RediSearch re-indexes the reloaded hashes in the background
            hits = await client.memory.SearchMemories(
                memory_service_pb2.SearchMemoriesRequest(
                    agent_id="a", query="where is the launch code?"
                ),
                metadata=client.md,
            )
            if hits.results:
                break
            await asyncio.sleep(0.1)
        assert hits.results[0].memory.id == stored.memory.id


async def test_tier_ttls_expire_memories_from_get_list_and_search(tmp_path: Path) -> None:
    settings = Settings(port=0, data_dir=tmp_path / "data", redis_url=None, scratchpad_ttl_s=1)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, "tiers")

        async def store(content: str, tier: int) -> memory_pb2.Memory:
            response = await client.memory.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="a", content=content, tier=tier)
                ),
                metadata=client.md,
            )
            return response.memory

        scratch = await store(
            "temporary scratch note about parsing", memory_pb2.MEMORY_TIER_SCRATCHPAD
        )
        kept = await store("permanent note about parsing", memory_pb2.MEMORY_TIER_LONG_TERM)
        assert scratch.HasField("expire_time") and not kept.HasField("expire_time")

        async def gone() -> bool:
            try:
                await client.memory.GetMemory(
                    memory_service_pb2.GetMemoryRequest(id=scratch.id), metadata=client.md
                )
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                return True
            return False

        await until(gone, "the scratchpad memory expired (1 s TTL)")
        listed = await client.memory.ListMemories(
            memory_service_pb2.ListMemoriesRequest(agent_id="a"), metadata=client.md
        )
        assert [m.id for m in listed.memories] == [kept.id]
        hits = await client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(agent_id="a", query="note about parsing"),
            metadata=client.md,
        )
        assert [r.memory.id for r in hits.results] == [kept.id]
        # The dedup key expired with it: the same content can be stored anew.
        again = await store(
            "temporary scratch note about parsing", memory_pb2.MEMORY_TIER_SCRATCHPAD
        )
        assert again.id != scratch.id


async def test_a_second_server_on_a_data_dir_in_use_is_refused_before_it_starts(
    tmp_path: Path,
) -> None:
    first = Settings(port=0, data_dir=tmp_path / "data", redis_url=None, grace_s=1.0)
    async with serve(first) as running, grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, "one-data-dir")
        stored = await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content="Only one server owns this.")
            ),
            metadata=client.md,
        )
        redis_log = (tmp_path / "data" / "redis.log").read_bytes()
        # Redis runs in its own session: a terminal's Ctrl-C reaches the server, which drains
        # its calls before it stops Redis.
        redis_pid = int((tmp_path / "data" / "redis.pid").read_text())
        assert os.getsid(redis_pid) == redis_pid != os.getsid(0)
        with pytest.raises(
            StartupError, match=f"in use by another aether-memory server \\(pid {os.getpid()}\\)"
        ):
            async with serve(first.model_copy(update={"port": 0})):
                pass
        assert (tmp_path / "data" / "redis.log").read_bytes() == redis_log  # no second Redis
        got = await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.memory.id), metadata=client.md
        )
        assert got.memory.content == "Only one server owns this."


async def test_a_taken_port_is_refused_by_name_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = Settings(port=port, data_dir=tmp_path / "data", redis_url=None)
        with pytest.raises(StartupError, match=f"port {port} on 127.0.0.1 is taken"):
            async with serve(settings):
                pass
    assert not (tmp_path / "data").exists()  # neither the model nor Redis was started


async def test_an_embedded_redis_left_by_a_killed_server_is_stopped_and_its_data_kept(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    orphan = await asyncio.create_subprocess_exec(
        *redis_command(data.resolve(), port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (data / "redis.pid").write_text(f"{orphan.pid}\n")  # as the killed server left it
    try:
        direct = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        for _ in range(100):
            with contextlib.suppress(aioredis.ConnectionError, aioredis.BusyLoadingError):
                if await direct.set("acked-before-the-kill", "1"):
                    break
            await asyncio.sleep(0.1)
        await direct.aclose()
        with data_dir_lock(data):
            async with embedded_redis(data) as url:
                assert orphan.returncode is not None  # stopped before the new Redis started
                fresh = aioredis.from_url(url)
                assert await fresh.get("acked-before-the-kill") == b"1"
                await fresh.aclose()
    finally:
        if orphan.returncode is None:
            orphan.kill()
        await orphan.wait()


async def test_a_killed_embedded_redis_is_started_again_and_keeps_every_acked_write(
    tmp_path: Path,
) -> None:
    settings = Settings(port=0, data_dir=tmp_path / "data", redis_url=None, grace_s=1.0)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, "redis-restart")
        stored = await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="a", content="Acked before Redis died.")
            ),
            metadata=client.md,
        )
        pid_file = tmp_path / "data" / "redis.pid"
        first = int(pid_file.read_text())
        os.kill(first, signal.SIGKILL)
        assert await wait_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING, 10) >= 0
        assert await wait_health(channel, health_pb2.HealthCheckResponse.SERVING, 20) >= 0
        assert int(pid_file.read_text()) != first  # a new Redis, started by the server
        got = await client.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.memory.id), metadata=client.md
        )
        assert got.memory.content == "Acked before Redis died."


async def test_workers_share_one_port_and_one_redis_and_a_dead_worker_is_replaced(
    tmp_path: Path,
) -> None:
    """`serve --workers 2`: two server processes on one port over one embedded Redis; what one
    stored another finds; a killed worker is started again; SIGTERM stops workers, then Redis."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    parent = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "aether_memory", "serve", "--workers", "2"),
        env={**clean, "AETHER_DATA_DIR": str(tmp_path), "AETHER_PORT": str(port)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    try:
        workers: list[int] = []
        for _ in range(100):
            workers = await _children(parent.pid)
            if len(workers) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(workers) == 2, workers
        environ = await asyncio.to_thread(Path(f"/proc/{workers[0]}/environ").read_bytes)
        assert b"AETHER_PARENT_RUNS_REDIS=true" in environ.split(b"\0")  # it guards the disk
        await _serving(address)
        for _ in range(300):
            if await _listeners(port) == 2:  # one socket each, on the one port
                break
            await asyncio.sleep(0.1)
        assert await _listeners(port) == 2
        md = (("aether-tenant", "workers"),)
        await _serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stored = await new_client(channel).memory.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="me", content="I am allergic to peanuts")
                ),
                metadata=md,
            )
        found = set()
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await new_client(channel).memory.GetMemory(
                    memory_service_pb2.GetMemoryRequest(id=stored.memory.id), metadata=md
                )
                found.add(reply.memory.content)
        assert found == {"I am allergic to peanuts"}
        os.kill(workers[0], signal.SIGKILL)
        for _ in range(100):
            replaced = await _children(parent.pid)
            if len(replaced) == 2 and workers[0] not in replaced:
                break
            await asyncio.sleep(0.1)
        assert len(replaced) == 2 and workers[0] not in replaced, replaced
        await _serving(address)
        for _ in range(300):  # until the new worker listens beside the other
            if await _listeners(port) == 2:
                break
            await asyncio.sleep(0.1)
    except BaseException:
        parent.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(parent.communicate(), 60)
        print(out.decode())  # the parent's and workers' own account, shown with the failure
        raise
    parent.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(parent.communicate(), 60)
    text = out.decode()
    assert parent.returncode == 0, text
    assert text.count("aether-memory: serving on") == 3  # 2, then the one started again
    assert "starting another" in text
    assert text.index("stopping the workers") < text.rindex("draining and shutting down")
    with data_dir_lock(tmp_path):  # free: Redis stopped with the parent
        pass


async def _serving(address: str, within_s: float = 60) -> None:
    """Until a new connection's health check says SERVING (workers take a while to start)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await wait_health(channel, health_pb2.HealthCheckResponse.SERVING, 5)
                return
        except grpc.aio.AioRpcError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _listeners(port: int) -> int:
    """How many sockets listen on the port (one per worker, with SO_REUSEPORT)."""
    found = await asyncio.create_subprocess_exec(
        *("ss", "-Hltn", f"sport = :{port}"), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await found.communicate()
    return len(out.splitlines())


async def _children(pid: int) -> list[int]:
    """The worker processes of a `serve --workers` parent (not its embedded Redis)."""
    found = await asyncio.create_subprocess_exec(
        *("pgrep", "-P", str(pid), "-f", "aether_memory serve"), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await found.communicate()
    return [int(p) for p in out.split()]
