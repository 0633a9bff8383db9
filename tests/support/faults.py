"""Fault scenarios under real load, shared by the tests (tests/integration/test_faults.py
asserts that nothing acknowledged is lost) and the reliability report (`python -m
bench.reliability`, which lists what each scenario does)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import (
    episode_pb2,
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    working_memory_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.app import serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import redis_command

from .servers import DelayProxy, FerretDB, free_port, service_env, start_service
from .waiting import until

MD = (("aether-tenant", "reliability"),)


@dataclass
class Outcome:
    scenario: str
    fault: str
    acked_episodes: int
    acked_memories: int
    failed_calls: int
    lost: int
    duplicated: int
    detail: str
    # Per phase of a scenario, what was seen: e.g. {"near-full refused": {"RESOURCE_EXHAUSTED": 3}}
    seen: dict[str, dict[str, int]] = field(default_factory=dict)


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


async def stored_events(
    episodes: episode_service_pb2_grpc.EpisodeServiceStub, metadata: Any
) -> list[str]:
    """Every episode's event id in the tenant, in log order, duplicates included."""
    found: list[str] = []
    token = ""
    while True:
        page = await episodes.ListEpisodes(
            episode_service_pb2.ListEpisodesRequest(page_size=1000, page_token=token),
            metadata=metadata,
            timeout=30,
        )
        found += [e.event_id for e in page.episodes]
        token = page.next_page_token
        if not token:
            return found


async def missing_memories(
    memories: memory_service_pb2_grpc.MemoryServiceStub, metadata: Any, acked: dict[str, str]
) -> int:
    """How many acknowledged memories (id -> content) cannot be read back as acknowledged."""
    missing = 0
    for memory_id, content in acked.items():
        try:
            got = await memories.GetMemory(
                memory_service_pb2.GetMemoryRequest(id=memory_id), metadata=metadata, timeout=10
            )
            missing += got.memory.content != content
        except grpc.aio.AioRpcError:
            missing += 1
    return missing


CLIENT_WRITE_AFTER_END = "client-side write after the end (grpc#36066)"


def code_of(error: grpc.aio.AioRpcError) -> str:
    """The status of a failed call, as the server sent it where the client library knows.
    grpcio's asyncio client reports its own request write that failed because the server had
    already ended a client-streaming call (refused it, or its deadline passed) as INTERNAL
    "Internal error from Core", over the status the server sent (grpc/grpc#36066, fix pending
    in grpc/grpc#43486): that is counted apart, as no status of the server's."""
    if error.code() == grpc.StatusCode.INTERNAL and 'Failed "execute_batch"' in (
        error.debug_error_string() or ""
    ):
        return CLIENT_WRITE_AFTER_END
    return error.code().name


