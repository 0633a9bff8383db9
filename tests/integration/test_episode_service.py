"""EpisodeService end to end: the bidirectional record stream, subscriptions, list and search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from aether.memory.v1 import episode_pb2, episode_service_pb2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from aether_memory.app import Running
from aether_memory.stores.redis.keys import TenantKeys
from tests.support.waiting import until

from .conftest import Client, failure

TOOL = episode_pb2.EPISODE_TYPE_TOOL_CALL
LLM = episode_pb2.EPISODE_TYPE_LLM_CALL


def episode(
    event_id: str,
    agent: str = "agent-1",
    kind: int = TOOL,
    payload_text: str = "",
    **fields: object,
) -> episode_pb2.Episode:
    payload = struct_pb2.Struct()
    payload.update({"n": event_id, **({"text": payload_text} if payload_text else {})})
    return episode_pb2.Episode(
        event_id=event_id, agent_id=agent, type=kind, payload=payload, **fields
    )  # type: ignore[arg-type]


async def requests(
    *batches: list[episode_pb2.Episode],
) -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
    for i, batch in enumerate(batches):
        request = episode_service_pb2.RecordEpisodesRequest(episodes=batch)
        if i == 0:
            request.options.writer_id = "test-writer"
        yield request


async def record(
    client: Client, *batches: list[episode_pb2.Episode]
) -> list[episode_pb2.EpisodeAck]:
    acks: list[episode_pb2.EpisodeAck] = []
    async for response in client.episodes.RecordEpisodes(requests(*batches), metadata=client.md):
        acks += list(response.acks)
    return acks


async def list_all(client: Client, **fields: object) -> list[episode_pb2.Episode]:
    found: list[episode_pb2.Episode] = []
    token = ""
    while True:
        page = await client.episodes.ListEpisodes(
            episode_service_pb2.ListEpisodesRequest(page_token=token, **fields),  # type: ignore[arg-type]
            metadata=client.md,
        )
        found += list(page.episodes)
        token = page.next_page_token
        if not token:
            return found


async def test_stream_acks_every_episode_in_order_once_written(client: Client) -> None:
    batches = [[episode(f"e{b}-{i}") for i in range(5)] for b in range(3)]
    responses = []
    async for response in client.episodes.RecordEpisodes(requests(*batches), metadata=client.md):
        responses.append(response)
    assert len(responses) == 3  # one response per request
    acks = [a for r in responses for a in r.acks]
    assert [a.event_id for a in acks] == [e.event_id for b in batches for e in b]
    assert all(a.WhichOneof("result") == "written" and not a.written.duplicate for a in acks)
    cursors = [a.written.cursor for a in acks]
    assert cursors == sorted(cursors, key=lambda c: tuple(map(int, c.split("-"))))
    stored = await list_all(client)
    assert [e.event_id for e in stored] == [a.event_id for a in acks]
    assert [e.episode_id for e in stored] == [a.written.episode_id for a in acks]
    assert stored[0].payload["n"] == "e0-0" and stored[0].HasField("record_time")


async def test_concurrent_streams_keep_each_streams_order(client: Client) -> None:
    """Requests of one stream overlap (a window of appends) and streams share Redis round trips;
    each stream's episodes still land in the order sent, every one acked once."""

    async def stream(s: int) -> list[episode_pb2.EpisodeAck]:
        batches = [[episode(f"s{s}-{b}-{i}") for i in range(7)] for b in range(25)]
        return await record(client, *batches)

    acked = await asyncio.gather(*(stream(s) for s in range(4)))
    stored = await list_all(client)
    assert len(stored) == 4 * 25 * 7
    for s, acks in enumerate(acked):
        sent = [f"s{s}-{b}-{i}" for b in range(25) for i in range(7)]
        assert [a.event_id for a in acks] == sent
        assert [e.event_id for e in stored if e.event_id.startswith(f"s{s}-")] == sent
        assert all(not a.written.duplicate for a in acks)


