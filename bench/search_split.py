"""Where SearchMemories' Redis time goes: its keyword and vector halves, each timed alone.

Seeds N memories through the service exactly as `bench.load` does (one agent; each memory's
text names one of 8 topics, so a topic word is in 1 of 8 memories), then times, one query at a
time, through the store's own methods:

- the keyword half (`keyword_search`) for `bench.load`'s search text, whose topic word
  ("travel") matches N/8 memories, and for the same text without it;
- the vector half (`vector_search`) with batched filtering (what the service runs for an agent
  this large) and with RediSearch's own plan (brute force over the filter).

Then, to place the keyword half's cost: the topic term's query with the tenant and agent
filters, with one, with none, each scored by BM25STD, by TFIDF, and sorted by a field instead
(scoring skipped). Redis runs every query on one thread, so a half's milliseconds bound how
many searches a second one Redis can serve.

Each index layout named is measured in the same run, one after the other on a Redis of its
own: `shared` (one index, every query filtered by tenant) and `tenant` (the tenant's own index,
no tenant filter; `AETHER_TENANT_INDEX_VECTORS` as set, FLAT by default). Writes
bench/results/search-split.{json,md}.

    python -m bench.search_split [--size 100000] [--layouts shared,tenant] [--name NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from aether_memory.domain.memory import MemoryFilter
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.embedded import embedded_redis
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from bench.output import publish

from .episodes import service
from .load import TENANT, query_text, seed

QUERIES = 200
FILTERS = {
    "tenant and agent (the service's filter)": " @tenant:{bench} @agent_id:{bench}",
    "agent only": " @agent_id:{bench}",
    "no filter": "",
}
SCORING = {
    "BM25STD (the service's)": ("SCORER", "BM25STD"),
    "TFIDF": ("SCORER", "TFIDF"),
    "sorted by create_time, no scoring": ("SORTBY", "create_time"),
}


async def timed(call: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    latencies = []
    for n in range(QUERIES):
        started = time.perf_counter()
        await call(n)
        latencies.append((time.perf_counter() - started) * 1e3)
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99)],
    }


async def run(size: int, layout: str) -> dict[str, Any]:
    result: dict[str, Any] = {"memories": size, "topic_share": 1 / 8, "layout": layout}
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), fsync="everysec") as url:
            env = {"AETHER_INDEX_LAYOUT": layout}
            async with service(url, index=False, env=env) as target:
                result["seed_per_s"] = await seed(target, size, 384)
            client = aioredis.from_url(url)
            store = RedisMemoryStore(
                client, index_name="aether-memories", dimension=384, layout=layout
            )
            await store.ensure_index()
            keys, flt = Tenant(TENANT), MemoryFilter(agent_id="bench")
            index = store.index_of(keys)
            rng = np.random.default_rng(3)
            vectors = rng.standard_normal((QUERIES, 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            halves: dict[str, Callable[[int], Awaitable[object]]] = {
                "keyword, with the topic word": lambda n: store.keyword_search(
                    keys, flt, query_text(n), 25
                ),
                "keyword, without it": lambda n: store.keyword_search(
                    keys, flt, query_text(n).replace(" travel", ""), 25
                ),
                "vector, batched filtering (the service's plan here)": lambda n: (
                    store.vector_search(keys, flt, vectors[n], 25, batches=True)
                ),
                "vector, RediSearch's plan (brute force over the filter)": lambda n: (
                    store.vector_search(keys, flt, vectors[n], 25)
                ),
            }
            result["halves"] = {name: await timed(call) for name, call in halves.items()}
            result["keyword_cost"] = {}
            for where, clause in FILTERS.items():
                if layout == "tenant" and "@tenant" in clause:
                    continue  # a tenant's own index has no tenant field
                query = f"(@content|context:travel{clause})"
                for how, args in SCORING.items():

                    def call(n: int, query: str = query, args: tuple[str, ...] = args) -> Any:
                        return client.execute_command(
                            "FT.SEARCH", index, query, "RETURN", "1", "memory_id",
                            "LIMIT", "0", "25", "DIALECT", "2", *args,
                        )  # fmt: skip

                    result["keyword_cost"][f"{where} | {how}"] = await timed(call)
            await client.aclose()
    return result


def report(results: dict[str, dict[str, Any]]) -> str:
    layouts = list(results)
    first = results[layouts[0]]
    seeded = ", ".join(f"{name} at {r['seed_per_s']:.0f}/s" for name, r in results.items())
    lines = [
        "# SearchMemories' Redis time, half by half",
        "",
        f"Generated by `python -m bench.search_split`. {first['memories']:,} memories of one "
        f"agent (seeded: {seeded}); the topic word is in 1 of 8 of them. One query at a time, "
        f"{QUERIES} each, round trip from Python included; each index layout on a Redis of its "
        "own, in the same run.",
        "",
        "| half | " + " | ".join(f"{name}: p50 / p99" for name in layouts) + " |",
        "|---|" + "---|" * len(layouts),
    ]
    for half in first["halves"]:
        timings = [results[n]["halves"][half] for n in layouts]
        cells = [f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} ms" for t in timings]
        lines.append(f"| {half} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## The topic term's query, by filter and by scoring",
        "",
        "| layout | filter | scoring | p50 | p99 |",
        "|---|---|---|---|---|",
    ]
    for layout, result in results.items():
        for name, t in result["keyword_cost"].items():
            where, how = name.split(" | ")
            lines.append(
                f"| {layout} | {where} | {how} | {t['p50_ms']:.2f} ms | {t['p99_ms']:.2f} ms |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--layouts", default="shared,tenant")
    parser.add_argument("--name", default="search-split", help="the results' file name")
    args = parser.parse_args()
    results = {layout: asyncio.run(run(args.size, layout)) for layout in args.layouts.split(",")}
    publish(args.name, results, report(results))
    print(report(results))


if __name__ == "__main__":
    main()