class Load:
    """Mixed load whose writers retry failed calls with the same ids, recording what was
    acknowledged: RecordEpisodes streams, StoreMemory, BatchStoreMemories (with request_ids),
    working-memory appends each followed by a checkpoint, SearchMemories, and one live
    SubscribeEpisodes tail that resumes after its last cursor whenever it is cut off."""

    def __init__(self, channel: grpc.aio.Channel, pace_s: float = 0.0) -> None:
        self.pace_s = pace_s  # pause between a writer's calls (0: as fast as acks come)
        self.episodes = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        self.memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
        self.acked_events: set[str] = set()
        self.acked_memories: dict[str, str] = {}
        self.acked_checkpoints: dict[str, int] = {}  # session -> checkpoint number
        self.delivered: list[str] = []  # event ids the subscriber received, in order
        self.searches = 0
        self.failures = 0
        self.codes: Counter[str] = Counter()  # the status of each failed call
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tail: asyncio.Task[None] | None = None

    def start(self, episode_writers: int = 3) -> None:
        self._tasks = [asyncio.create_task(self._record(w)) for w in range(episode_writers)] + [
            asyncio.create_task(self._store()),
            asyncio.create_task(self._batch()),
            asyncio.create_task(self._checkpoint()),
            asyncio.create_task(self._search()),
        ]
        self._tail = asyncio.create_task(self._subscribe())

    async def finish(self, tail_within_s: float = 30.0) -> None:
        """Stop the writers; give the subscriber until it has seen every acknowledged event."""
        self.stop.set()
        await asyncio.gather(*self._tasks)
        for _ in range(int(tail_within_s / 0.1)):
            if self.acked_events <= set(self.delivered):
                break
            await asyncio.sleep(0.1)
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail

    def failed(self, error: grpc.aio.AioRpcError) -> None:
        self.failures += 1
        self.codes[code_of(error)] += 1

    async def _record(self, writer: int) -> None:
        n = 0
        while not self.stop.is_set():
            batch = [
                episode_pb2.Episode(
                    event_id=f"w{writer}-{n + i}",
                    agent_id="a",
                    type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                )
                for i in range(20)
            ]

            async def requests(batch: list[episode_pb2.Episode] = batch) -> Any:
                yield episode_service_pb2.RecordEpisodesRequest(episodes=batch)

            try:
                acks = [
                    ack
                    async for response in self.episodes.RecordEpisodes(requests(), metadata=MD)
                    for ack in response.acks
                ]
            except grpc.aio.AioRpcError as error:
                self.failed(error)
                await asyncio.sleep(0.05)
                continue  # the same event ids again: recording is idempotent
            await asyncio.sleep(self.pace_s)
            written = [a.event_id for a in acks if a.WhichOneof("result") == "written"]
            self.acked_events.update(written)
            if len(written) == len(batch):
                n += len(batch)
            else:
                self.failures += 1

    async def _store(self) -> None:
        i = 0
        while not self.stop.is_set():
            content = f"Reliability fact number {i}."
            try:
                response = await self.memories.StoreMemory(
                    memory_service_pb2.StoreMemoryRequest(
                        memory=memory_pb2.Memory(agent_id="a", content=content)
                    ),
                    metadata=MD,
                )
            except grpc.aio.AioRpcError as error:
                self.failed(error)
                await asyncio.sleep(0.05)
                continue
            self.acked_memories[response.memory.id] = content
            i += 1
            await asyncio.sleep(self.pace_s)

    async def _batch(self) -> None:
        i = 0
        while not self.stop.is_set():
            request = memory_service_pb2.BatchStoreMemoriesRequest(
                requests=[
                    memory_service_pb2.StoreMemoryRequest(
                        memory=memory_pb2.Memory(agent_id="b", content=f"Batched fact {i}.{j}."),
                        request_id=f"batch-{i}-{j}",
                    )
                    for j in range(5)
                ]
            )
            try:
                reply = await self.memories.BatchStoreMemories(request, metadata=MD)
            except grpc.aio.AioRpcError as error:
                self.failed(error)
                await asyncio.sleep(0.05)
                continue  # the same request_ids again
            for sent, got in zip(request.requests, reply.responses, strict=True):
                self.acked_memories[got.memory.id] = sent.memory.content
            i += 1
            await asyncio.sleep(max(self.pace_s, 0.02))

    async def _checkpoint(self) -> None:
        """Per session: one append, then one checkpoint of it (retried until acknowledged)."""
        i = 0
        while not self.stop.is_set():
            session = f"session-{i}"
            try:
                await self.memories.AppendWorkingMemory(
                    memory_service_pb2.AppendWorkingMemoryRequest(
                        session_id=session,
                        agent_id="a",
                        messages=[working_memory_pb2.ContextMessage(role="user", content="hi")],
                    ),
                    metadata=MD,
                )
                made = await self.memories.CreateCheckpoint(
                    memory_service_pb2.CreateCheckpointRequest(session_id=session), metadata=MD
                )
            except grpc.aio.AioRpcError as error:
                self.failed(error)
                await asyncio.sleep(0.05)
                i += 1  # a fresh session: an append may have landed without its ack
                continue
            self.acked_checkpoints[session] = made.checkpoint.number
            i += 1
            await asyncio.sleep(max(self.pace_s, 0.02))

    async def _search(self) -> None:
        while not self.stop.is_set():
            try:
                await self.memories.SearchMemories(
                    memory_service_pb2.SearchMemoriesRequest(
                        agent_id="a", query="reliability fact", page_size=5
                    ),
                    metadata=MD,
                )
                self.searches += 1
            except grpc.aio.AioRpcError as error:
                self.failed(error)
            await asyncio.sleep(0.05)

    async def _subscribe(self) -> None:
        cursor = ""
        while True:
            request = episode_service_pb2.SubscribeEpisodesRequest(max_batch=500)
            if cursor:
                request.after_cursor = cursor
            else:
                request.start_time.FromSeconds(0)  # from the beginning
            try:
                async for response in self.episodes.SubscribeEpisodes(request, metadata=MD):
                    self.delivered += [e.event_id for e in response.batch.episodes]
                    if response.HasField("episode"):
                        self.delivered.append(response.episode.event_id)
                    cursor = response.cursor or cursor
            except grpc.aio.AioRpcError as error:
                self.codes[f"SubscribeEpisodes {error.code().name}"] += 1
                await asyncio.sleep(0.1)

    async def stored_events(self) -> list[str]:
        return await stored_events(self.episodes, MD)

    async def outcome(self, scenario: str, fault: str, detail: str) -> Outcome:
        """After `finish`: is every acknowledged write readable, and none stored twice? Also
        did the subscriber receive every acknowledged episode, once?"""
        stored = await self.stored_events()
        lost = len(self.acked_events - set(stored)) + await self.missing_memories()
        lost += await self.missing_checkpoints()
        missed = len(self.acked_events - set(self.delivered)) if self._tail else 0
        twice = len(self.delivered) - len(set(self.delivered))
        outcome = Outcome(
            scenario,
            fault,
            len(self.acked_events),
            len(self.acked_memories),
            self.failures,
            lost + missed,
            len(stored) - len(set(stored)) + twice,
            detail,
        )
        outcome.seen["load"] = {
            "checkpoints acked": len(self.acked_checkpoints),
            "searches answered": self.searches,
            "episodes delivered to the subscriber": len(self.delivered),
            "acked episodes the subscriber missed": missed,
            "episodes delivered twice": twice,
        }
        outcome.seen["failed calls"] = dict(self.codes)
        return outcome

    async def missing_memories(self) -> int:
        return await missing_memories(self.memories, MD, self.acked_memories)

    async def missing_checkpoints(self) -> int:
        missing = 0
        for session, number in self.acked_checkpoints.items():
            page = await self.memories.ListCheckpoints(
                memory_service_pb2.ListCheckpointsRequest(session_id=session), metadata=MD
            )
            missing += number not in [c.number for c in page.checkpoints]
        return missing


