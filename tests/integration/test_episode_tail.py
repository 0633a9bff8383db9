"""The shared live tail against the real Redis: one reader per tenant, exactly-once delivery for
subscribers that join at different points, and detachment of a subscriber that stops reading."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aether.memory.v1 import episode_pb2

from aether_memory.app import Running
from aether_memory.domain.episodes import EpisodeEntry, StoredEntry
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis import episode_tail
from aether_memory.stores.redis.episode_log import RedisEpisodeLog
from aether_memory.stores.redis.episode_tail import EpisodeTails
from tests.support.waiting import until


def entries(prefix: str, count: int) -> list[EpisodeEntry]:
    return [
        EpisodeEntry(
            f"{prefix}-{uuid.uuid4().hex[:6]}-{i}",
            episode_pb2.Episode(name=f"{prefix} {i}").SerializeToString(),
            "agent",
            "",
            "tool_call",
            "success",
        )
        for i in range(count)
    ]


def names(batch: list[StoredEntry]) -> list[str]:
    return [episode_pb2.Episode.FromString(e.body).name for e in batch]


async def collect(tail: AsyncIterator[list[StoredEntry]], want: int, seen: list[str]) -> None:
    async for batch in tail:
        seen += names(batch)
        if len(seen) >= want:
            return


@pytest.fixture
def tenant() -> Tenant:
    return Tenant(f"tail-{uuid.uuid4().hex[:8]}")


async def test_subscribers_joining_at_different_points_see_every_entry_once_in_order(
    service: Running, tenant: Tenant
) -> None:
    log = RedisEpisodeLog(service.redis, max_len=100_000)
    tails = EpisodeTails(log)
    first = await log.append(tenant, entries("pre", 5))
    start = first[-1].stream_id  # everything after this must reach every subscriber
    seen: list[list[str]] = [[] for _ in range(6)]
    total = 2_000
    tasks = [asyncio.create_task(collect(tails.tail(tenant, start), total, seen[0]))]

    async def write() -> None:
        for n in range(40):
            await log.append(tenant, entries(f"w{n}", 50))
            if n % 8 == 0:  # later subscribers join, from the same start, while writes go on
                i = len(tasks)
                if i < len(seen):
                    tasks.append(
                        asyncio.create_task(collect(tails.tail(tenant, start), total, seen[i]))
                    )
            await asyncio.sleep(0.005)

    await write()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    expected = [f"w{n} {i}" for n in range(40) for i in range(50)]
    assert len(tasks) == len(seen)
    for got in seen:
        assert got == expected
    await tails.aclose()


async def test_many_live_subscribers_share_one_reader(service: Running, tenant: Tenant) -> None:
    log = RedisEpisodeLog(service.redis, max_len=100_000)
    tails = EpisodeTails(log)
    start = (await log.append(tenant, entries("pre", 1)))[0].stream_id
    seen: list[list[str]] = [[] for _ in range(20)]
    tasks = [asyncio.create_task(collect(tails.tail(tenant, start), 300, got)) for got in seen]

    def attached() -> int:
        reader = tails.readers.get(tenant.name)
        return len(reader.subscribers) if reader is not None else 0

    await until(lambda: attached() == 20, "all 20 caught up and attached")
    assert len(tails.readers) == 1
    for n in range(3):
        await log.append(tenant, entries(f"live{n}", 100))
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert all(got == seen[0] for got in seen) and len(seen[0]) == 300
    # The last subscriber left: the reader ends after its next wait.
    await until(lambda: not tails.readers, "the reader without subscribers ended")


async def test_a_subscriber_that_stops_reading_is_detached_and_still_misses_nothing(
    service: Running, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(episode_tail, "MAX_QUEUED", 3)
    monkeypatch.setattr(episode_tail, "READ_COUNT", 10)
    log = RedisEpisodeLog(service.redis, max_len=100_000)
    tails = EpisodeTails(log)
    start = (await log.append(tenant, entries("pre", 1)))[0].stream_id
    fast: list[str] = []
    fast_task = asyncio.create_task(collect(tails.tail(tenant, start), 410, fast))
    slow_tail = tails.tail(tenant, start)
    slow: list[str] = names(await anext(slow_tail))  # caught up: attached, then stops reading

    def subscribers() -> int:
        reader = tails.readers.get(tenant.name)
        return len(reader.subscribers) if reader is not None else 0

    await until(lambda: subscribers() == 2, "both subscribers attached")
    reader = tails.readers[tenant.name]
    for n in range(40):
        await log.append(tenant, entries(f"x{n}", 10))
        await asyncio.sleep(0.01)  # many small reads: more batches than the slow one may hold
    await until(lambda: len(fast) >= 400, "the fast subscriber got every entry")
    assert len(fast) == 400
    assert len(reader.subscribers) == 1  # the stalled one was detached; the fast one is served
    await log.append(tenant, entries("y", 10))
    await asyncio.wait_for(fast_task, 30)
    async for batch in slow_tail:  # it resumes: drains what it held, then catches up alone
        slow += names(batch)
        if len(slow) >= 410:
            break
    expected = [f"x{n} {i}" for n in range(40) for i in range(10)] + [f"y {i}" for i in range(10)]
    assert fast == expected and slow == expected
    await slow_tail.aclose()
    await tails.aclose()
