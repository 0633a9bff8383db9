"""One Redis against a Redis Cluster of three primaries, under the same service, in one run.

Issue 21 asks what primaries buy. Both setups hold the same memories with one index per tenant
(AETHER_INDEX_LAYOUT=tenant): `one`, a single Redis (embedded recipe); `three`, a local cluster
of three primaries (no replicas) from the same binaries, the service on AETHER_REDIS_CLUSTER.
Tenants are spread so that each primary holds a third of them. Each setup is seeded once
(precomputed vectors); rounds then alternate the setups, and in each the service (one process)
gets 16 closed-loop callers from another process, each caller on its own connection and tenant:
SearchMemories (a new query each call) then StoreMemory (new content: embedding-bound).
Baseline in the same run: the raw ONNX embed ceiling at batch 32 on the same texts.

    python -m bench.primaries [--tenants 12] [--memories 1000] [--rounds 3] [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc

from aether_memory.stores.redis.embedded import embedded_redis
from bench.load import embed_ceiling, seed_text, store_text
from bench.output import publish
from bench.replicas import CALLERS, load, workers
from tests.support.cluster import LocalCluster, local_cluster

S = memory_service_pb2
LAYOUT = {"AETHER_INDEX_LAYOUT": "tenant"}


async def seed(target: str, tenants: list[str], per_tenant: int) -> float:
    """`per_tenant` memories in every tenant (random 384-d vectors); memories per second."""
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

        async def batch(tenant: str, start: int) -> None:
            vectors = rng.standard_normal((100, 384)).astype(np.float32)
            requests = [
                S.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id="bench", content=seed_text(n), embedding=vectors[i].tolist()
                    )
                )
                for i, n in enumerate(range(start, min(per_tenant, start + 100)))
            ]
            await stub.BatchStoreMemories(
                S.BatchStoreMemoriesRequest(requests=requests),
                metadata=(("aether-tenant", tenant),),
                timeout=120,
            )

        for tenant in tenants:
            await asyncio.gather(*(batch(tenant, s) for s in range(0, per_tenant, 100)))
    return len(tenants) * per_tenant / (time.perf_counter() - started)


@contextlib.asynccontextmanager
async def setups(
    tmp: Path, tenants: int
) -> AsyncIterator[tuple[dict[str, tuple[str, dict[str, str]]], list[str]]]:
    """Both Redis setups, running: name -> (AETHER_REDIS_URL, more settings); and the tenants."""
    with local_cluster(tmp / "cluster", primaries=3, replicas=0) as cluster:
        async with embedded_redis(tmp / "one", fsync="everysec") as one:
            host, port = cluster.startup_nodes[0]
            yield (
                {
                    "one": (one, LAYOUT),
                    "three": (
                        f"redis://{host}:{port}",
                        LAYOUT | {"AETHER_REDIS_CLUSTER": "true"},
                    ),
                },
                spread(cluster, tenants),
            )


def spread(cluster: LocalCluster, count: int) -> list[str]:
    """`count` tenants, as many on each primary as the count allows."""
    per = count // len(cluster.primaries)
    held: dict[int, list[str]] = {n.port: [] for n in cluster.primaries}
    n = 0
    while any(len(v) < per for v in held.values()):
        tenant = f"bench-{n}"
        owner = cluster.owner(_slot(tenant)).port
        if len(held[owner]) < per:
            held[owner].append(tenant)
        n += 1
    # Interleaved: callers bound round-robin to tenants meet every primary.
    return [t for group in zip(*held.values(), strict=True) for t in group]


def _slot(tenant: str) -> int:
    from redis.cluster import key_slot

    return key_slot(("{" + tenant + "}").encode())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    seeded: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as raw:
        async with setups(Path(raw), args.tenants) as (redis, tenants):
            for name, (url, settings) in redis.items():
                async with workers(url, 1, settings) as target:
                    seeded[name] = await seed(target, tenants, args.memories)
                print(f"seeded {name}: {seeded[name]:.0f} memories/s", flush=True)
            for number in range(args.rounds):
                order = ("one", "three") if number % 2 == 0 else ("three", "one")
                for name in order:
                    url, settings = redis[name]
                    async with workers(url, 1, settings) as target:
                        await asyncio.to_thread(load, target, "search", 3.0, 0, tenants)
                        first = (number * 2 + order.index(name) + 1) * 100_000_000
                        search = await asyncio.to_thread(
                            load, target, "search", args.seconds, first, tenants
                        )
                        store = await asyncio.to_thread(
                            load, target, "store", args.seconds, first, tenants
                        )
                    rounds.append({"setup": name, "search": search, "store": store})
                    print(rounds[-1], flush=True)
    ceiling = await asyncio.to_thread(embed_ceiling, [store_text(n) for n in range(512)])
    return {
        "tenants": args.tenants,
        "memories_per_tenant": args.memories,
        "seed_per_s": seeded,
        "seconds": args.seconds,
        "callers": CALLERS,
        "rounds": rounds,
        "embed_ceiling_texts_per_s": ceiling,
    }


def median(result: dict[str, Any], setup: str, method: str, key: str) -> float:
    return statistics.median(r[method][key] for r in result["rounds"] if r["setup"] == setup)


def report(result: dict[str, Any]) -> str:
    lines = [
        "# One Redis against a cluster of three primaries",
        "",
        f"{os.cpu_count()} cores; {result['tenants']} tenants of "
        f"{result['memories_per_tenant']:,} memories (384 dims), one index per tenant, spread "
        f"evenly over the primaries; one service process; {result['callers']} closed-loop "
        "callers in another process, each on its own connection and bound to a tenant in turn; "
        f"{result['seconds']:.0f} s per measure; rounds alternate the setups "
        f"({len(result['rounds']) // 2} each). Medians over rounds. Produced by "
        "`python -m bench.primaries`.",
        "",
        "| primaries | search calls/s | p50 | p99 | store calls/s | p50 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("one", "1 (one Redis)"), ("three", "3 (Redis Cluster)")):

        def m(method: str, key: str, n: str = name) -> float:
            return median(result, n, method, key)

        lines.append(
            f"| {label} | {m('search', 'calls_per_s'):.0f} | {m('search', 'p50_ms'):.1f} ms | "
            f"{m('search', 'p99_ms'):.1f} ms | {m('store', 'calls_per_s'):.0f} | "
            f"{m('store', 'p50_ms'):.1f} ms | {m('store', 'p99_ms'):.1f} ms |"
        )
    search = median(result, "three", "search", "calls_per_s") / median(
        result, "one", "search", "calls_per_s"
    )
    store = median(result, "three", "store", "calls_per_s") / median(
        result, "one", "store", "calls_per_s"
    )
    ceiling = result["embed_ceiling_texts_per_s"]
    lines += [
        "",
        f"Three primaries against one: search {search:.2f}x, store {store:.2f}x. Raw embed "
        f"ceiling in the same run: {ceiling:.0f} store texts/s at batch 32; store reaches "
        f"{median(result, 'one', 'store', 'calls_per_s') / ceiling:.0%} of it on one Redis and "
        f"{median(result, 'three', 'store', 'calls_per_s') / ceiling:.0%} on the cluster.",
        "",
        "Every round, its two measures taken back to back (the ratio within a round is the "
        "comparison to trust on a machine whose speed drifts):",
        "",
        "| round | search 1 → 3 primaries | ratio | store 1 → 3 primaries | ratio |",
        "|---|---|---|---|---|",
    ]
    for n, (a, b) in enumerate(zip(result["rounds"][::2], result["rounds"][1::2], strict=True)):
        one, three = (a, b) if a["setup"] == "one" else (b, a)
        cells = []
        for method in ("search", "store"):
            x, y = one[method]["calls_per_s"], three[method]["calls_per_s"]
            cells += [f"{x:.0f} → {y:.0f}", f"{y / x:.2f}x"]
        lines.append(f"| {n + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=12)
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = report(result)
    print(text)
    publish("primaries", result, text)


if __name__ == "__main__":
    main()
