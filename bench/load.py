"""Load tests with ghz at several sizes, with same-run baselines, into JSON and a Markdown report.

For each size N (memories already stored): start Redis (embedded recipe) and the service in its
own process, seed N memories of 384 dims through BatchStoreMemories with precomputed vectors
(so seeding is not embedding-bound), then run ghz (over server reflection) for:

- SearchMemories, 16 concurrent callers (query embedding included): closed loop (each caller
  sends its next call when the last returns, so latency is 16 / throughput), then paced at half
  that throughput (the latency callers see below saturation), then one caller alone;
- StoreMemory, 16 concurrent callers, new content each (embedding-bound);
- RecordEpisodes, bidirectional: 8 concurrent streams of 20 requests of 50 episodes.

Baselines measured in the same run: the raw ONNX embed ceiling of the same pack (batch 32 of
the same query texts), raw RedisVL KNN on the same index (16 concurrent callers, precomputed
vectors), and raw pipelined XADD. Also bytes per memory (`INFO memory`) and the Redis restart
time to a loaded index at each size.

    python -m bench.load [--sizes 10000,100000] [--fsync everysec]   # needs ghz: make bench-tools

`--fsync always` (the embedded default) writes `load-always.json`/`.md` instead: what making
every write wait for its fsync costs the service (searches write their access counts too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from redisvl.index import AsyncSearchIndex
from redisvl.query import VectorQuery

from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.runtime import Embedder
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import embedded_redis

from .episodes import raw_xadd, service

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GHZ = ROOT / "tools" / "ghz" / "bin" / "ghz"
TENANT = "bench"
TOPICS = ["travel", "food", "health", "work", "family", "music", "sport", "books"]


def query_text(n: int) -> str:
    """What the SearchMemories run's ghz template sends."""
    return f"what does the user think about {n} travel?"


def seed_text(n: int) -> str:
    return f"Note {n} about {TOPICS[n % 8]}: detail {n * 7919 % 100003}."


async def seed(target: str, count: int, dim: int) -> float:
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

        async def batch(start: int) -> None:
            vectors = rng.standard_normal((100, dim)).astype(np.float32)
            requests = [
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id="bench",
                        content=seed_text(n),
                        embedding=vectors[i].tolist(),
                    )
                )
                for i, n in enumerate(range(start, min(count, start + 100)))
            ]
            await stub.BatchStoreMemories(
                memory_service_pb2.BatchStoreMemoriesRequest(requests=requests),
                metadata=(("aether-tenant", TENANT),),
                timeout=120,
            )

        for start in range(0, count, 800):
            await asyncio.gather(*(batch(s) for s in range(start, min(count, start + 800), 100)))
    return count / (time.perf_counter() - started)


def ghz(
    target: str, method: str, data: Any, concurrency: int, total: int, rps: int = 0
) -> dict[str, Any]:
    """One ghz run; `rps` > 0 paces the calls (open loop) instead of a closed loop."""
    service = method.split("/")[0].rsplit(".", 1)[-1]
    proto = {"MemoryService": "memory_service", "EpisodeService": "episode_service"}[service]
    command = [
        str(GHZ),
        "--insecure",
        "--proto",
        str(ROOT / "proto" / "aether" / "memory" / "v1" / f"{proto}.proto"),
        "--import-paths",
        f"{ROOT / 'proto'},{ROOT / 'third_party' / 'proto'}",
        "--call",
        method,
        "--metadata",
        json.dumps({"aether-tenant": TENANT}),
        "--data",
        json.dumps(data),
        "--concurrency",
        str(concurrency),
        "--total",
        str(total),
        "--format",
        "json",
        "--timeout",
        "60s",
        *(["--rps", str(rps)] if rps else []),
        target,
    ]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0 and not run.stdout.strip().startswith("{"):
        raise RuntimeError(f"ghz failed: {run.stderr.strip() or run.stdout.strip()}")
    report = json.loads(run.stdout)
    latencies = {
        d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []
    }
    return {
        "requests_per_s": report["rps"],
        "count": report["count"],
        "errors": sum(
            report.get("statusCodeDistribution", {}).get(k, 0)
            for k in report.get("statusCodeDistribution", {})
            if k != "OK"
        ),
        "p50_ms": latencies.get(50, 0.0),
        "p95_ms": latencies.get(95, 0.0),
        "p99_ms": latencies.get(99, 0.0),
        "average_ms": report["average"] / 1e6,
    }


