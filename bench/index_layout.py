"""Search index layouts for running beyond one Redis (issue 21), measured on one Redis.

Today one index (`aether-memories`) holds every tenant's memories and each query filters by
tenant. The Search module shipped here (RediSearch 2.10) has no cluster coordinator: on a Redis
Cluster, FT.CREATE and FT.SEARCH are routed by the slot of the index's *name* (a node answers
MOVED for a name it does not own) and an index holds only its own node's keys. An index that
follows its tenant's data through resharding must therefore be named in its tenant's slot: one
index per tenant, `aether:idx:{tenant}` over `aether:mem:{tenant}:`. This bench prices that
layout against today's, for 1, 100 and 10,000 tenants, with the service's own index schema:

- FT.CREATE time per index (p50, p99) and Redis memory per empty index;
- with the same memories spread evenly over the tenants (random unit vectors in float16, texts
  naming one of 8 topics), Redis memory per memory for each layout's index(es), and one
  tenant's keyword query (BM25, a topic word in 1 of 8 memories) and KNN query (k=50) latency:
  the shared index filtered by tenant and agent as the service does, the tenant's own index
  filtered by agent only.

    python -m bench.index_layout [--memories 20000] [--tenants 1,100,10000] [--name NAME]

Writes bench/results/index-layout.{json,md} (or NAME.{json,md}: `--memories 100000 --tenants 1
--name index-layout-100k` prices one large tenant's FLAT index against HNSW).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.embedded import embedded_redis
from aether_memory.stores.redis.keys import MEMORY_PREFIX, keys_of
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from aether_memory.stores.redis.vector_slots import SLOTS
from bench.output import publish

from .episodes import pct

DIMENSION = 384
TOPICS = ["travel", "food", "health", "work", "family", "music", "sport", "books"]
QUERIES = 200


def schema_args(store: RedisMemoryStore, prefix: str) -> list[Any]:
    """FT.CREATE's arguments after the index name: the service's schema over `prefix`."""
    args: list[Any] = ["ON", "HASH", "PREFIX", 1, prefix, "SCHEMA"]
    for field in store.schema.fields.values():
        args += field.as_redis_field().redis_args()
    return args


async def used_memory(client: aioredis.Redis) -> int:
    """Redis's used_memory once it has stopped moving (indexes are freed and built by
    background threads)."""
    last = -1
    while True:
        now = int((await client.info("memory"))["used_memory"])
        if abs(now - last) <= 0.001 * now:
            return now
        last = now
        await asyncio.sleep(0.5)


async def wait_indexed(client: aioredis.Redis, names: list[str], docs: int) -> float:
    """Wait until each index holds `docs` documents; the indexes' own memory accounting
    (FT.INFO total_index_memory_sz_mb, summed), in bytes."""
    total = 0.0
    for name in names:
        while True:
            info = await client.ft(name).info()
            if int(info["num_docs"]) >= docs and not int(info.get("indexing", 0)):
                total += float(info["total_index_memory_sz_mb"]) * 1024 * 1024
                break
            await asyncio.sleep(0.05)
    return total


async def seed(client: aioredis.Redis, tenants: int, memories: int, seed_value: int) -> None:
    rng = np.random.default_rng(seed_value)
    now = time.time()
    async with client.pipeline(transaction=False) as pipe:
        for n in range(memories):
            tenant = f"t{n % tenants}"
            vector = rng.standard_normal(DIMENSION).astype(np.float32)
            vector /= np.linalg.norm(vector)
            pipe.hset(
                keys_of(Tenant(tenant)).memory(f"m{n}"),
                mapping={
                    "tenant": tenant,
                    "agent_id": "agent",
                    "session_id": "s",
                    "tier": "long_term",
                    "type": "fact",
                    "content": f"Note {n} about {TOPICS[n // tenants % 8]}: detail {n * 7 % 1000}.",
                    "importance": 0.5,
                    "event_time": now - n,
                    "create_time": now - n,
                    "seq": n,
                    SLOTS[0]: vector.astype(np.float16).tobytes(),
                },
            )
            if n % 1000 == 999:
                await pipe.execute()
        await pipe.execute()


async def queries(
    client: aioredis.Redis, index_of: Any, tenants: int, memories: int, filtered: bool
) -> dict[str, Any]:
    """One tenant's keyword and KNN queries, one at a time, over random tenants."""
    rng = np.random.default_rng(7)
    keyword, knn = [], []
    for n in range(QUERIES):
        tenant = f"t{int(rng.integers(tenants))}"
        scope = f"@tenant:{{{tenant}}} @agent_id:{{agent}}" if filtered else "@agent_id:{agent}"
        started = time.perf_counter()
        found = await client.execute_command(
            "FT.SEARCH", index_of(tenant), f"({scope}) (@content:(travel))",
            "SCORER", "BM25STD", "RETURN", 1, "seq", "LIMIT", 0, 50, "DIALECT", 2,
        )  # fmt: skip
        keyword.append(time.perf_counter() - started)
        vector = rng.standard_normal(DIMENSION).astype(np.float16)
        words = int(found[b"total_results"])
        started = time.perf_counter()
        found = await client.execute_command(
            "FT.SEARCH", index_of(tenant), f"({scope})=>[KNN 50 @{SLOTS[0]} $v AS d]",
            "PARAMS", 2, "v", vector.tobytes(), "RETURN", 1, "d",
            "LIMIT", 0, 50, "DIALECT", 2,
        )  # fmt: skip
        knn.append(time.perf_counter() - started)
        nearest = int(found[b"total_results"])
        # Every tenant has memories naming "travel" (1 in 8) once it has 8 or more.
        assert nearest == min(50, memories // tenants), (tenant, nearest)
        assert words > 0 or memories // tenants < 8, (tenant, words)
        if n == 0:  # the first query of a layout warms its index: not counted
            keyword.clear()
            knn.clear()
    return {"keyword": pct(keyword), "knn": pct(knn)}


def tenant_index(tenant: str) -> str:
    return f"aether:idx:{{{tenant}}}"


# HNSW allocates vectors in blocks of 1,024 (its block size is not settable in RediSearch
# 2.10), over 1 MB per index once it holds one vector: per-tenant HNSW is not built above this
# many tenants here (it would need about 12 GB at 10,000); FLAT takes a block size.
HNSW_PER_TENANT_MAX = 1_000
FLAT_BLOCK = 64


def flat_args(store: RedisMemoryStore, prefix: str) -> list[Any]:
    """The service's schema with an exact (FLAT) vector index in blocks of FLAT_BLOCK."""
    args = schema_args(store, prefix)
    at = args.index(store.vector_slot)
    vector = [
        store.vector_slot, "VECTOR", "FLAT", 8, "TYPE", store.vector_type.upper(),
        "DIM", DIMENSION, "DISTANCE_METRIC", "COSINE", "BLOCK_SIZE", FLAT_BLOCK,
    ]  # fmt: skip
    end = at + 4 + int(args[at + 3])  # name, VECTOR, algorithm, count, then count arguments
    return args[:at] + vector + args[end:]


async def per_tenant(
    client: aioredis.Redis, store: RedisMemoryStore, tenants: int, memories: int, flat: bool
) -> dict[str, Any]:
    data = await used_memory(client)
    started = time.perf_counter()
    names = []
    for n in range(tenants):
        tenant = f"t{n}"
        prefix = keys_of(Tenant(tenant)).memory("")  # aether:mem:{t}:
        args = flat_args(store, prefix) if flat else schema_args(store, prefix)
        await client.execute_command("FT.CREATE", tenant_index(tenant), *args)
        names.append(tenant_index(tenant))
    accounted = await wait_indexed(client, names, memories // tenants)
    build_s = time.perf_counter() - started
    grown = await used_memory(client) - data
    found = await queries(client, tenant_index, tenants, memories, filtered=False)
    for name in names:
        await client.execute_command("FT.DROPINDEX", name)
    return {
        "index_bytes_per_memory": grown / memories,
        "index_bytes_per_tenant": grown / tenants,
        "ft_info_bytes_per_memory": accounted / memories,
        "build_s": build_s,
        **found,
    }


async def measure(client: aioredis.Redis, tenants: int, memories: int) -> dict[str, Any]:
    store = RedisMemoryStore(
        client, index_name="aether-memories", dimension=DIMENSION, vector_type="float16"
    )
    await client.flushall(asynchronous=False)
    # Empty indexes: what a tenant with no memories yet costs.
    before = await used_memory(client)
    created = []
    for n in range(tenants):
        started = time.perf_counter()
        await client.execute_command(
            "FT.CREATE", f"empty:idx:{{t{n}}}", *schema_args(store, f"empty:mem:{{t{n}}}:")
        )
        created.append(time.perf_counter() - started)
    empty_bytes = (await used_memory(client) - before) / tenants
    for n in range(tenants):
        await client.execute_command("FT.DROPINDEX", f"empty:idx:{{t{n}}}")

    await seed(client, tenants, memories, tenants)
    data = await used_memory(client)
    await client.execute_command("FT.CREATE", "aether-memories", *schema_args(store, MEMORY_PREFIX))
    accounted = await wait_indexed(client, ["aether-memories"], memories)
    shared_bytes = (await used_memory(client) - data) / memories
    shared = await queries(client, lambda _: "aether-memories", tenants, memories, filtered=True)
    await client.execute_command("FT.DROPINDEX", "aether-memories")
    result: dict[str, Any] = {
        "tenants": tenants,
        "memories": memories,
        "create": pct(created),
        "empty_index_bytes": empty_bytes,
        "shared": {
            "index_bytes_per_memory": shared_bytes,
            "ft_info_bytes_per_memory": accounted / memories,
            **shared,
        },
        "per_tenant_flat": await per_tenant(client, store, tenants, memories, flat=True),
    }
    if tenants <= HNSW_PER_TENANT_MAX:
        result["per_tenant_hnsw"] = await per_tenant(client, store, tenants, memories, flat=False)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), 0, "everysec") as url:
            client = aioredis.Redis.from_url(url)
            try:
                for tenants in args.tenants:
                    results.append(await measure(client, tenants, args.memories))
                    print(results[-1], flush=True)
            finally:
                await client.aclose()
    return {"memories": args.memories, "queries": QUERIES, "results": results}


