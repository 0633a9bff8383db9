"""Acked means kept: a stream cut at random points and resent loses nothing and stores nothing
twice."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest_asyncio
from aether.memory.v1 import episode_pb2, episode_service_pb2

from aether_memory.app import serve
from aether_memory.settings import Settings

from .conftest import Client, new_client
from .test_episode_service import episode, list_all

TOTAL = 10_000
BATCH = 50


@pytest_asyncio.fixture
async def unindexed(tmp_path: Path) -> AsyncIterator[Client]:
    """A service of its own without the embedding worker: 10,000 episodes would otherwise queue
    a minute of embedding work that slows every later test of the shared service."""
    settings = Settings(port=0, data_dir=tmp_path, redis_url=None, index_episodes=False)
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        yield new_client(channel)


async def test_ten_thousand_events_with_random_disconnects_store_each_exactly_once(
    unindexed: Client,
) -> None:
    client = unindexed
    rng = random.Random(7)
    events = [episode(f"r{i}") for i in range(TOTAL)]
    acked: dict[str, str] = {}  # event_id -> episode_id from its first ack
    duplicates_acked = 0
    reconnects = 0
    while len(acked) < TOTAL:
        pending = [e for e in events if e.event_id not in acked]
        # Resend a few already-acked events too, as a client unsure of its last ack would.
        resent = rng.sample(list(acked), k=min(len(acked), 20))
        batches = [pending[i : i + BATCH] for i in range(0, len(pending), BATCH)]
        cut_after = rng.randint(1, max(1, len(batches)))  # the connection drops here

        async def requests(
            batches: list[list[episode_pb2.Episode]] = batches,
            resent: list[str] = resent,
            cut_after: int = cut_after,
        ) -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
            yield episode_service_pb2.RecordEpisodesRequest(episodes=[episode(r) for r in resent])
            for batch in batches[:cut_after]:
                yield episode_service_pb2.RecordEpisodesRequest(episodes=batch)
            await asyncio.sleep(3600)  # keep the stream open until it is cut

        call = client.episodes.RecordEpisodes(requests(), metadata=client.md)
        responses = 0
        try:
            async for response in call:
                responses += 1
                for ack in response.acks:
                    assert ack.WhichOneof("result") == "written", ack
                    first = acked.setdefault(ack.event_id, ack.written.episode_id)
                    assert first == ack.written.episode_id  # a resend acks the original
                    duplicates_acked += ack.written.duplicate
                # Cut mid-stream: sometimes right after an ack, leaving sent batches unacked.
                if responses == 1 + cut_after or rng.random() < 0.05:
                    call.cancel()
                    break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.CANCELLED
        reconnects += 1
    stored = await list_all(client, page_size=1000)
    assert len(stored) == TOTAL
    assert {e.event_id for e in stored} == {e.event_id for e in events}
    assert {e.event_id: e.episode_id for e in stored} == acked
    assert reconnects > 3 and duplicates_acked > 0