async def redis_kill(tmp: Path, before_s: float = 1.0, after_s: float = 1.0) -> Outcome:
    data, port = tmp / "redis", free_port()
    data.mkdir(parents=True, exist_ok=True)
    redis_process = await start_redis(data, port)
    settings = Settings(
        port=0,
        redis_url=f"redis://127.0.0.1:{port}/0",
        data_dir=tmp / "unused",
        index_episodes=False,
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            load = Load(ch)
            load.start()
            await asyncio.sleep(before_s)
            redis_process.kill()  # SIGKILL: Redis gets no chance to flush anything
            await asyncio.to_thread(redis_process.wait)
            noticed = await wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING, 5)
            await asyncio.sleep(0.5)
            redis_process = await start_redis(data, port)
            recovered = await wait_health(ch, health_pb2.HealthCheckResponse.SERVING, 10)
            await asyncio.sleep(after_s)
            await load.finish()
            return await load.outcome(
                "redis_kill",
                "Redis SIGKILLed under load, restarted on its AOF after 0.5 s",
                f"NOT_SERVING after {noticed:.2f} s; SERVING {recovered:.2f} s after restart",
            )
    finally:
        redis_process.terminate()
        await asyncio.to_thread(redis_process.wait)


async def archive_outage(tmp: Path, outage_s: float = 3.0) -> Outcome:
    mongo = FerretDB(tmp / "ferret")
    url = await asyncio.to_thread(mongo.start)
    settings = Settings(
        port=0,
        data_dir=tmp / "redis",
        redis_url=None,
        mongo_url=url,
        archive_write_concern="1",
        index_episodes=False,
        maintenance_interval_s=3600,
        grace_s=1.0,
    )
    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            assert running.archiver is not None
            load = Load(ch, pace_s=0.02)  # about 1,000 episodes/s: FerretDB archives ~1,000/s
            load.start(episode_writers=1)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(mongo.stop)
            await asyncio.sleep(outage_s)
            backlog = (await running.archiver.backlog()).entries
            await asyncio.to_thread(mongo.start)  # the same port and data
            await asyncio.sleep(1.0)
            await load.finish()
            started = time.monotonic()
            await running.archiver.drain(timeout_s=120)
            caught_up = time.monotonic() - started
            archive = running.archiver.archive
            tenant = {"tenant": "reliability"}
            memory_ids = [d["memory_id"] async for d in archive.memories.find(tenant)]
            event_ids = [
                episode_pb2.Episode.FromString(d["body"]).event_id
                async for d in archive.episodes.find(tenant)
            ]
            lost = len(set(load.acked_memories) - set(memory_ids))
            lost += len(load.acked_events - set(event_ids))
            duplicated = len(memory_ids) - len(set(memory_ids))
            duplicated += len(event_ids) - len(set(event_ids))
            return Outcome(
                "archive_outage",
                f"MongoDB (FerretDB) stopped for {outage_s:.0f} s under load, then restarted",
                len(load.acked_events),
                len(load.acked_memories),
                load.failures,
                lost,
                duplicated,
                f"outbox backlog {backlog} entries during the outage; archive caught up "
                f"{caught_up:.2f} s after the load stopped; "
                f"{running.archiver.failures} archive batches retried",
            )
    finally:
        await asyncio.to_thread(mongo.stop)


