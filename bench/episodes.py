"""RecordEpisodes ingestion against raw pipelined XADD on the same Redis, in one run.

The bench starts a Redis (the embedded recipe) and the service in its own process pointed at it,
then drives RecordEpisodes from this process with 1 and 16 concurrent streams (requests of
`--batch` episodes, at most `--window` requests in flight per stream), and measures events/s
acked and per-request ack latency. The baseline is Python (redis-py asyncio) sending pipelined
XADDs of the same serialized episodes to the same Redis with the same concurrency.

Two more runs:

- paced: 16 streams sending at a fixed total rate (`--rate`, default 20,000 events/s) in small
  requests, so ack latency is the service's and not the queue a closed-loop client builds;
- subscribers: the 16-stream closed-loop run again while `--subscribers` live SubscribeEpisodes
  tail the same tenant from another process, with the events/s each of them received.

    python -m bench.episodes [--seconds 5] [--batch 100] [--index] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import episode_pb2, episode_service_pb2, episode_service_pb2_grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.stores.redis.embedded import embedded_redis
from bench.output import publish
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def make_episode(stream: int, n: int) -> episode_pb2.Episode:
    payload = struct_pb2.Struct()
    payload.update({"tool": "web_search", "query": f"weather in city {n % 50}", "results": 3})
    return episode_pb2.Episode(
        event_id=f"s{stream}-{n}-{uuid.uuid4().hex[:8]}",
        agent_id=f"agent-{stream % 4}",
        session_id=f"session-{stream}",
        type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
        name="web_search",
        outcome=episode_pb2.EPISODE_OUTCOME_SUCCESS,
        payload=payload,
    )


def pct(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50_ms": 0.0, "p99_ms": 0.0}
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


async def record_streams(
    target: str, streams: int, batch: int, window: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    acked = 0
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def one(stream: int) -> None:
            nonlocal acked, errors
            sent: asyncio.Queue[float] = asyncio.Queue()
            slots = asyncio.Semaphore(window)

            async def requests() -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
                n = 0
                while time.perf_counter() < stop:
                    await slots.acquire()
                    episodes = [make_episode(stream, n + i) for i in range(batch)]
                    n += batch
                    await sent.put(time.perf_counter())
                    yield episode_service_pb2.RecordEpisodesRequest(episodes=episodes)

            async for response in stub.RecordEpisodes(
                requests(), metadata=(("aether-tenant", "bench"),)
            ):
                latencies.append(time.perf_counter() - await sent.get())
                slots.release()
                for ack in response.acks:
                    if ack.WhichOneof("result") == "written":
                        acked += 1
                    else:
                        errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one(s) for s in range(streams)))
        elapsed = time.perf_counter() - start
    return {
        "events_per_s": acked / elapsed,
        "acked": acked,
        "errors": errors,
        "ack_latency": pct(latencies),
    }


async def paced_streams(
    target: str, streams: int, batch: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Each stream sends one request of `batch` episodes every streams * batch / rate seconds."""
    latencies: list[float] = []
    acked = 0
    late = 0
    interval = streams * batch / rate
    async with grpc.aio.insecure_channel(target) as channel:
        stub = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        began = time.perf_counter()
        stop = began + seconds

        async def one(stream: int) -> None:
            nonlocal acked, late
            sent: asyncio.Queue[float] = asyncio.Queue()

            async def requests() -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
                nonlocal late
                # Streams start spread over one interval, so requests do not arrive in bursts.
                due = began + interval * stream / streams
                n = 0
                while due < stop:
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        late += 1
                    episodes = [make_episode(stream, n + i) for i in range(batch)]
                    n += batch
                    await sent.put(time.perf_counter())
                    yield episode_service_pb2.RecordEpisodesRequest(episodes=episodes)
                    due += interval

            async for response in stub.RecordEpisodes(
                requests(), metadata=(("aether-tenant", "bench"),)
            ):
                latencies.append(time.perf_counter() - await sent.get())
                acked += sum(ack.WhichOneof("result") == "written" for ack in response.acks)

        await asyncio.gather(*(one(s) for s in range(streams)))
        elapsed = time.perf_counter() - began
    return {
        "target_events_per_s": rate,
        "events_per_s": acked / elapsed,
        "acked": acked,
        "late_sends": late,
        "ack_latency": pct(latencies),
    }