def report(summary: dict[str, Any]) -> str:
    lines = [
        "# Search index layouts: one shared index vs one index per tenant",
        "",
        f"Generated by `python -m bench.index_layout`: {summary['memories']:,} memories (384-d "
        "float16, the service's schema) spread evenly over the tenants on one embedded Redis; "
        f"{summary['queries']} queries of each kind, one at a time over loopback, for random "
        "tenants. The shared index (HNSW, today's) is filtered by tenant and agent as the "
        "service queries today; a tenant's own index by agent only, with the vectors in HNSW or "
        f"exact FLAT (block size {FLAT_BLOCK}). Index bytes are Redis's `used_memory` growth "
        "when the index(es) were built over the same seeded hashes (in brackets: the indexes' "
        "own accounting, FT.INFO `total_index_memory_sz_mb`, which leaves out vector blocks). "
        "Keyword: BM25 over a word in 1 of 8 of the tenant's memories; KNN: k=50.",
        "",
        "| tenants | memories per tenant | layout | index bytes per memory | per tenant "
        "| build | keyword p50 / p99 | KNN p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "shared": "one shared index",
        "per_tenant_hnsw": "per tenant, HNSW",
        "per_tenant_flat": "per tenant, FLAT",
    }
    for r in summary["results"]:
        for key, name in names.items():
            if key not in r:
                lines.append(
                    f"| {r['tenants']:,} | {r['memories'] / r['tenants']:,.0f} | {name} "
                    "| not built (over 1 MB per index) | | | | |"
                )
                continue
            x = r[key]
            per_tenant = x.get("index_bytes_per_tenant")
            tenant_kb = "" if per_tenant is None else f"{per_tenant / 1024:,.0f} KB"
            build = f"{x['build_s']:.1f} s" if "build_s" in x else ""
            lines.append(
                f"| {r['tenants']:,} | {r['memories'] / r['tenants']:,.0f} | {name} "
                f"| {x['index_bytes_per_memory']:,.0f} ({x['ft_info_bytes_per_memory']:,.0f}) B "
                f"| {tenant_kb} | {build} "
                f"| {x['keyword']['p50_ms']:.2f} / {x['keyword']['p99_ms']:.2f} ms "
                f"| {x['knn']['p50_ms']:.2f} / {x['knn']['p99_ms']:.2f} ms |"
            )
    lines += [
        "",
        "FT.CREATE of an empty index with the service's schema, and Redis memory per empty index:",
        "",
        "| indexes | FT.CREATE p50 / p99 | memory per empty index |",
        "|---|---|---|",
    ]
    for r in summary["results"]:
        lines.append(
            f"| {r['tenants']:,} | {r['create']['p50_ms']:.2f} / {r['create']['p99_ms']:.2f} ms "
            f"| {r['empty_index_bytes'] / 1024:,.1f} KB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=20_000)
    parser.add_argument(
        "--tenants", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 10_000]
    )
    parser.add_argument("--name", default="index-layout", help="the results' file name")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    publish(args.name, summary, report(summary))
    print(report(summary))


if __name__ == "__main__":
    main()