def embedded_settings(tmp: Path) -> Settings:
    """The default set-up (embedded Redis, no archive) on a data dir under `tmp`."""
    return Settings(
        port=0,
        data_dir=tmp / "data",
        redis_url=None,
        index_episodes=False,
        maintenance_interval_s=3600,
        grace_s=1.0,
    )


async def embedded_redis_kill(tmp: Path, before_s: float = 1.0, after_s: float = 1.0) -> Outcome:
    settings = embedded_settings(tmp)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
        load = Load(ch)
        load.start()
        await asyncio.sleep(before_s)
        pid_file = settings.data_dir / "redis.pid"
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
        noticed = await wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING, 10)
        recovered = await wait_health(ch, health_pb2.HealthCheckResponse.SERVING, 30)
        await asyncio.sleep(after_s)
        await load.finish()
        return await load.outcome(
            "embedded_redis_kill",
            "the embedded Redis SIGKILLed under load; the server starts it again",
            f"NOT_SERVING after {noticed:.2f} s, SERVING {recovered:.2f} s later; "
            f"new Redis pid {'differs' if int(pid_file.read_text()) != killed else 'SAME'}",
        )


async def redis_full(tmp: Path, full_s: float = 1.0) -> Outcome:
    settings = embedded_settings(tmp)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
        load = Load(ch, pace_s=0.01)
        load.start()
        await asyncio.sleep(1.0)
        await running.redis.config_set("maxmemory", 1)
        health = []
        for _ in range(int(full_s / 0.1)):
            reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            health.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            await asyncio.sleep(0.1)
        await running.redis.config_set("maxmemory", 0)
        await asyncio.sleep(1.0)
        await load.finish()
        codes = ", ".join(f"{n} {code}" for code, n in load.codes.most_common())
        return await load.outcome(
            "redis_full",
            f"Redis at its memory limit (maxmemory 1 byte) for {full_s:.0f} s under load",
            f"refused calls: {codes or 'none'}; health while full: "
            + ", ".join(sorted(set(health))),
        )


