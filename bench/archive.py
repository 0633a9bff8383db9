"""Archive throughput and lag: the outbox → MongoDB archiver against raw bulk inserts, one run.

Starts an embedded Redis and FerretDB (the test server, SQLite backend) and measures:

1. drain: `--backlog` memories written to the hot tier (with their outbox entries) while no
   archiver runs, then the time the archiver takes to archive them all;
2. the same-run ceiling: raw `insert_many` of the same archive documents into a fresh collection;
3. updates: the archiver rewriting documents that exist (the replace path);
4. steady load: writers storing memories at `--rate` per second for `--seconds` while the
   archiver runs; the backlog (entries, oldest entry's age) is sampled every 50 ms;
5. partitions (AETHER_ARCHIVE_PARTITIONS): the same backlog spread over 16 tenants, drained by
   one archiver and by `--partitions` archivers in parallel, rounds taking turns.

Vectors are random (the embedder is not what is measured here).

    python -m bench.archive [--backlog 3000] [--rate 300] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from ulid import ULID

from aether_memory.domain.memory import Memory, Tier, fingerprint
from aether_memory.domain.outbox import OutboxEntry
from aether_memory.domain.tenant import Tenant
from aether_memory.service.archiving import Archiver, Archivers
from aether_memory.stores.mongo.archive import MongoArchive
from aether_memory.stores.redis.embedded import embedded_redis
from aether_memory.stores.redis.keys import ARCHIVER_LEASE, keys_of
from aether_memory.stores.redis.lease import Lease
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from aether_memory.stores.redis.outbox import RedisOutbox
from bench.output import publish
from tests.support.servers import ferretdb

ROOT = Path(__file__).resolve().parent.parent
DIM = 384
rng = np.random.default_rng(7)


def memory(n: int) -> Memory:
    vector = rng.standard_normal(DIM).astype(np.float32)
    now = time.time()
    return Memory(
        id=str(ULID()),
        agent_id=f"agent-{n % 8}",
        session_id=f"session-{n % 50}",
        content=f"Memory {n}: the user mentioned detail number {n} during a long conversation.",
        tier=Tier.LONG_TERM,
        tags=["bench", f"t{n % 10}"],
        importance=0.5,
        metadata={"n": n},
        event_time=now,
        create_time=now,
        update_time=now,
        embedding=vector / np.linalg.norm(vector),
    )


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


async def write(store: RedisMemoryStore, keys: Tenant, n: int) -> Memory:
    m = memory(n)
    await store.store(keys, m, fingerprint(m), None)
    return m


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, ferretdb(Path(tmp) / "ferret") as mongo_url:
        async with embedded_redis(Path(tmp) / "redis", 0) as redis_url:
            client = aioredis.from_url(redis_url)
            mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
            archive = MongoArchive(mongo, "bench", "1")
            await archive.ensure()
            store = RedisMemoryStore(client, index_name="bench", dimension=DIM, archived=True)
            await store.ensure_index()
            archiver = Archiver(
                RedisOutbox(client, batch=args.batch),
                archive,
                Lease(client, ARCHIVER_LEASE, 10_000),
            )
            keys = Tenant("bench")
            result: dict[str, Any] = {"backlog": args.backlog, "batch": args.batch}

            # 1. drain a backlog built while no archiver ran
            for n in range(args.backlog):
                await write(store, keys, n)
            outbox = keys_of(keys).outbox()
            raw = await client.xrange(outbox, "-", "+")
            docs = [archive._document(OutboxEntry.decode(i, f)) for i, f in raw]
            started = time.perf_counter()
            await archiver.drain(timeout_s=600)
            drain_s = time.perf_counter() - started
            result["drain_docs_per_s"] = args.backlog / drain_s

            # 2. the ceiling: raw insert_many of the same documents, in the same batch size
            ceiling = mongo["bench"]["ceiling"]
            started = time.perf_counter()
            for i in range(0, len(docs), args.batch):
                await ceiling.insert_many(docs[i : i + args.batch], ordered=False)
            result["raw_insert_docs_per_s"] = len(docs) / (time.perf_counter() - started)
            result["drain_vs_raw"] = result["drain_docs_per_s"] / result["raw_insert_docs_per_s"]

            # 3. rewriting existing documents (the replace path), on a collection of `backlog`
            updates = min(300, args.backlog)
            for _, fields in raw[:updates]:
                await client.xadd(outbox, {k.decode(): v for k, v in fields.items()})
            started = time.perf_counter()
            await archiver.drain(timeout_s=600)
            result["update_docs_per_s"] = updates / (time.perf_counter() - started)
            result["archived_documents"] = await archive.memories.count_documents({})

            # 4. steady load with the archiver running
            stop = asyncio.Event()
            worker = asyncio.create_task(archiver.run(stop))
            samples: list[tuple[int, float]] = []
            written = 0
            deadline = time.perf_counter() + args.seconds

            async def writer() -> None:
                nonlocal written
                interval = 1.0 / args.rate
                next_at = time.perf_counter()
                while time.perf_counter() < deadline:
                    await write(store, keys, 1_000_000 + written)
                    written += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

            async def sampler() -> None:
                while time.perf_counter() < deadline:
                    backlog = await archiver.backlog()
                    samples.append((backlog.entries, backlog.oldest_age_s))
                    await asyncio.sleep(0.05)

            await asyncio.gather(writer(), sampler())
            catch_up = time.perf_counter()
            await archiver.drain(timeout_s=600)
            result["steady"] = {
                "target_rate": args.rate,
                "written": written,
                "achieved_rate": written / args.seconds,
                "backlog_entries_p50": statistics.median(s[0] for s in samples),
                "backlog_entries_max": max(s[0] for s in samples),
                "lag_s_p50": statistics.median(s[1] for s in samples),
                "lag_s_p99": pct([s[1] for s in samples], 0.99),
                "lag_s_max": max(s[1] for s in samples),
                "catch_up_s": time.perf_counter() - catch_up,
            }
            stop.set()
            await worker
            result["archived_documents_final"] = await archive.memories.count_documents({})
            result["expected_documents_final"] = args.backlog + written

            # 5. one archiver against `--partitions`, the backlog spread over 16 tenants
            rates: dict[int, list[float]] = {1: [], args.partitions: []}
            for round_ in range(args.rounds):
                for n in rates:
                    rates[n].append(await partitioned_drain(client, archive, args, n, round_))
            result["partitions"] = {str(n): r for n, r in rates.items()}
            await mongo.close()
            await client.aclose()
    return result


async def partitioned_drain(
    client: Any, archive: MongoArchive, args: argparse.Namespace, n: int, round_: int
) -> float:
    """Docs/s draining `--backlog` memories of 16 new tenants with `n` partitions."""
    store = RedisMemoryStore(
        client, index_name="bench", dimension=DIM, archived=True, archive_partitions=n
    )
    tenants = [Tenant(f"p{n}-r{round_}-t{t}") for t in range(16)]
    for i in range(args.backlog):
        await write(store, tenants[i % 16], 2_000_000 + i)
    archivers = Archivers(
        [
            (
                RedisOutbox(client, batch=args.batch, partition=p, partitions=n),
                Lease(client, f"bench:archiver:{n}:{p}", 10_000),
            )
            for p in range(n)
        ],
        archive,
    )
    started = time.perf_counter()
    await archivers.drain(timeout_s=600)
    return args.backlog / (time.perf_counter() - started)


def report(result: dict[str, Any]) -> str:
    s = result["steady"]
    return "\n".join(
        [
            "# Archive throughput and lag (FerretDB v1.24.2, SQLite backend)",
            "",
            "Generated by `python -m bench.archive`; numbers from one run on this machine.",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| drain of {result['backlog']} memories (batch {result['batch']}) | "
            f"{result['drain_docs_per_s']:.0f} docs/s |",
            f"| same-run ceiling: raw insert_many of the same documents | "
            f"{result['raw_insert_docs_per_s']:.0f} docs/s |",
            f"| archiver vs ceiling | {result['drain_vs_raw']:.0%} |",
            f"| rewriting existing documents (collection of {result['archived_documents']}) | "
            f"{result['update_docs_per_s']:.0f} docs/s |",
            f"| steady load: stores/s offered → achieved | {s['target_rate']} → "
            f"{s['achieved_rate']:.0f} |",
            f"| steady load: backlog entries p50 / max | {s['backlog_entries_p50']:.0f} / "
            f"{s['backlog_entries_max']} |",
            f"| steady load: archive lag p50 / p99 / max | {s['lag_s_p50'] * 1e3:.0f} ms / "
            f"{s['lag_s_p99'] * 1e3:.0f} ms / {s['lag_s_max'] * 1e3:.0f} ms |",
            f"| catch-up after the load stopped | {s['catch_up_s'] * 1e3:.0f} ms |",
            f"| documents archived / expected | {result['archived_documents_final']} / "
            f"{result['expected_documents_final']} |",
            *(
                f"| drain of {result['backlog']} memories of 16 tenants, {n} archiver(s) "
                f"(AETHER_ARCHIVE_PARTITIONS={n}), rounds | "
                + ", ".join(f"{r:.0f}" for r in rates)
                + f" docs/s (median {statistics.median(rates):.0f}) |"
                for n, rates in result.get("partitions", {}).items()
            ),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backlog", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    publish("archive", result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
