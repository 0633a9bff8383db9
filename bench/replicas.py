"""One service process against two on the same Redis (`serve --workers 2`), in one run.

Issue 21 asks what service replicas buy. On one machine the replicas are `--workers` processes
sharing the port (SO_REUSEPORT: the kernel spreads connections, so each caller here has its own
channel). The bench seeds N memories once (precomputed vectors), then alternates rounds of 1
and 2 workers: per round it starts the service, warms it up, and drives 16 closed-loop callers
from another process, first SearchMemories (a new query text each call, so the embedding cache
does not answer), then StoreMemory (new content each call: embedding-bound). Baseline in the
same run: the raw ONNX embed ceiling of the pack at batch 32 on the same texts.

    python -m bench.replicas [--memories 10000] [--rounds 3] [--seconds 15]
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
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aether_memory.stores.redis.embedded import embedded_redis
from bench.episodes import service
from bench.load import TENANT, embed_ceiling, query_text, seed, store_text
from bench.output import publish
from tests.support.servers import free_port

CALLERS = 16
S = memory_service_pb2


@contextlib.asynccontextmanager
async def workers(
    redis_url: str, count: int, settings: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """`aether-memory serve` with `count` workers on a fixed port (more `settings` as AETHER_*
    variables); its address once serving."""
    port = free_port()
    env = {**os.environ, "AETHER_REDIS_URL": redis_url, "AETHER_PORT": str(port)}
    env["AETHER_INDEX_EPISODES"] = "false"
    env |= settings or {}
    args = [sys.executable, "-m", "aether_memory", "serve"]
    if count > 1:
        args += ["--workers", str(count)]
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    target = f"127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                async with grpc.aio.insecure_channel(target) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1
                    )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0 * count)  # every worker loads its model, not only the first
        yield target
    finally:
        process.terminate()
        await process.wait()


async def _drive(
    target: str, method: str, seconds: float, first: int, tenants: Sequence[str]
) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller(n: int) -> None:
        metadata = (("aether-tenant", tenants[n % len(tenants)]),)  # the callers take turns
        async with grpc.aio.insecure_channel(target) as channel:  # its own connection
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            i = first + n * 1_000_000
            while time.perf_counter() < deadline:
                i += 1
                started = time.perf_counter()
                if method == "search":
                    await stub.SearchMemories(
                        S.SearchMemoriesRequest(agent_id="bench", query=query_text(i)),
                        metadata=metadata,
                    )
                else:
                    await stub.StoreMemory(
                        S.StoreMemoryRequest(
                            memory=memory_pb2.Memory(agent_id="bench-store", content=store_text(i))
                        ),
                        metadata=metadata,
                    )
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "calls_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        "calls": len(latencies),
    }


def _load(
    target: str, method: str, seconds: float, first: int, tenants: Sequence[str], out: Any
) -> None:
    out.put(asyncio.run(_drive(target, method, seconds, first, tenants)))


def load(
    target: str, method: str, seconds: float, first: int, tenants: Sequence[str] = (TENANT,)
) -> dict[str, Any]:
    """The callers in a process of their own, as a client fleet would be; caller n speaks for
    tenants[n % len(tenants)]."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    args = (target, method, seconds, first, list(tenants), out)
    process = context.Process(target=_load, args=args)
    process.start()
    result: dict[str, Any] = out.get()
    process.join()
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), fsync="everysec") as redis_url:
            async with service(redis_url, index=False) as target:
                seeded = await seed(target, args.memories, 384)
            for number in range(args.rounds):
                for count in (1, 2) if number % 2 == 0 else (2, 1):
                    async with workers(redis_url, count) as target:
                        await asyncio.to_thread(load, target, "search", 3.0, 0)  # warm-up
                        first = (number * 2 + count) * 100_000_000
                        search = await asyncio.to_thread(
                            load, target, "search", args.seconds, first
                        )
                        store = await asyncio.to_thread(load, target, "store", args.seconds, first)
                    rounds.append({"workers": count, "search": search, "store": store})
                    print(rounds[-1], flush=True)
    ceiling = await asyncio.to_thread(embed_ceiling, [store_text(n) for n in range(512)])
    return {
        "memories": args.memories,
        "seed_per_s": seeded,
        "seconds": args.seconds,
        "callers": CALLERS,
        "rounds": rounds,
        "embed_ceiling_texts_per_s": ceiling,
    }


def summary(result: dict[str, Any], workers_: int, method: str, key: str) -> float:
    return statistics.median(r[method][key] for r in result["rounds"] if r["workers"] == workers_)


def report(result: dict[str, Any]) -> str:
    lines = [
        "# One service process against two (`serve --workers 2`)",
        "",
        f"{os.cpu_count()} cores; {result['memories']:,} memories of one agent (384 dims); "
        f"{result['callers']} closed-loop callers in another process, each on its own "
        f"connection; {result['seconds']:.0f} s per measure; rounds alternate 1 and 2 workers "
        f"({len(result['rounds']) // 2} each). Medians over rounds. Produced by "
        "`python -m bench.replicas`.",
        "",
        "| workers | search calls/s | p50 | p99 | store calls/s | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in (1, 2):

        def m(method: str, key: str, c: int = count) -> float:
            return summary(result, c, method, key)

        lines.append(
            f"| {count} | {m('search', 'calls_per_s'):.0f} | {m('search', 'p50_ms'):.1f} ms | "
            f"{m('search', 'p99_ms'):.1f} ms | {m('store', 'calls_per_s'):.0f} | "
            f"{m('store', 'p50_ms'):.1f} ms | {m('store', 'p99_ms'):.1f} ms |"
        )
    search = summary(result, 2, "search", "calls_per_s") / summary(
        result, 1, "search", "calls_per_s"
    )
    store = summary(result, 2, "store", "calls_per_s") / summary(result, 1, "store", "calls_per_s")
    ceiling = result["embed_ceiling_texts_per_s"]
    lines += [
        "",
        f"Two workers against one: search {search:.2f}x, store {store:.2f}x. Raw embed ceiling "
        f"in the same run: {ceiling:.0f} store texts/s at batch 32; store reaches "
        f"{summary(result, 1, 'store', 'calls_per_s') / ceiling:.0%} of it with one worker and "
        f"{summary(result, 2, 'store', 'calls_per_s') / ceiling:.0%} with two.",
        "",
        "Every round, its two measures taken back to back (the machine's speed drifts between "
        "rounds, so the ratio within a round is the comparison to trust):",
        "",
        "| round | search 1 → 2 workers | ratio | store 1 → 2 workers | ratio |",
        "|---|---|---|---|---|",
    ]
    for n, (a, b) in enumerate(zip(result["rounds"][::2], result["rounds"][1::2], strict=True)):
        one, two = (a, b) if a["workers"] == 1 else (b, a)
        cells = []
        for method in ("search", "store"):
            x, y = one[method]["calls_per_s"], two[method]["calls_per_s"]
            cells += [f"{x:.0f} → {y:.0f}", f"{y / x:.2f}x"]
        lines.append(f"| {n + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = report(result)
    print(text)
    publish("replicas", result, text)


if __name__ == "__main__":
    main()
