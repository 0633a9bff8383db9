"""HNSW recall against exact KNN, latency by EF_RUNTIME, and the index's bytes per vector.

Vectors: the LoCoMo dialog turns (1,451) embedded by the bundled pack, then N vectors made
from them by adding Gaussian noise (cosine to their source ~0.8) and normalizing, so the set
has the clustered shape of real text embeddings rather than the uniform spread of random
vectors (the worst case for HNSW). Queries: the LoCoMo questions, embedded as queries.

For each configuration (M, EF_CONSTRUCTION, vector type) the index is built on an embedded
Redis and every query runs at each EF_RUNTIME, unfiltered and with the service's tenant filter
in batches (HYBRID_POLICY BATCHES, what SearchMemories uses for large agents). recall@10 is measured
against exact cosine KNN in numpy over the same vectors; latency is one FT.SEARCH from
Python, round trip included, with raw single-query KNN as the baseline being measured.

    python -m bench.hnsw [--size 100000] [--m 16,32] [--ef-construction 100,200]
                         [--types FLOAT32,FLOAT16]

Build time is what a Redis restart spends rebuilding the index (RediSearch keeps no vector index
on disk, and this module build has no worker threads: one core inserts).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.runtime import Embedder
from aether_memory.stores.redis.embedded import embedded_redis
from bench.output import publish

from .locomo import DATA, content_of, turns

ROOT = Path(__file__).resolve().parent.parent
EF_RUNTIMES = (10, 20, 40, 64, 100, 200)
K = 10


def vectors(size: int, seed: int = 7) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    embedder = Embedder(ensure_default_pack("fp32"))
    texts, questions = [], []
    for path in sorted(DATA.glob("*.json")):
        conversation = json.loads(path.read_text())
        texts += [
            content_of(t) for _, t, _ in turns(conversation.get("conversation", conversation))
        ]
        questions += [q["question"] for q in conversation["qa"] if q["category"] != 5]
    base = embedder.embed(texts, "document")
    queries = embedder.embed(questions, "query")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), size)
    noisy = base[picks] + rng.standard_normal((size, base.shape[1])).astype(np.float32) * 0.038
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return noisy.astype(np.float32), queries.astype(np.float32)


def exact_top(data: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]) -> list[set[int]]:
    found = []
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ data.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        found += [set(row.tolist()) for row in top]
    return found


async def build(
    client: aioredis.Redis, data: npt.NDArray[np.float32], m: int, ef_construction: int, dtype: str
) -> tuple[float, float]:
    """Create and fill the index; (seconds to build, bytes per vector in the index)."""
    await client.flushall()
    await client.execute_command(
        "FT.CREATE", "hnsw", "ON", "HASH", "PREFIX", "1", "v:", "SCHEMA", "tenant", "TAG",
        "embedding", "VECTOR", "HNSW", "10", "TYPE", dtype, "DIM", str(data.shape[1]),
        "DISTANCE_METRIC", "COSINE", "M", str(m), "EF_CONSTRUCTION", str(ef_construction),
    )  # fmt: skip
    np_type = np.float16 if dtype == "FLOAT16" else np.float32
    started = time.perf_counter()
    for start in range(0, len(data), 1000):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(len(data), start + 1000)):
                pipe.hset(
                    f"v:{i}",
                    mapping={"tenant": "bench", "embedding": data[i].astype(np_type).tobytes()},
                )
            await pipe.execute()
    while True:
        info = await client.ft("hnsw").info()
        if str(info.get("indexing", "0")) in ("0", "0.0") and int(info["num_docs"]) == len(data):
            break
        await asyncio.sleep(0.2)
    built = time.perf_counter() - started
    size_mb = float(info.get("vector_index_sz_mb", 0.0))
    return built, size_mb * 1024 * 1024 / len(data)


async def query_all(
    client: aioredis.Redis,
    queries: npt.NDArray[np.float32],
    np_type: Any,
    ef: int,
    filtered: bool,
) -> tuple[list[set[int]], list[float]]:
    where = "(@tenant:{bench})" if filtered else "*"
    policy = " HYBRID_POLICY BATCHES BATCH_SIZE 50" if filtered else ""
    text = f"{where}=>[KNN {K} @embedding $v EF_RUNTIME {ef}{policy} AS score]"
    found, latencies = [], []
    for q in queries:
        started = time.perf_counter()
        reply = await client.execute_command(
            "FT.SEARCH", "hnsw", text, "PARAMS", "2", "v", q.astype(np_type).tobytes(),
            "SORTBY", "score", "RETURN", "1", "score", "LIMIT", "0", str(K), "DIALECT", "2",
        )  # fmt: skip
        latencies.append(time.perf_counter() - started)
        if isinstance(reply, dict):  # redis-py parses FT.SEARCH into RESP3-like maps
            ids = [r.get(b"id", r.get("id")) for r in reply.get(b"results", reply.get("results"))]
        else:
            ids = reply[1::2]
        found.append({int(re.sub(rb"^v:", b"", i)) for i in ids})
    return found, latencies


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data, queries = vectors(args.size)
    truth = exact_top(data, queries)
    result: dict[str, Any] = {"size": args.size, "queries": len(queries), "configs": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), fsync="everysec") as url:
            client = aioredis.from_url(url)
            for m, efc, dtype in itertools.product(args.m, args.ef_construction, args.types):
                built, per_vector = await build(client, data, m, efc, dtype)
                np_type = np.float16 if dtype == "FLOAT16" else np.float32
                config: dict[str, Any] = {
                    "m": m,
                    "ef_construction": efc,
                    "type": dtype,
                    "build_s": built,
                    "index_bytes_per_vector": per_vector,
                    "runs": [],
                }
                for filtered in (False, True):
                    for ef in EF_RUNTIMES:
                        found, lat = await query_all(client, queries, np_type, ef, filtered)
                        recall = statistics.mean(
                            len(f & t) / K for f, t in zip(found, truth, strict=True)
                        )
                        config["runs"].append(
                            {
                                "filtered": filtered,
                                "ef_runtime": ef,
                                "recall_at_10": recall,
                                "p50_ms": pct(lat, 0.5),
                                "p99_ms": pct(lat, 0.99),
                            }
                        )
                        print(m, efc, dtype, filtered, ef, f"{recall:.3f}", f"{pct(lat, 0.5):.2f}")
                result["configs"].append(config)
            await client.aclose()
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        "# HNSW: recall@10 against exact KNN, latency by EF_RUNTIME",
        "",
        f"{result['size']:,} vectors of 384 dims (LoCoMo turn embeddings plus noise, see "
        f"`bench/hnsw.py`), {result['queries']} LoCoMo questions as queries, "
        f"{os.cpu_count()} cores. Latency: one FT.SEARCH from Python, round trip included. "
        "Filtered: the tenant tag with HYBRID_POLICY BATCHES, as SearchMemories runs it for "
        "large agents.",
        "",
    ]
    for config in result["configs"]:
        lines += [
            f"## M={config['m']}, EF_CONSTRUCTION={config['ef_construction']}, "
            f"{config['type']}: built in {config['build_s']:.0f} s, "
            f"{config['index_bytes_per_vector']:.0f} bytes per vector in the index",
            "",
            "| EF_RUNTIME | recall@10 | p50 | p99 | filtered recall@10 | p50 | p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        plain = {r["ef_runtime"]: r for r in config["runs"] if not r["filtered"]}
        filtered = {r["ef_runtime"]: r for r in config["runs"] if r["filtered"]}
        for ef in EF_RUNTIMES:
            a, b = plain[ef], filtered[ef]
            lines.append(
                f"| {ef} | {a['recall_at_10']:.3f} | {a['p50_ms']:.2f} ms | {a['p99_ms']:.2f} ms "
                f"| {b['recall_at_10']:.3f} | {b['p50_ms']:.2f} ms | {b['p99_ms']:.2f} ms |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--m", type=lambda s: [int(x) for x in s.split(",")], default=[16])
    parser.add_argument(
        "--ef-construction", type=lambda s: [int(x) for x in s.split(",")], default=[200]
    )
    parser.add_argument("--types", type=lambda s: s.split(","), default=["FLOAT32", "FLOAT16"])
    args = parser.parse_args()
    result = asyncio.run(run(args))
    publish("hnsw", result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