def store_text(n: int) -> str:
    """What the StoreMemory run's ghz template sends."""
    return f"fresh note {n} {uuid.uuid4()}"


def embed_ceiling(texts: list[str]) -> float:
    """Raw batches of 32 on the service's pack, the model alone on the machine's cores."""
    embedder = Embedder(ensure_default_pack(Settings().model_variant))
    embedder.run_texts(texts[:32])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), 32):
        embedder.run_texts(texts[i : i + 32])
    return len(texts) / (time.perf_counter() - started)


async def raw_knn(redis_url: str, dim: int, callers: int, total: int) -> dict[str, float]:
    client = aioredis.from_url(redis_url)
    index = await AsyncSearchIndex.from_existing("aether-memories", redis_client=client)
    dtype = str(index.schema.fields["embedding"].attrs.datatype.value).lower()  # type: ignore[union-attr]
    rng = np.random.default_rng(5)
    latencies: list[float] = []

    async def caller(n: int) -> None:
        for _ in range(total // callers):
            vector = rng.standard_normal(dim).astype(dtype)
            query = VectorQuery(  # the vector half of what SearchMemories runs at this size
                vector=vector.tobytes(),
                vector_field_name="embedding",
                return_fields=["memory_id", "content"],
                filter_expression=f"@tenant:{{{TENANT}}} @agent_id:{{bench}}",
                num_results=25,
                dtype=dtype,
                hybrid_policy="BATCHES",
                batch_size=50,
            )
            started = time.perf_counter()
            await index.query(query)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
    }


