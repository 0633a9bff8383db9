"""Filtered KNN in RediSearch: the planner's default against HYBRID_POLICY BATCHES and ADHOC_BF.

60,000 clustered 384-dim vectors (200 centroids plus noise) in one HNSW index (M 16, EF 64);
200 queries near stored vectors, k 25, with no filter and with a tag filter that keeps every
document (one agent holding most of the index, the case SearchMemories hits). Writes
bench/results/knn-hybrid.md.

    python -m bench.knn_hybrid
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from aether_memory.stores.redis.embedded import embedded_redis

DIM, N, QUERIES = 384, 60_000, 200
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "no filter": "*=>[KNN 25 @v $vec AS d]",
    "tag filter, planner's choice": "(@tenant:{t})=>[KNN 25 @v $vec AS d]",
    "tag filter, BATCHES 50": "(@tenant:{t})=>[KNN 25 @v $vec "
    "HYBRID_POLICY BATCHES BATCH_SIZE 50 AS d]",
    "tag filter, BATCHES 200": "(@tenant:{t})=>[KNN 25 @v $vec "
    "HYBRID_POLICY BATCHES BATCH_SIZE 200 AS d]",
    "tag filter, ADHOC_BF": "(@tenant:{t})=>[KNN 25 @v $vec HYBRID_POLICY ADHOC_BF AS d]",
}


async def main() -> str:
    rng = np.random.default_rng(1)
    centroids = rng.standard_normal((200, DIM)).astype(np.float32)
    vectors = centroids[rng.integers(0, 200, N)] + 0.3 * rng.standard_normal((N, DIM))
    vectors = vectors.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), fsync="everysec") as url:
            r = aioredis.from_url(url)
            await r.execute_command(
                "FT.CREATE", "knn", "ON", "HASH", "PREFIX", "1", "k:", "SCHEMA", "tenant", "TAG",
                "v", "VECTOR", "HNSW", "12", "TYPE", "FLOAT32", "DIM", DIM, "DISTANCE_METRIC",
                "COSINE", "M", "16", "EF_CONSTRUCTION", "200", "EF_RUNTIME", "64",
            )  # fmt: skip
            for start in range(0, N, 2000):
                pipe = r.pipeline(transaction=False)
                for i in range(start, start + 2000):
                    pipe.hset(f"k:{i}", mapping={"tenant": "t", "v": vectors[i].tobytes()})
                await pipe.execute()
            rows = []
            for label, query in VARIANTS.items():
                latencies = []
                for _ in range(QUERIES):
                    noise = 0.1 * rng.standard_normal(DIM)
                    vec = (vectors[rng.integers(0, N)] + noise).astype(np.float32)
                    started = time.perf_counter()
                    await r.execute_command(
                        "FT.SEARCH", "knn", query, "PARAMS", "2", "vec", vec.tobytes(),
                        "RETURN", "1", "d", "SORTBY", "d", "DIALECT", "2", "LIMIT", "0", "25",
                    )  # fmt: skip
                    latencies.append(time.perf_counter() - started)
                ordered = sorted(latencies)
                rows.append(
                    f"| {label} | {statistics.median(ordered) * 1e3:.2f} ms "
                    f"| {ordered[int(len(ordered) * 0.99)] * 1e3:.2f} ms |"
                )
            await r.aclose()
    return "\n".join(
        [
            "# Filtered KNN: hybrid policies (bench/knn_hybrid.py)",
            "",
            f"{N:,} clustered {DIM}-dim vectors, HNSW M 16 / EF 64, k 25, {QUERIES} queries.",
            "",
            "| query | p50 | p99 |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    text = asyncio.run(main())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knn-hybrid.md").write_text(text)
    print(text)