async def mongo_slow(tmp: Path, slow_s: float = 3.0, delay_s: float = 0.5) -> Outcome:
    """MongoDB answers slowly (every chunk held `delay_s` each way) under load with the archive
    on, while a reader asks for memories the hot tier lacks (each a read of the archive) with a
    300 ms deadline. Writes must not slow down (the archive is write-behind), those reads must
    end at their deadline, the archive must catch up with nothing lost or doubled, and archive
    reads must answer promptly again afterwards (nothing left hanging on the slow calls)."""
    mongo = FerretDB(tmp / "ferret")
    url = await asyncio.to_thread(mongo.start)
    proxy = DelayProxy(mongo.listen)
    settings = embedded_settings(tmp).model_copy(
        update={"mongo_url": f"mongodb://{await proxy.start()}/", "archive_write_concern": "1"}
    )
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    store_ms: dict[str, list[float]] = defaultdict(list)
    phase = "before"

    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            assert running.archiver is not None and url
            load = Load(ch, pace_s=0.02)
            load.start(episode_writers=1)
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            stop_reading = asyncio.Event()

            async def read_cold() -> None:
                n = 0
                while not stop_reading.is_set():
                    began = phase
                    try:
                        await stub.GetMemory(
                            memory_service_pb2.GetMemoryRequest(id=f"cold-{n}"),
                            metadata=MD,
                            timeout=0.3,
                        )
                        answer = "OK"
                    except grpc.aio.AioRpcError as error:
                        answer = error.code().name
                    # A read that spans a switch of the proxy belongs to neither phase: its
                    # request may pass fast and its reply slow, or the other way round.
                    seen[f"{began} cold reads" if phase == began else "reads across a switch"][
                        answer
                    ] += 1
                    n += 1
                    await asyncio.sleep(0.05)

            async def time_stores() -> None:
                n = 0
                while not stop_reading.is_set():
                    started = time.perf_counter()
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.StoreMemory(
                            memory_service_pb2.StoreMemoryRequest(
                                memory=memory_pb2.Memory(agent_id="t", content=f"timed {n}")
                            ),
                            metadata=MD,
                        )
                        store_ms[phase].append((time.perf_counter() - started) * 1000)
                    n += 1
                    await asyncio.sleep(0.05)

            # One archive read first, not counted: it opens the archive's connections, which
            # took longer than the 300 ms deadline once on a loaded machine.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.GetMemory(
                    memory_service_pb2.GetMemoryRequest(id="warm-up"), metadata=MD, timeout=10
                )
            readers = [asyncio.create_task(read_cold()), asyncio.create_task(time_stores())]
            await asyncio.sleep(1.0)
            phase, proxy.delay_s = "slow", delay_s
            await asyncio.sleep(slow_s)
            backlog = (await running.archiver.backlog()).entries
            phase, proxy.delay_s = "after", 0.0
            # Until ten reads have answered since (they queue behind the archiver catching
            # up with the backlog on a loaded machine: a fixed 2 s saw 6 one time), or 20 s.
            with contextlib.suppress(AssertionError):
                await until(
                    lambda: seen["after cold reads"]["NOT_FOUND"] >= 10,
                    "ten archive reads answered after the slow phase",
                    within_s=20.0,
                )
            stop_reading.set()
            await asyncio.gather(*readers)
            await load.finish()
            await running.archiver.drain(timeout_s=120)
            archive = running.archiver.archive
            tenant = {"tenant": "reliability"}
            memory_ids = [d["memory_id"] async for d in archive.memories.find(tenant)]
            event_ids = [
                episode_pb2.Episode.FromString(d["body"]).event_id
                async for d in archive.episodes.find(tenant)
            ]
            outcome = await load.outcome(
                "mongo_slow",
                f"MongoDB (FerretDB) behind a proxy holding each chunk {delay_s * 1000:.0f} ms "
                f"each way, for {slow_s:.0f} s under load; reads of archived memories with a "
                "300 ms deadline",
                "; ".join(
                    f"{p}: cold reads "
                    + ", ".join(f"{n} {c}" for c, n in seen[f"{p} cold reads"].most_common())
                    + f", StoreMemory p50 {statistics.median(store_ms[p]):.1f} ms"
                    for p in ("before", "slow", "after")
                    if store_ms[p]
                )
                + f"; outbox backlog {backlog} at the end of the slow phase",
            )
            outcome.lost += len(set(load.acked_memories) - set(memory_ids))
            outcome.lost += len(load.acked_events - set(event_ids))
            outcome.duplicated += len(memory_ids) - len(set(memory_ids))
            outcome.duplicated += len(event_ids) - len(set(event_ids))
            outcome.seen |= {k: dict(v) for k, v in seen.items()}
            outcome.seen["StoreMemory p50 ms"] = {
                p: round(statistics.median(v)) for p, v in store_ms.items() if v
            }
            return outcome
    finally:
        await proxy.stop()
        await asyncio.to_thread(mongo.stop)