async def footprint(redis_url: str, count: int) -> dict[str, float]:
    client = aioredis.from_url(redis_url)
    info = await client.info("memory")
    await client.aclose()
    text = statistics.fmean(
        len(seed_text(n).encode()) for n in range(0, count, max(1, count // 1000))
    )
    return {
        "used_memory_bytes": info["used_memory"],
        "bytes_per_memory": info["used_memory"] / count,
        "text_bytes_per_memory": text,
        # The target's measure: what a memory costs beyond the bytes of its text (its keyword
        # index entries stay in, as they would for any text).
        "bytes_beyond_text": info["used_memory"] / count - text,
    }


async def restart_time(data: Path, fsync: str) -> float:
    """Seconds from starting Redis on the AOF to a fully loaded, fully indexed memory index."""
    started = time.perf_counter()
    async with embedded_redis(data, fsync=fsync) as url:
        client = aioredis.from_url(url)
        while True:
            info = await client.ft("aether-memories").info()
            if int(info.get("indexing", 0)) == 0:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
        await client.aclose()
    return elapsed


async def run_size(count: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        async with embedded_redis(data, fsync=args.fsync) as redis_url:
            async with service(redis_url, index=False) as target:
                seeded_per_s = await seed(target, count, 384)
                result: dict[str, Any] = {"memories": count, "seed_per_s": seeded_per_s}
                result.update(await footprint(redis_url, count))
                search_data = {  # keep in step with query_text()
                    "agent_id": "bench",
                    "query": "what does the user think about {{.RequestNumber}} travel?",
                    "page_size": 10,
                }
                search = "aether.memory.v1.MemoryService/SearchMemories"
                result["search"] = await asyncio.to_thread(
                    ghz, target, search, search_data, 16, args.requests
                )
                paced = max(1, int(result["search"]["requests_per_s"] / 2))
                result["search_paced"] = await asyncio.to_thread(
                    ghz, target, search, search_data, 16, min(args.requests, paced * 10), paced
                )
                result["search_paced"]["paced_rps"] = paced
                result["search_one_caller"] = await asyncio.to_thread(
                    ghz, target, search, search_data, 1, min(args.requests, 500)
                )
                store_data = {  # keep in step with store_text()
                    "memory": {
                        "agent_id": "bench-store",
                        "content": "fresh note {{.RequestNumber}} {{newUUID}}",
                    }
                }
                result["store"] = await asyncio.to_thread(
                    ghz,
                    target,
                    "aether.memory.v1.MemoryService/StoreMemory",
                    store_data,
                    16,
                    args.requests,
                )
                episodes = [
                    {
                        "episodes": [
                            {
                                "event_id": "{{newUUID}}-" + str(i * 50 + j),
                                "agent_id": "bench",
                                "type": "EPISODE_TYPE_TOOL_CALL",
                                "name": "web_search",
                            }
                            for j in range(50)
                        ]
                    }
                    for i in range(20)
                ]
                result["record"] = await asyncio.to_thread(
                    ghz, target, "aether.memory.v1.EpisodeService/RecordEpisodes", episodes, 8, 80
                )
                result["record"]["episodes_per_s"] = result["record"]["requests_per_s"] * 20 * 50
            result["raw_knn"] = await raw_knn(redis_url, 384, 16, args.requests)
            result["raw_xadd"] = await raw_xadd(redis_url, 8, 50, 3.0)
        print(json.dumps(result), flush=True)  # a large size's restart takes long: keep these
        result["restart_s"] = await restart_time(data, args.fsync)
    result["embed_ceiling_texts_per_s"] = await asyncio.to_thread(
        embed_ceiling, [store_text(n) for n in range(512)]
    )
    result["query_embed_ceiling_texts_per_s"] = await asyncio.to_thread(
        embed_ceiling, [query_text(n) for n in range(512)]
    )
    return result


def report(results: list[dict[str, Any]], fsync: str) -> str:
    columns = [
        "memories",
        "bytes/memory (beyond its text)",
        "restart to indexed",
        "SearchMemories 16c: rps, p50/p95/p99",
        "paced 16c at half that rps: p50/p95/p99",
        "1 caller: rps, p50/p99",
        "raw RedisVL KNN 16c: rps, p50/p99",
        "StoreMemory 16c: rps (of embed ceiling)",
        "embed ceiling b32, texts/s: store / query texts",
        "RecordEpisodes 8 streams: events/s, p50/p99 per stream of 20×50",
        "raw XADD events/s",
    ]
    lines = [
        "# Load tests (ghz) with same-run baselines",
        "",
        "Generated by `python -m bench.load`. ghz over server reflection against the service "
        "in its own process; Redis (appendfsync "
        f"{fsync} here) in another. Latencies in ms.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in results:
        s, k, st, rec = r["search"], r["raw_knn"], r["store"], r["record"]
        ceiling = r["embed_ceiling_texts_per_s"]
        sp, one = r["search_paced"], r["search_one_caller"]
        cells = [
            f"{r['memories']:,}",
            f"{r['bytes_per_memory']:.0f} ({r['bytes_beyond_text']:.0f})",
            f"{r['restart_s']:.1f} s",
            f"{s['requests_per_s']:.0f}, {s['p50_ms']:.1f}/{s['p95_ms']:.1f}/{s['p99_ms']:.1f}",
            f"{sp['paced_rps']} rps: {sp['p50_ms']:.1f}/{sp['p95_ms']:.1f}/{sp['p99_ms']:.1f}",
            f"{one['requests_per_s']:.0f}, {one['p50_ms']:.1f}/{one['p99_ms']:.1f}",
            f"{k['requests_per_s']:.0f}, {k['p50_ms']:.1f}/{k['p99_ms']:.1f}",
            f"{st['requests_per_s']:.0f} ({st['requests_per_s'] / ceiling:.0%} of {ceiling:.0f})",
            f"{ceiling:.0f} / {r['query_embed_ceiling_texts_per_s']:.0f}",
            f"{rec['episodes_per_s']:.0f}, {rec['p50_ms']:.0f}/{rec['p99_ms']:.0f}",
            f"{r['raw_xadd']['events_per_s']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="everysec")
    args = parser.parse_args()
    if not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: run `make bench-tools`")
    # Each row carries its own same-run baselines, so a size run alone (1M takes most of an
    # hour here) replaces its row and keeps the others.
    name = "load" if args.fsync == "everysec" else f"load-{args.fsync}"
    path = RESULTS / f"{name}.json"
    results = {r["memories"]: r for r in json.loads(path.read_text())} if path.exists() else {}
    for size in (int(s) for s in args.sizes.split(",")):
        results[size] = asyncio.run(run_size(size, args))
        print(json.dumps(results[size], indent=2), flush=True)
    rows = [results[size] for size in sorted(results)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(report(rows, args.fsync))
    print(report(rows, args.fsync))


if __name__ == "__main__":
    main()