async def test_bad_episode_is_nacked_and_neighbours_are_stored(client: Client) -> None:
    bad_type = episode("bad-1", kind=0)
    no_agent = episode("bad-2", agent="")
    acks = await record(
        client, [episode("ok-1"), bad_type, episode("ok-2"), no_agent, episode("ok-3")]
    )
    results = [a.WhichOneof("result") for a in acks]
    assert results == ["written", "error", "written", "error", "written"]
    assert acks[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "episodes[1].type" in acks[1].error.message
    assert "episodes[3].agent_id" in acks[3].error.message
    assert [e.event_id for e in await list_all(client)] == ["ok-1", "ok-2", "ok-3"]


async def test_resent_event_id_acks_original_episode_without_storing_twice(client: Client) -> None:
    first = await record(client, [episode("once-1"), episode("once-2")])
    # A reconnect resends everything, plus one new event.
    again = await record(client, [episode("once-1"), episode("once-2"), episode("once-3")])
    assert [a.written.duplicate for a in again] == [True, True, False]
    assert [a.written.episode_id for a in again[:2]] == [a.written.episode_id for a in first]
    assert [e.event_id for e in await list_all(client)] == ["once-1", "once-2", "once-3"]


async def test_duplicate_event_ids_within_one_request_store_once(client: Client) -> None:
    acks = await record(client, [episode("dup"), episode("dup")])
    assert [a.written.duplicate for a in acks] == [False, True]
    assert acks[0].written.episode_id == acks[1].written.episode_id
    assert len(await list_all(client)) == 1


async def test_options_default_agent_and_session(client: Client) -> None:
    async def one() -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
        yield episode_service_pb2.RecordEpisodesRequest(
            options=episode_service_pb2.RecordEpisodesOptions(
                default_agent_id="bot", default_session_id="s9"
            ),
            episodes=[episode("d1", agent="")],
        )

    async for _ in client.episodes.RecordEpisodes(one(), metadata=client.md):
        pass
    (stored,) = await list_all(client)
    assert (stored.agent_id, stored.session_id) == ("bot", "s9")


async def test_changed_options_end_the_stream_with_invalid_argument(client: Client) -> None:
    async def changing() -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
        yield episode_service_pb2.RecordEpisodesRequest(
            options=episode_service_pb2.RecordEpisodesOptions(writer_id="a"),
            episodes=[episode("c1")],
        )
        yield episode_service_pb2.RecordEpisodesRequest(
            options=episode_service_pb2.RecordEpisodesOptions(writer_id="b"),
            episodes=[episode("c2")],
        )

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in client.episodes.RecordEpisodes(changing(), metadata=client.md):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [e.event_id for e in await list_all(client)] == ["c1"]


async def test_oversized_request_ends_the_stream_with_resource_exhausted(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await record(client, [episode(f"big-{i}") for i in range(501)])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await list_all(client) == []


async def test_unary_record_returns_the_stored_episode(client: Client) -> None:
    request = episode_service_pb2.RecordEpisodeRequest(
        episode=episode("u1", latency=duration_pb2.Duration(nanos=5000))
    )
    first = await client.episodes.RecordEpisode(request, metadata=client.md)
    second = await client.episodes.RecordEpisode(request, metadata=client.md)
    assert not first.duplicate and second.duplicate
    assert second.episode.episode_id == first.episode.episode_id
    assert first.episode.latency.nanos == 5000 and first.episode.cursor == first.episode.episode_id


async def _collect(
    client: Client, request: episode_service_pb2.SubscribeEpisodesRequest, count: int
) -> list[episode_service_pb2.SubscribeEpisodesResponse]:
    got: list[episode_service_pb2.SubscribeEpisodesResponse] = []
    call = client.episodes.SubscribeEpisodes(request, metadata=client.md)
    async for response in call:
        got.append(response)
        if len(got) == count:
            call.cancel()
            break
    return got


async def test_subscriber_resuming_from_its_cursor_sees_every_event_once(client: Client) -> None:
    await record(client, [episode("before")])
    start = (await list_all(client))[0].cursor
    await record(client, [episode(f"live-{i}") for i in range(6)])
    request = episode_service_pb2.SubscribeEpisodesRequest(after_cursor=start)
    first = await _collect(client, request, 3)
    resumed = await _collect(
        client, episode_service_pb2.SubscribeEpisodesRequest(after_cursor=first[-1].cursor), 3
    )
    seen = [r.episode.event_id for r in first + resumed]
    assert seen == [f"live-{i}" for i in range(6)]


async def test_batched_subscription_delivers_each_event_once_in_order(client: Client) -> None:
    await record(client, [episode("start")])
    start = (await list_all(client))[0].cursor
    await record(client, [episode(f"b{i}", agent="a" if i % 3 else "b") for i in range(30)])
    request = episode_service_pb2.SubscribeEpisodesRequest(
        after_cursor=start, max_batch=4, filter=episode_pb2.EpisodeFilter(agent_id="a")
    )
    got: list[episode_service_pb2.SubscribeEpisodesResponse] = []
    call = client.episodes.SubscribeEpisodes(request, metadata=client.md)
    async for response in call:
        got.append(response)
        if sum(len(r.batch.episodes) for r in got) >= 20:
            call.cancel()
            break
    assert all(r.WhichOneof("event") == "batch" and len(r.batch.episodes) <= 4 for r in got)
    assert len(got) >= 5  # 20 episodes in messages of at most 4
    delivered = [e for r in got for e in r.batch.episodes]
    assert [e.event_id for e in delivered] == [f"b{i}" for i in range(30) if i % 3]
    assert all(r.cursor == r.batch.episodes[-1].cursor for r in got)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in client.episodes.SubscribeEpisodes(
            episode_service_pb2.SubscribeEpisodesRequest(max_batch=501), metadata=client.md
        ):
            pass
    assert failure(info.value).fields == ["max_batch"]


async def test_subscription_from_now_delivers_live_events_with_filters(
    service: Running, client: Client
) -> None:
    await record(client, [episode("old")])
    request = episode_service_pb2.SubscribeEpisodesRequest(
        filter=episode_pb2.EpisodeFilter(agent_id="watched", types=[LLM])
    )
    task = asyncio.create_task(_collect(client, request, 2))

    # The subscription starts from "now": what is recorded once it reads live reaches it.
    def live() -> bool:
        reader = service.tails.readers.get(client.tenant)
        return reader is not None and bool(reader.subscribers)

    await until(live, "the subscription reads live")
    await record(
        client, [episode("x1", agent="other", kind=LLM), episode("x2", agent="watched", kind=TOOL)]
    )
    await record(
        client, [episode("x3", agent="watched", kind=LLM), episode("x4", agent="watched", kind=LLM)]
    )
    got = await asyncio.wait_for(task, 10)
    assert [r.episode.event_id for r in got] == ["x3", "x4"]


async def test_replay_from_a_time_then_heartbeat(client: Client) -> None:
    await record(client, [episode("early")])
    await asyncio.sleep(0.05)
    cut = timestamp_pb2.Timestamp()
    cut.GetCurrentTime()
    await asyncio.sleep(0.05)
    await record(client, [episode("late")])
    request = episode_service_pb2.SubscribeEpisodesRequest(
        start_time=cut, heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    got = await asyncio.wait_for(_collect(client, request, 2), 10)
    assert got[0].episode.event_id == "late"
    assert got[1].WhichOneof("event") == "heartbeat" and got[1].cursor == got[0].cursor


async def test_trimmed_cursor_is_out_of_range_with_the_oldest_cursor(
    client: Client, service: Running
) -> None:
    acks = await record(client, [episode(f"t{i}") for i in range(10)])
    await service.redis.xtrim(TenantKeys(client.tenant).episodes(), maxlen=3, approximate=False)
    call = client.episodes.SubscribeEpisodes(
        episode_service_pb2.SubscribeEpisodesRequest(after_cursor=acks[0].written.cursor),
        metadata=client.md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    f = failure(info.value)
    assert (f.code, f.reason) == (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")


async def test_list_pages_with_filters_and_time_range(client: Client) -> None:
    await record(client, [episode(f"l{i}", agent="a" if i % 2 else "b") for i in range(9)])
    only_a = await list_all(client, filter=episode_pb2.EpisodeFilter(agent_id="a"), page_size=2)
    assert [e.event_id for e in only_a] == ["l1", "l3", "l5", "l7"]
    future = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    assert await list_all(client, start_time=future) == []


async def test_search_finds_related_episodes_once_indexed(client: Client) -> None:
    await record(
        client,
        [
            episode("s1", text="Fetched the weather forecast for Lisbon: sunny, 24 degrees"),
            episode("s2", text="Database migration failed with a foreign key violation"),
            episode("s3", text="Sent a birthday greeting email to Ana"),
        ],
    )
    deadline = time.monotonic() + 30
    while True:
        response = await client.episodes.SearchEpisodes(
            episode_service_pb2.SearchEpisodesRequest(query="what was the temperature outside?"),
            metadata=client.md,
        )
        if (response.index_lag == 0 and len(response.results) == 3) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert response.index_lag == 0
    assert response.results[0].episode.event_id == "s1"
    errors = await client.episodes.SearchEpisodes(
        episode_service_pb2.SearchEpisodesRequest(query="schema error in the db"),
        metadata=client.md,
    )
    assert errors.results[0].episode.event_id == "s2"
    assert all(-1.0 <= r.similarity <= 1.0 for r in errors.results)


async def _indexed(client: Client, count: int) -> list[str]:
    """Event ids SearchEpisodes returns once the index caught up with `count` episodes."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.episodes.SearchEpisodes(
            episode_service_pb2.SearchEpisodesRequest(query="web search", page_size=100),
            metadata=client.md,
        )
        if (response.index_lag == 0 and len(response.results) >= count) or (
            time.monotonic() > deadline
        ):
            return sorted(r.episode.event_id for r in response.results)
        await asyncio.sleep(0.2)


async def test_retention_trims_the_stream_and_the_index_together(
    client: Client, service: Running
) -> None:
    await record(client, [episode(f"r{i}", text=f"web search number {i}") for i in range(8)])
    assert len(await _indexed(client, 8)) == 8
    keys = TenantKeys(client.tenant)

    # By count: the length cap trimmed the stream; the next tick drops those documents too.
    await service.redis.xtrim(keys.episodes(), maxlen=3, approximate=False)
    await service.maintenance.tick()
    assert [e.event_id for e in await list_all(client)] == ["r5", "r6", "r7"]
    assert await _indexed(client, 3) == ["r5", "r6", "r7"]

    # By age: a tick 31 days on (retention 30 days) empties both.
    report = await service.maintenance.tick(now=time.time() + 31 * 24 * 3600)
    assert report.episodes_trimmed >= 3
    assert await list_all(client) == []
    assert await _indexed(client, 0) == []


async def test_a_page_of_large_episodes_stops_at_what_one_response_carries(
    client: Client,
) -> None:
    big = "y" * 30_000
    batches = [[episode(f"big-{b}-{i}", payload_text=big) for i in range(100)] for b in range(3)]
    acks = await record(client, *batches)
    assert len(acks) == 300
    first = await client.episodes.ListEpisodes(
        episode_service_pb2.ListEpisodesRequest(page_size=1000), metadata=client.md
    )
    assert 0 < len(first.episodes) < 300 and first.next_page_token  # 9 MB: not one page
    assert first.ByteSize() <= 4 * 1024 * 1024
    assert [e.event_id for e in await list_all(client, page_size=1000)] == [
        a.event_id for a in acks
    ]