class Quitter:
    """Callers that give up: every call carries a deadline drawn from 2-50 ms (most expire while
    the server embeds, queries Redis or archives), and some RecordEpisodes streams are cancelled
    by the client mid-stream. Each writer retries with the same request_id or event ids until
    its write is acknowledged."""

    def __init__(self, channel: grpc.aio.Channel, seed: int = 11) -> None:
        self.episodes = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        self.memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
        self.rng = random.Random(seed)
        self.codes: Counter[str] = Counter()  # every failed call's status
        self.acked_events: set[str] = set()
        self.acked_memories: dict[str, str] = {}  # memory id -> content
        self.ids_per_request: defaultdict[str, set[str]] = defaultdict(set)
        self.stop = asyncio.Event()

    def deadline(self) -> float:
        return self.rng.uniform(0.002, 0.05)

    async def until_acked(self, call: Callable[[], Awaitable[Any]]) -> Any:
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                self.codes[error.code().name] += 1

    async def store(self) -> None:
        i = 0
        while not self.stop.is_set():
            request = memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(agent_id="q", content=f"Quitter fact {i}."),
                request_id=f"s-{i}",
            )
            reply = await self.until_acked(
                lambda r=request: self.memories.StoreMemory(r, metadata=MD, timeout=self.deadline())
            )
            self.acked_memories[reply.memory.id] = request.memory.content
            self.ids_per_request[request.request_id].add(reply.memory.id)
            i += 1

    async def batch(self) -> None:
        i = 0
        while not self.stop.is_set():
            request = memory_service_pb2.BatchStoreMemoriesRequest(
                requests=[
                    memory_service_pb2.StoreMemoryRequest(
                        memory=memory_pb2.Memory(agent_id="q", content=f"Quitter batch {i}.{j}."),
                        request_id=f"b-{i}-{j}",
                    )
                    for j in range(4)
                ]
            )
            reply = await self.until_acked(
                lambda r=request: self.memories.BatchStoreMemories(
                    r, metadata=MD, timeout=self.deadline() * 4
                )
            )
            for sent, got in zip(request.requests, reply.responses, strict=True):
                self.acked_memories[got.memory.id] = sent.memory.content
                self.ids_per_request[sent.request_id].add(got.memory.id)
            i += 1

    async def record(self) -> None:
        n = 0
        while not self.stop.is_set():
            batch = [
                episode_pb2.Episode(
                    event_id=f"q{n + i}", agent_id="q", type=episode_pb2.EPISODE_TYPE_TOOL_CALL
                )
                for i in range(20)
            ]

            async def requests(batch: list[episode_pb2.Episode] = batch) -> Any:
                for half in (batch[:10], batch[10:]):
                    yield episode_service_pb2.RecordEpisodesRequest(episodes=half)

            call = self.episodes.RecordEpisodes(requests(), metadata=MD, timeout=self.deadline())
            if self.rng.random() < 0.25:  # the client walks away mid-stream
                asyncio.get_running_loop().call_later(self.rng.uniform(0, 0.01), call.cancel)
            try:
                acks = [ack async for response in call for ack in response.acks]
            except grpc.aio.AioRpcError as error:
                self.codes[code_of(error)] += 1
                continue
            except asyncio.CancelledError:  # our own cancel, seen from the iterator
                self.codes["CANCELLED"] += 1
                continue
            written = [a.event_id for a in acks if a.WhichOneof("result") == "written"]
            self.acked_events.update(written)
            if len(written) == len(batch):
                n += len(batch)


