"""How the episode indexer takes its work: each tenant's episode stream is its own queue, found
through a due set the appends mark, read through a consumer group (stores/redis/episode_index.py).

Driven step by step against a real Redis of its own, with no service (whose indexer would take
the work first): lost marks, a dead indexer's episodes, per-tenant lag, retention, and the single
queue of earlier versions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from aether_memory.domain.episodes import EpisodeDoc, EpisodeEntry, Taken
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis import episode_index
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.episode_log import EPISODE_STREAMS, RedisEpisodeLog
from aether_memory.stores.redis.keys import (
    EPISODE_INDEX_DUE,
    EPISODE_TENANTS,
    LEGACY_EPISODE_INDEX_QUEUE,
    keys_of,
)
from tests.support.faults import start_redis
from tests.support.servers import free_port

DIMS = 4


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[aioredis.Redis]:
    data: Path = tmp_path_factory.mktemp("index-queue")
    port = free_port()
    process = await start_redis(data, port)
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        yield client
    finally:
        await client.aclose()
        process.terminate()
        process.wait(10)


@pytest_asyncio.fixture(loop_scope="session")
async def parts(
    redis: aioredis.Redis,
) -> AsyncIterator[tuple[RedisEpisodeLog, RedisEpisodeIndex]]:
    await redis.delete(EPISODE_INDEX_DUE)  # each test sees only its own marks
    index = RedisEpisodeIndex(
        redis, index_name=f"q-{uuid.uuid4().hex[:6]}", dimension=DIMS, batch=5
    )
    await index.ensure()
    yield RedisEpisodeLog(redis, max_len=10_000), index


def tenant() -> Tenant:
    return Tenant(f"t-{uuid.uuid4().hex[:10]}")


def entries(n: int, prefix: str = "e") -> list[EpisodeEntry]:
    return [EpisodeEntry(f"{prefix}-{i}", b"", "agent", "s", "tool_call", "ok") for i in range(n)]


async def index_all(index: RedisEpisodeIndex, taken: list[Taken]) -> None:
    """What the indexer does with what it took: a document per episode, then acknowledge."""
    docs = [
        EpisodeDoc(t.tenant, e.stream_id, e.agent_id, e.session_id, e.type, e.outcome, 0.0)
        for t in taken
        for e in t.entries
    ]
    vectors = np.ones((len(docs), DIMS), dtype=np.float32)
    await index.write(
        docs, vectors, {t.stream: [e.stream_id for e in t.entries] + t.gone for t in taken}
    )


async def test_an_append_marks_its_stream_due_and_lag_is_per_tenant(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], redis: aioredis.Redis
) -> None:
    log, index = parts
    busy, quiet = tenant(), tenant()
    await log.append(busy, entries(7))
    await log.append(quiet, entries(1))
    stream = EPISODE_STREAMS.stream_of(busy)
    assert await redis.sismember(EPISODE_TENANTS, busy.name)
    assert set(await index.due(block_ms=0)) == {stream, EPISODE_STREAMS.stream_of(quiet)}
    assert await index.due(block_ms=0) == []  # taken: off the due set

    first = await index.read("indexer-a", [stream])
    assert [len(t.entries) for t in first] == [5] and first[0].more  # a batch is 5 here
    await index_all(index, first)
    assert await index.lag(busy) == 2
    assert await index.lag(quiet) == 1  # another tenant's backlog is not this one's
    rest = await index.read("indexer-a", [stream])
    assert [len(t.entries) for t in rest] == [2] and not rest[0].more
    await index_all(index, rest)
    assert await index.lag(busy) == 0
    docs = [keys_of(busy).episode_doc(e.stream_id) for t in first + rest for e in t.entries]
    assert await redis.exists(*docs) == 7


async def test_a_stream_whose_mark_was_lost_is_found_by_the_sweep(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], redis: aioredis.Redis
) -> None:
    log, index = parts
    lost = tenant()
    await log.append(lost, entries(3))
    stream = EPISODE_STREAMS.stream_of(lost)
    assert await redis.zrem(EPISODE_INDEX_DUE, stream) == 1  # as if the appender died
    assert await index.due(block_ms=0) == []
    assert await index.sweep() >= 3
    assert stream in await index.due(block_ms=0)


async def test_episodes_a_dead_indexer_took_are_taken_over_once_idle(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, index = parts
    owner = tenant()
    await log.append(owner, entries(3))
    stream = EPISODE_STREAMS.stream_of(owner)
    dead = await index.read("indexer-that-dies", [stream])
    assert len(dead[0].entries) == 3  # delivered, never acknowledged
    assert await index.lag(owner) == 3  # pending still counts
    assert (await index.read("indexer-b", [stream]))[0].entries == []  # not idle long enough
    assert await index.sweep() >= 3  # the sweep keeps the stream due meanwhile
    monkeypatch.setattr(episode_index, "CLAIM_IDLE_MS", 0)
    taken = await index.read("indexer-b", [stream])
    assert [e.stream_id for e in taken[0].entries] == [e.stream_id for e in dead[0].entries]
    await index_all(index, taken)
    assert await index.lag(owner) == 0


async def test_a_failed_batch_is_taken_again_by_the_same_indexer(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex],
) -> None:
    log, index = parts
    owner = tenant()
    await log.append(owner, entries(2))
    stream = EPISODE_STREAMS.stream_of(owner)
    failed = await index.read("indexer-a", [stream])  # say its embedding failed
    await log.append(owner, entries(1, "later"))
    again = await index.read("indexer-a", [stream])
    ids = [e.stream_id for e in again[0].entries]
    assert ids[:2] == [e.stream_id for e in failed[0].entries] and len(ids) == 3


async def test_episodes_retention_removed_before_indexing_are_acknowledged_only(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], redis: aioredis.Redis
) -> None:
    log, index = parts
    owner = tenant()
    appended = await log.append(owner, entries(4))
    stream = EPISODE_STREAMS.stream_of(owner)
    taken = await index.read("indexer-a", [stream])  # two are trimmed while pending
    await log.trim_before(owner, appended[2].stream_id)
    again = await index.read("indexer-a", [stream])
    assert [e.stream_id for e in again[0].entries] == [a.stream_id for a in appended[2:]]
    assert sorted(again[0].gone) == sorted(a.stream_id for a in appended[:2])
    await index_all(index, again)
    assert await index.lag(owner) == 0
    assert len(taken[0].entries) == 4


async def test_the_single_queue_of_earlier_versions_is_replaced_on_start(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], redis: aioredis.Redis
) -> None:
    """An upgraded deployment: tenants' streams without the indexers' group, their episodes
    queued in `aether:epindex:queue`. Starting reads every stream from its first episode."""
    _, index = parts
    old = tenant()
    stream = EPISODE_STREAMS.stream_of(old)
    ids = [await redis.xadd(stream, {"b": b"", "a": "agent", "s": "", "t": "note", "o": "ok"})]
    await redis.sadd(EPISODE_TENANTS, old.name)
    await redis.xadd(LEGACY_EPISODE_INDEX_QUEUE, {"t": old.name, "i": ids[0]})
    await index.ensure()
    assert not await redis.exists(LEGACY_EPISODE_INDEX_QUEUE)
    assert stream in await index.due(block_ms=0)
    taken = await index.read("indexer-a", [stream])
    assert [e.stream_id.encode() for e in taken[0].entries] == ids


async def test_the_names_of_stopped_indexers_are_removed_once_idle_and_empty(
    parts: tuple[RedisEpisodeLog, RedisEpisodeIndex], redis: aioredis.Redis
) -> None:
    log, index = parts
    owner = tenant()
    await log.append(owner, entries(2))
    stream = EPISODE_STREAMS.stream_of(owner)
    await index_all(index, await index.read("stopped-after-its-batch", [stream]))
    await log.append(owner, entries(1, "later"))
    await index.read("stopped-mid-batch", [stream])  # holds one episode, unacknowledged

    def names(consumers: list[dict[str, object]]) -> set[str]:
        return {c["name"].decode() for c in consumers}  # type: ignore[attr-defined]

    before = names(await redis.xinfo_consumers(stream, episode_index.GROUP))
    assert before == {"stopped-after-its-batch", "stopped-mid-batch"}
    assert await index.forget_idle_consumers(idle_ms=3_600_000) == 0  # both read just now
    assert await index.forget_idle_consumers(idle_ms=0) >= 1
    # The one holding an episode stays: removing it would strand that episode.
    assert names(await redis.xinfo_consumers(stream, episode_index.GROUP)) == {"stopped-mid-batch"}
    assert await index.lag(owner) == 1
