"""A soak: the service under steady mixed load for a long time, sampled every minute.

`aether-memory serve` runs in its own process on the embedded default (its own Redis, AOF with
fsync always) with the archive on (FerretDB), so the archiver, maintenance, the episode indexer
and the access recorder all run as they would in production. This process drives a paced, mixed
load: StoreMemory, SearchMemories, RecordEpisodes streams, working-memory appends with a
checkpoint and a restore now and then, tool-result cache puts and gets, and one live
SubscribeEpisodes tail. Every minute it records, for that minute: calls and errors per
operation, p50/p99 latency per operation, the resident memory of the server and of its Redis,
the Redis data set size and the archive's outbox backlog. At the end every acknowledged memory
and episode must be readable, and the archive must hold them all.

    python -m bench.soak [--minutes 60] [--rate 40]   # writes bench/results/soak.json and .md

Not part of CI (an hour by default); `--minutes 2` is a quick check of the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import (
    agent_state_pb2,
    episode_pb2,
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    working_memory_pb2,
)
from google.protobuf.struct_pb2 import Struct
from pymongo import AsyncMongoClient

from aether_memory.stores.redis.outbox import RedisOutbox
from tests.support.faults import missing_memories, stored_events, wait_answering
from tests.support.servers import FerretDB, free_port, service_env, start_service

from .output import publish

ROOT = Path(__file__).resolve().parent.parent
TENANT = "soak"
MD = (("aether-tenant", TENANT),)
WORDS = tuple(
    [
        "hiking",
        "pottery",
        "Lisbon",
        "violin",
        "sourdough",
        "chess",
        "marathon",
        "tomatoes",
        "Kyoto",
        "jazz",
        "novel",
        "kayak",
        "garden",
        "sister",
        "promotion",
        "dentist",
        "camping",
        "painting",
        "piano",
        "Berlin",
        "yoga",
    ]
)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) + "."


class Window:
    """What one minute of load saw."""

    def __init__(self) -> None:
        self.latency: defaultdict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()

    def summary(self) -> dict[str, Any]:
        ops = {}
        for op, values in sorted(self.latency.items()):
            ordered = sorted(values)
            ops[op] = {
                "calls": len(values),
                "p50_ms": statistics.median(ordered) * 1000,
                "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            }
        return {"ops": ops, "errors": dict(self.errors)}


class Soak:
    def __init__(self, channel: grpc.aio.Channel, rate: float, seed: int = 7) -> None:
        self.memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
        self.episodes = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        self.rate = rate
        self.rng = random.Random(seed)
        self.window = Window()
        self.acked_memories: dict[str, str] = {}
        self.acked_events: set[str] = set()
        self.tailed = 0
        self.n = 0

    async def timed(self, op: str, call: Callable[[], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        try:
            result = await call()
        except grpc.aio.AioRpcError as error:
            self.window.errors[f"{op} {error.code().name}"] += 1
            return None
        self.window.latency[op].append(time.perf_counter() - started)
        return result

    async def store(self, n: int) -> None:
        content = f"Soak fact {n}: " + sentence(self.rng)
        reply = await self.timed(
            "StoreMemory",
            lambda: self.memories.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="soak", content=content),
                    request_id=f"store-{n}",
                ),
                metadata=MD,
                timeout=10,
            ),
        )
        if reply is not None:
            self.acked_memories[reply.memory.id] = content

    async def search(self, n: int) -> None:
        query = " ".join(self.rng.choice(WORDS) for _ in range(3))
        await self.timed(
            "SearchMemories",
            lambda: self.memories.SearchMemories(
                memory_service_pb2.SearchMemoriesRequest(
                    agent_id="soak", query=query, page_size=10
                ),
                metadata=MD,
                timeout=10,
            ),
        )

    async def record(self, n: int) -> None:
        batch = [
            episode_pb2.Episode(
                event_id=f"e{n}-{i}", agent_id="soak", type=episode_pb2.EPISODE_TYPE_TOOL_CALL
            )
            for i in range(10)
        ]

        async def requests() -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
            yield episode_service_pb2.RecordEpisodesRequest(episodes=batch)

        async def call() -> list[str]:
            return [
                ack.event_id
                async for response in self.episodes.RecordEpisodes(
                    requests(), metadata=MD, timeout=10
                )
                for ack in response.acks
                if ack.WhichOneof("result") == "written"
            ]

        written = await self.timed("RecordEpisodes", call)
        if written:
            self.acked_events.update(written)

    async def session(self, n: int) -> None:
        session_id = f"s{n % 50}"
        message = working_memory_pb2.ContextMessage(role="user", content=sentence(self.rng))
        await self.timed(
            "AppendWorkingMemory",
            lambda: self.memories.AppendWorkingMemory(
                memory_service_pb2.AppendWorkingMemoryRequest(
                    session_id=session_id, agent_id="soak", messages=[message]
                ),
                metadata=MD,
                timeout=10,
            ),
        )
        if n % 20 == 0:
            made = await self.timed(
                "CreateCheckpoint",
                lambda: self.memories.CreateCheckpoint(
                    memory_service_pb2.CreateCheckpointRequest(session_id=session_id),
                    metadata=MD,
                    timeout=10,
                ),
            )
            if made is not None:
                await self.timed(
                    "RestoreCheckpoint",
                    lambda: self.memories.RestoreCheckpoint(
                        memory_service_pb2.RestoreCheckpointRequest(
                            session_id=session_id, number=made.checkpoint.number
                        ),
                        metadata=MD,
                        timeout=10,
                    ),
                )

    async def tool_cache(self, n: int) -> None:
        arguments = Struct()
        arguments.update({"city": f"city-{n % 100}"})
        result = Struct()
        result.update({"forecast": sentence(self.rng)})
        await self.timed(
            "PutToolResult",
            lambda: self.memories.PutToolResult(
                memory_service_pb2.PutToolResultRequest(
                    tool_result=agent_state_pb2.ToolResult(
                        tool_name="weather", arguments=arguments, result=result
                    )
                ),
                metadata=MD,
                timeout=10,
            ),
        )
        await self.timed(
            "GetToolResult",
            lambda: self.memories.GetToolResult(
                memory_service_pb2.GetToolResultRequest(tool_name="weather", arguments=arguments),
                metadata=MD,
                timeout=10,
            ),
        )

    async def tail(self) -> None:
        """One live subscriber for the whole soak; it resumes from its cursor if cut off."""
        cursor = ""
        while True:
            try:
                request = episode_service_pb2.SubscribeEpisodesRequest(max_batch=100)
                if cursor:
                    request.after_cursor = cursor
                async for response in self.episodes.SubscribeEpisodes(request, metadata=MD):
                    self.tailed += len(response.batch.episodes)
                    cursor = response.cursor or cursor
            except grpc.aio.AioRpcError as error:
                self.window.errors[f"SubscribeEpisodes {error.code().name}"] += 1
                await asyncio.sleep(1)

    async def drive(self, stop: asyncio.Event) -> None:
        """Paced open loop: one operation every 1/rate s, whether or not the last finished."""
        operations = [self.store, self.search, self.search, self.record, self.session]
        operations.append(self.tool_cache)
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not stop.is_set():
            task = asyncio.create_task(operations[self.n % len(operations)](self.n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            self.n += 1
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)


async def missing(soak: Soak) -> dict[str, int]:
    stored = set(await stored_events(soak.episodes, MD))
    return {
        "memories": await missing_memories(soak.memories, MD, soak.acked_memories),
        "episodes": len(soak.acked_events - stored),
    }


async def run(minutes: float, rate: float, tmp: Path) -> dict[str, Any]:
    mongo = FerretDB(tmp / "ferret")
    mongo_url = await asyncio.to_thread(mongo.start)
    port, data = free_port(), tmp / "data"
    env = service_env(
        AETHER_PORT=str(port),
        AETHER_DATA_DIR=str(data),
        AETHER_MONGO_URL=mongo_url,
        AETHER_MAINTENANCE_INTERVAL_S="60",
    )
    server = await asyncio.to_thread(start_service, env, tmp / "server.log")
    samples: list[dict[str, Any]] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_answering(channel, 180)
            redis_pid = int((data / "redis.pid").read_text())
            redis_url = (data / "redis.url").read_text().strip()
            redis = aioredis.from_url(redis_url)
            soak = Soak(channel, rate)
            stop = asyncio.Event()
            driver = asyncio.create_task(soak.drive(stop))
            tail = asyncio.create_task(soak.tail())
            started = time.monotonic()
            for minute in range(1, int(minutes) + 1):
                await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                window, soak.window = soak.window, Window()
                memory = await redis.info("memory")
                samples.append(
                    {
                        "minute": minute,
                        **window.summary(),
                        "server_rss_mb": rss_bytes(server.pid) / 2**20,
                        "redis_rss_mb": rss_bytes(redis_pid) / 2**20,
                        "redis_used_mb": memory["used_memory"] / 2**20,
                        "outbox_backlog": (await RedisOutbox(redis, batch=1).backlog()).entries,
                        "memories_acked": len(soak.acked_memories),
                        "episodes_acked": len(soak.acked_events),
                        "episodes_tailed": soak.tailed,
                    }
                )
                print(json.dumps(samples[-1]), flush=True)
            stop.set()
            await driver
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
            lost = await missing(soak)
            # The archive catches up: every acknowledged memory and episode reaches MongoDB.
            archive: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
            database = archive["aether"]
            deadline = time.monotonic() + 300
            while True:
                archived_memories = {
                    d["memory_id"] async for d in database.memories.find({"tenant": TENANT})
                }
                archived_events = await database.episodes.count_documents({"tenant": TENANT})
                behind = len(set(soak.acked_memories) - archived_memories)
                if (behind == 0 and archived_events >= len(soak.acked_events)) or (
                    time.monotonic() > deadline
                ):
                    break
                await asyncio.sleep(2)
            await archive.close()
            await redis.aclose()
            return {
                "minutes": minutes,
                "rate_per_s": rate,
                "samples": samples,
                "acked": {"memories": len(soak.acked_memories), "episodes": len(soak.acked_events)},
                "lost": lost,
                "archive_missing_memories": behind,
                "archived_episodes": archived_events,
                "server_restarts": server.poll() is not None,
            }
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait)
        await asyncio.to_thread(mongo.stop)


def report(result: dict[str, Any]) -> str:
    samples = result["samples"]
    ops = sorted({op for s in samples for op in s["ops"]})
    lines = [
        "# Soak report",
        "",
        f"Generated by `python -m bench.soak --minutes {result['minutes']:g} "
        f"--rate {result['rate_per_s']:g}`: the embedded default (fsync always) with the "
        "archive on (FerretDB), a paced mixed load in another process, sampled each minute.",
        "",
        f"Acknowledged: {result['acked']['memories']} memories, "
        f"{result['acked']['episodes']} episodes. Lost afterwards: "
        f"**{result['lost']['memories']} memories, {result['lost']['episodes']} episodes**; "
        f"missing from the archive after it caught up: {result['archive_missing_memories']} "
        f"memories ({result['archived_episodes']} episodes archived). The live subscriber "
        f"received {result['samples'][-1]['episodes_tailed']} episodes.",
        "",
        "| minute | server RSS MB | Redis RSS MB | Redis used MB | outbox | errors | "
        + " | ".join(f"{op} p50/p99 ms" for op in ops)
        + " |",
        "|" + "---|" * (6 + len(ops)),
    ]
    for s in samples:
        cells = []
        for op in ops:
            o = s["ops"].get(op)
            cells.append(f"{o['p50_ms']:.1f} / {o['p99_ms']:.1f}" if o else "-")
        errors = sum(s["errors"].values())
        lines.append(
            f"| {s['minute']} | {s['server_rss_mb']:.0f} | {s['redis_rss_mb']:.0f} "
            f"| {s['redis_used_mb']:.0f} | {s['outbox_backlog']} | {errors} | "
            + " | ".join(cells)
            + " |"
        )
    first, last = samples[0], samples[-1]
    lines += [
        "",
        f"Server RSS {first['server_rss_mb']:.0f} MB after minute 1, "
        f"{last['server_rss_mb']:.0f} MB after minute {last['minute']}; "
        f"Redis used memory {first['redis_used_mb']:.0f} -> {last['redis_used_mb']:.0f} MB "
        "(the data set grows with the load).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=40, help="operations per second")
    parser.add_argument("--out", default="soak", help="report name under bench/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.minutes, args.rate, Path(tmp)))
    publish(args.out, result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
