"""Where a memory's bytes go in Redis: the hash, its side keys, and each part of the search index.

Issue 22 asks for at most 2.5 KB per memory beyond its text at 384 dims. This bench stores N
memories through the service (precomputed 384-d vectors, as `bench.load` seeds them, so it is
not embedding-bound) into a fresh embedded Redis, in two shapes:

- `standalone`: `bench.load`'s memories (one agent, no session): the shape of the target;
- `turns`: the same texts as conversation turns, 20 to a session, which also records each
  turn's position, its neighbour and (with no `context`) the text of the turn before (`lead`).

For each it reports `used_memory` per memory against an empty store, MEMORY USAGE summed per key
kind, FT.INFO's sizes per memory, and the floor that no layout on this Search module can go
under: the vector is held twice (in the hash, which the index reads, and in the HNSW index).

    python -m bench.footprint [--memories 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import tempfile
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc

from aether_memory.stores.redis.embedded import embedded_redis
from bench.episodes import service
from bench.load import TENANT, seed, seed_text
from bench.output import publish

DIM = 384
SESSION_TURNS = 20


async def seed_turns(target: str, count: int) -> None:
    """`count` memories as turns of sessions of SESSION_TURNS, in order within each session."""
    rng = np.random.default_rng(11)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

        async def session(number: int) -> None:
            first = number * SESSION_TURNS
            vectors = rng.standard_normal((SESSION_TURNS, DIM)).astype(np.float32)
            requests = [
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id="bench",
                        session_id=f"session-{number}",
                        content=seed_text(n),
                        embedding=vectors[n - first].tolist(),
                    )
                )
                for n in range(first, min(count, first + SESSION_TURNS))
            ]
            await stub.BatchStoreMemories(
                memory_service_pb2.BatchStoreMemoriesRequest(requests=requests),
                metadata=(("aether-tenant", TENANT),),
                timeout=120,
            )

        sessions = range((count + SESSION_TURNS - 1) // SESSION_TURNS)
        for start in range(0, len(sessions), 40):  # sessions run concurrently, turns in order
            await asyncio.gather(*(session(s) for s in sessions[start : start + 40]))


def _field(info: Any, name: str) -> Any:
    return info.get(name.encode(), info.get(name))


async def measure(shape: str, count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), fsync="everysec") as redis_url:
            client = aioredis.from_url(redis_url)
            async with service(redis_url, index=False) as target:
                await asyncio.sleep(1.0)  # the service made its indexes
                await client.execute_command("MEMORY", "PURGE")
                empty = (await client.info("memory"))["used_memory"]
                if shape == "standalone":
                    await seed(target, count, DIM)
                else:
                    await seed_turns(target, count)
                await asyncio.sleep(1.0)
                await client.execute_command("MEMORY", "PURGE")
                used = (await client.info("memory"))["used_memory"] - empty
            keys: collections.Counter[str] = collections.Counter()
            key_bytes: collections.Counter[str] = collections.Counter()
            names = [key async for key in client.scan_iter(count=1000)]
            async with client.pipeline(transaction=False) as pipe:
                for key in names:
                    pipe.memory_usage(key, samples=0)
                usages = await pipe.execute()
            for key, usage in zip(names, usages, strict=True):
                kind = key.decode().split(":")[1]
                keys[kind] += 1
                key_bytes[kind] += int(usage or 0)
            info = await client.execute_command("FT.INFO", "aether-memories")
            index = {
                name: float(_field(info, name)) * 1024 * 1024 / count
                for name in (
                    "vector_index_sz_mb",
                    "inverted_sz_mb",
                    "offset_vectors_sz_mb",
                    "doc_table_size_mb",
                    "sortable_values_size_mb",
                    "key_table_size_mb",
                    "text_overhead_sz_mb",
                    "tag_overhead_sz_mb",
                )
            }
            sample = next(k for k in names if k.startswith(b"aether:mem:"))
            fields = {k.decode(): len(v) for k, v in (await client.hgetall(sample)).items()}
            await client.aclose()
    text = statistics.fmean(len(seed_text(n).encode()) for n in range(count))
    per_kind = {kind: key_bytes[kind] / count for kind in keys}
    vector = DIM * 2  # float16, the default
    return {
        "shape": shape,
        "memories": count,
        "used_memory_per_memory": used / count,
        "text_bytes": text,
        "beyond_text": used / count - text,
        "keys": dict(keys),
        "key_bytes_per_memory": per_kind,
        "index_bytes_per_memory": index,
        "unattributed_per_memory": used / count - sum(per_kind.values()) - sum(index.values()),
        "hash_fields": fields,
        "vector_bytes": vector,
    }


def report(results: list[dict[str, Any]]) -> str:
    first = results[0]
    lines = [
        "# Where a memory's bytes go",
        "",
        f"{first['memories']:,} memories of 384 dims (float16 vectors, the default) stored "
        "through the service into a fresh embedded Redis, precomputed vectors; `used_memory` "
        "after against before (both after MEMORY PURGE). Produced by `python -m bench.footprint`.",
        "",
        "| bytes per memory | " + " | ".join(r["shape"] for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label: str, values: list[float]) -> None:
        lines.append(f"| {label} | " + " | ".join(f"{v:,.0f}" for v in values) + " |")

    row("**all of Redis**", [r["used_memory_per_memory"] for r in results])
    row("its text", [r["text_bytes"] for r in results])
    row("**beyond its text** (target ≤ 2,500)", [r["beyond_text"] for r in results])
    kinds = sorted({k for r in results for k in r["key_bytes_per_memory"]})
    for kind in kinds:
        row(f"keys `aether:{kind}:…` (MEMORY USAGE)", [
            r["key_bytes_per_memory"].get(kind, 0.0) for r in results
        ])  # fmt: skip
    for name in first["index_bytes_per_memory"]:
        row(f"index: {name.removesuffix('_mb').removesuffix('_sz')}", [
            r["index_bytes_per_memory"][name] for r in results
        ])  # fmt: skip
    row("not attributed (numeric and tag indexes, allocator)", [
        r["unattributed_per_memory"] for r in results
    ])  # fmt: skip
    lines += ["", "Fields of one memory hash (value bytes):", ""]
    for r in results:
        lines.append(
            f"- {r['shape']}: " + ", ".join(f"`{k}` {v}" for k, v in r["hash_fields"].items())
        )
    v = first["vector_bytes"]
    index = first["index_bytes_per_memory"]["vector_index_sz_mb"]
    rest = first["key_bytes_per_memory"]["mem"] - v
    left = first["beyond_text"] - rest
    lines += [
        "",
        f"The floor on this Search module (RediSearch 2.10): the index reads vectors from the "
        f"hash and keeps its own copy, so a memory holds its vector twice ({2 * v:,} B at 384 "
        f"float16 dims). With the HNSW graph and the index's per-vector bookkeeping the vector "
        f"index alone is {index:,.0f} B, the hash's vector {v} B more: "
        f"{index + v:,.0f} B before any text, tag, number, key name or document-table entry.",
        "",
        f"Issue 22's levers on the hash (shorter field names, no empty fields) act on its "
        f"{rest:,.0f} B besides the vector; were all of it gone, {left:,.0f} B would remain "
        "beyond the text, still above 2,500.",
        "",
    ]
    return "\n".join(lines)


async def main_async(count: int) -> None:
    results = [await measure(shape, count) for shape in ("standalone", "turns")]
    text = report(results)
    print(text)
    publish("footprint", {"results": results}, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memories", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main_async(args.memories))


if __name__ == "__main__":
    main()