async def client_cancel(tmp: Path, load_s: float = 3.0) -> Outcome:
    """Deadlines and cancels under load, with the archive on: nothing half-written."""
    mongo = FerretDB(tmp / "ferret")
    url = await asyncio.to_thread(mongo.start)
    settings = embedded_settings(tmp).model_copy(
        update={"mongo_url": url, "archive_write_concern": "1"}
    )
    try:
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            assert running.archiver is not None
            quitter = Quitter(ch)
            writers = [quitter.store(), quitter.batch(), quitter.record(), quitter.record()]
            tasks = [asyncio.create_task(w) for w in writers]
            await asyncio.sleep(load_s)
            # A loaded machine gets through fewer calls in `load_s` (20 episodes one time): go
            # on until every kind of call was seen often enough to judge, at most 30 s more.
            with contextlib.suppress(AssertionError):
                await until(
                    lambda: (
                        len(quitter.acked_events) > 20
                        and len(quitter.acked_memories) > 5
                        and quitter.codes["DEADLINE_EXCEEDED"] > 20
                        and quitter.codes["CANCELLED"] > 0
                    ),
                    "enough acked, timed-out and cancelled calls",
                    within_s=30.0,
                )
            quitter.stop.set()
            await asyncio.gather(*tasks)
            await asyncio.sleep(0.5)  # claims given back after a cancel are given back by now
            pending = 0
            async for key in running.redis.scan_iter(match="aether:req:*", count=1000):
                pending += (await running.redis.get(key) or b"").endswith(b"\x00pending")
            load = Load(ch)
            load.acked_events, load.acked_memories = quitter.acked_events, quitter.acked_memories
            listed = []
            token = ""
            while True:
                page = await load.memories.ListMemories(
                    memory_service_pb2.ListMemoriesRequest(
                        agent_id="q", page_size=1000, page_token=token
                    ),
                    metadata=MD,
                )
                listed += [m.content for m in page.memories]
                token = page.next_page_token
                if not token:
                    break
            await running.archiver.drain(timeout_s=120)
            archived = [
                d["memory_id"]
                async for d in running.archiver.archive.memories.find({"tenant": "reliability"})
            ]
            outcome = await load.outcome(
                "client_cancel",
                "every call with a 2-50 ms deadline (batches 8-200 ms), a quarter of the "
                f"episode streams cancelled by the client, for {load_s:.0f} s; the archive on",
                "answers: "
                + ", ".join(f"{n} {code}" for code, n in quitter.codes.most_common())
                + f"; {pending} request_id claims left pending; "
                f"{len(archived)} memories archived",
            )
            twice = len(listed) - len(set(listed))  # one content stored as two memories
            twice += sum(len(ids) > 1 for ids in quitter.ids_per_request.values())
            twice += len(archived) - len(set(archived))
            outcome.duplicated += twice
            outcome.lost += len(set(quitter.acked_memories) - set(archived))
            outcome.failed_calls = sum(quitter.codes.values())
            outcome.seen = {"answers": dict(quitter.codes), "pending claims": {"": pending}}
        return outcome
    finally:
        await asyncio.to_thread(mongo.stop)