async def _subscribe(
    target: str, count: int, seconds: float, by_session: bool, max_batch: int
) -> list[int]:
    received = [0] * count
    async with grpc.aio.insecure_channel(target) as channel:
        stub = episode_service_pb2_grpc.EpisodeServiceStub(channel)

        async def one(i: int) -> None:
            request = episode_service_pb2.SubscribeEpisodesRequest(max_batch=max_batch)
            if by_session:  # the 16 writing streams write one session each
                request.filter.session_id = f"session-{i % 16}"
            call = stub.SubscribeEpisodes(
                request,
                metadata=(("aether-tenant", "bench"),),
            )
            with contextlib.suppress(asyncio.CancelledError):
                async for response in call:
                    if response.HasField("episode"):
                        received[i] += 1
                    received[i] += len(response.batch.episodes)
            call.cancel()

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def _subscriber_process(
    target: str, count: int, seconds: float, by_session: bool, max_batch: int, out: Any
) -> None:
    out.send(asyncio.run(_subscribe(target, count, seconds, by_session, max_batch)))


async def with_subscribers(
    target: str,
    subscribers: int,
    by_session: bool,
    max_batch: int,
    batch: int,
    window: int,
    seconds: float,
) -> dict[str, Any]:
    """The 16-stream closed-loop run while `subscribers` tail the tenant from another process."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    watch = seconds + 3.0
    process = context.Process(
        target=_subscriber_process, args=(target, subscribers, watch, by_session, max_batch, sender)
    )
    process.start()
    await asyncio.sleep(2.0)  # the subscribers connect and reach the live tail first
    recorded = await record_streams(target, 16, batch, window, seconds)
    received: list[int] = await asyncio.to_thread(receiver.recv)
    await asyncio.to_thread(process.join)
    return {
        "subscribers": subscribers,
        "filter": "one session each" if by_session else "none",
        "max_batch": max_batch,
        "record_episodes": recorded,
        "received_min": min(received),
        "received_max": max(received),
        "delivered_per_s": sum(received) / seconds,
    }


async def raw_xadd(url: str, streams: int, batch: int, seconds: float) -> dict[str, Any]:
    client = aioredis.from_url(url)
    body = make_episode(0, 0).SerializeToString()
    added = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def one(stream: int) -> None:
        nonlocal added
        while time.perf_counter() < stop:
            began = time.perf_counter()
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(batch):
                    pipe.xadd(
                        f"rawbench:{stream % 4}",
                        {"b": body, "a": "agent", "s": "s", "t": "tool_call", "o": "success"},
                    )
                await pipe.execute()
            latencies.append(time.perf_counter() - began)
            added += batch

    start = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(streams)))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return {"events_per_s": added / elapsed, "batch_latency": pct(latencies)}


@contextlib.asynccontextmanager
async def service(
    redis_url: str, index: bool, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """The service in a process of its own on `redis_url` (`env`: more settings)."""
    port = free_port()
    env = {
        **os.environ,
        "AETHER_REDIS_URL": redis_url,
        "AETHER_PORT": str(port),
        "AETHER_INDEX_EPISODES": "true" if index else "false",
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aether_memory",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    target = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(600):
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        yield target
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "batch": args.batch,
        "window": args.window,
        "seconds": args.seconds,
        "index_episodes": args.index,
        "fsync": args.fsync,
        "paced_batch": args.paced_batch,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        redis = embedded_redis(Path(tmp), fsync=args.fsync)
        async with redis as url, service(url, args.index) as target:
            await record_streams(target, 1, args.batch, args.window, 1.0)  # warm-up
            for streams in (1, 16):
                raw = await raw_xadd(url, streams, args.batch, args.seconds)
                recorded = await record_streams(
                    target, streams, args.batch, args.window, args.seconds
                )
                results["runs"].append(
                    {
                        "streams": streams,
                        "raw_xadd": raw,
                        "record_episodes": recorded,
                        "ratio": recorded["events_per_s"] / raw["events_per_s"],
                    }
                )
            probe = aioredis.from_url(url)
            rewrites = (await probe.info("persistence"))["aof_rewrites"]
            results["paced"] = await paced_streams(
                target, 16, args.paced_batch, args.rate, args.seconds
            )
            # AOF rewrites (a fork and a full write of the data set) stall fsync on 2 cores.
            rewrites = (await probe.info("persistence"))["aof_rewrites"] - rewrites
            results["paced"]["aof_rewrites_during"] = rewrites
            await probe.aclose()
            results["subscribed"] = [
                await with_subscribers(target, n, by, mb, args.batch, args.window, args.seconds)
                for n in args.subscribers
                for by in (False, True)
                for mb in (0, 100)
            ]
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "# RecordEpisodes ingestion",
        "",
        f"{os.cpu_count()} cores; requests of {results['batch']} episodes, at most "
        f"{results['window']} requests in flight per stream; {results['seconds']} s per run; "
        f"episode indexing worker {'on' if results['index_episodes'] else 'off'}; Redis "
        f"appendfsync {results.get('fsync', 'everysec')}. Service and "
        "Redis in their own processes; client and raw baseline in this one.",
        "",
        "| streams | RecordEpisodes events/s | ack p50 | ack p99 | raw XADD events/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        rec, raw = run["record_episodes"], run["raw_xadd"]
        lines.append(
            f"| {run['streams']} | {rec['events_per_s']:.0f} "
            f"| {rec['ack_latency']['p50_ms']:.1f} ms "
            f"| {rec['ack_latency']['p99_ms']:.1f} ms | {raw['events_per_s']:.0f} "
            f"| {run['ratio']:.0%} |"
        )
    paced = results.get("paced")
    if paced:
        lines += [
            "",
            f"Paced: 16 streams at a total of {paced['target_events_per_s']:.0f} events/s in "
            f"requests of {results['paced_batch']}: {paced['events_per_s']:.0f} events/s acked, "
            f"ack p50 {paced['ack_latency']['p50_ms']:.1f} ms, "
            f"p99 {paced['ack_latency']['p99_ms']:.1f} ms ({paced['late_sends']} requests sent "
            f"late by the client; {paced['aof_rewrites_during']} AOF rewrites during the run).",
        ]
    if results.get("subscribed"):
        base = results["runs"][-1]["record_episodes"]["events_per_s"]
        lines += [
            "",
            "Live subscribers (in another process) tailing the tenant during the 16-stream run:",
            "",
            "| subscribers | filter | max_batch | RecordEpisodes events/s | vs none | ack p99 "
            "| events each subscriber received (min-max) | delivered events/s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in results["subscribed"]:
            rec = run["record_episodes"]
            lines.append(
                f"| {run['subscribers']} | {run['filter']} | {run['max_batch']} "
                f"| {rec['events_per_s']:.0f} "
                f"| {rec['events_per_s'] / base:.0%} | {rec['ack_latency']['p99_ms']:.1f} ms "
                f"| {run['received_min']}-{run['received_max']} "
                f"| {run['delivered_per_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--index", action="store_true", help="keep the embedding worker on")
    parser.add_argument("--rate", type=float, default=20000.0, help="paced run: events/s")
    parser.add_argument("--paced-batch", type=int, default=50, help="paced run: request size")
    parser.add_argument(
        "--subscribers",
        type=lambda text: [int(n) for n in text.split(",") if n],
        default=[16, 64],
        help="comma-separated subscriber counts",
    )
    parser.add_argument(
        "--fsync", choices=["always", "everysec"], default="always", help="Redis appendfsync"
    )
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    name = f"episodes-b{args.batch}{'-indexed' if args.index else ''}"
    name += "" if args.fsync == "always" else f"-{args.fsync}"
    publish(name, results, report(results))
    print(report(results))


if __name__ == "__main__":
    main()