class CannotMount(RuntimeError):
    """This machine will not mount a small file system for the test (needs root)."""


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` at `path`: a disk that fills up in seconds."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        raise CannotMount(mounted.stderr.strip() or "mount failed")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Write a filler file until at most `leave_bytes` are free (0: until the disk is full)."""
    filler = directory / f"filler-{leave_bytes}"
    with filler.open("ab") as out:
        while True:
            stats = os.statvfs(directory)
            room = stats.f_bavail * stats.f_frsize - leave_bytes
            if room <= 0:
                return filler
            try:
                out.write(b"\0" * min(room, 1 << 20))
                out.flush()
            except OSError:  # ENOSPC: as full as it gets
                return filler


async def disk_full(tmp: Path, full_s: float = 1.5) -> Outcome:
    """The embedded Redis's disk fills up under load: first to just under the guard's margin
    (writes refused, Redis and reads go on), then to the last byte (Redis fails an AOF write
    and exits; it is started again). Then the space is freed and the writers carry on."""
    with small_disk(tmp / "disk", 64) as disk:
        settings = embedded_settings(disk).model_copy(update={"min_free_disk_mb": 4})
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            load = Load(ch, pace_s=0.02)
            load.start(episode_writers=1)
            await asyncio.sleep(1.0)
            reader = memory_service_pb2_grpc.MemoryServiceStub(ch)
            phases, fillers, seen = [], [], {}
            for leave in (1 << 20, 0):
                before = Counter(load.codes)
                fillers.append(await asyncio.to_thread(fill, disk, leave))
                health, reads = Counter[str](), Counter[str]()
                for _ in range(int(full_s / 0.1)):
                    reply = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest()
                    )
                    health[health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)] += 1
                    try:
                        some = next(iter(load.acked_memories))
                        await reader.GetMemory(
                            memory_service_pb2.GetMemoryRequest(id=some), metadata=MD, timeout=2
                        )
                        reads["OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        reads[error.code().name] += 1
                    await asyncio.sleep(0.1)
                refused = load.codes - before
                phase = "near-full" if leave else "full"
                seen |= {f"{phase} refused": refused, f"{phase} reads": reads}
                seen[f"{phase} health"] = health
                phases.append(
                    f"{'1 MB' if leave else '0 B'} free: refused "
                    + (", ".join(f"{n} {c}" for c, n in refused.most_common()) or "none")
                    + "; reads "
                    + ", ".join(f"{n} {c}" for c, n in reads.most_common())
                    + "; health "
                    + ", ".join(f"{n} {c}" for c, n in health.most_common())
                )
            for filler in fillers:
                filler.unlink()
            recovered = await wait_health(ch, health_pb2.HealthCheckResponse.SERVING, 60)
            acked_before = len(load.acked_memories)
            await asyncio.sleep(2.0)
            await load.finish()
            phases.append(
                f"space freed: SERVING after {recovered:.1f} s, "
                f"{len(load.acked_memories) - acked_before} memories stored in the next 2 s"
            )
            outcome = await load.outcome(
                "disk_full",
                "the embedded Redis's disk (a 64 MB tmpfs) filled to 1 MB free (margin 4 MB), "
                f"then to 0 B, {full_s:.1f} s each, under load; then freed",
                "; ".join(phases),
            )
            outcome.seen |= {phase: dict(counts) for phase, counts in seen.items()}
            return outcome


async def wait_answering(channel: grpc.aio.Channel, within_s: float) -> float:
    """Seconds until a server answers health checks with SERVING (none may be listening)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError("the server never answered SERVING")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie is gone too


async def server_kill(tmp: Path, before_s: float = 1.0, after_s: float = 1.0) -> Outcome:
    port, data = free_port(), tmp / "data"
    env = service_env(
        AETHER_PORT=str(port),
        AETHER_DATA_DIR=str(data),
        AETHER_INDEX_EPISODES="false",
        AETHER_MAINTENANCE_INTERVAL_S="3600",
    )
    server = await asyncio.to_thread(start_service, env, tmp / "server.log")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await wait_answering(ch, 120)
            load = Load(ch)
            load.start()
            await asyncio.sleep(before_s)
            server.kill()  # SIGKILL: no drain, no Redis shutdown
            await asyncio.to_thread(server.wait)
            orphan = int((data / "redis.pid").read_text())
            orphaned = _alive(orphan)
            server = await asyncio.to_thread(start_service, env, tmp / "server.log")
            recovered = await wait_answering(ch, 120)
            await asyncio.sleep(after_s)
            await load.finish()
            stopped = not _alive(orphan)
            return await load.outcome(
                "server_kill",
                "the server SIGKILLed under load (its Redis left running), started again",
                f"orphaned Redis {'left running' if orphaned else 'gone'} after the kill, "
                f"{'stopped' if stopped else 'STILL RUNNING'} by the new server; "
                f"SERVING {recovered:.1f} s after the restart began",
            )
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait)
