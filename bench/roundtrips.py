"""Calls that made one Redis round trip per item, before and after they were batched (issue 19):
DescribeSelf (30 count queries one after another), ListMemories (the index returned every field,
then the hashes were read again), RecordEpisode (read back what it had just written) and
SearchEpisodes (one stream read per hit).

Each call is timed through gRPC by one caller, with a raw Redis PING measured in the same run as
the unit of one round trip. To compare two builds, run the older one first with its own code on
the path and keep its JSON, then this one with `--before`:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before/server:/tmp/before/embeddings:. python -m bench.roundtrips \\
        --label before --out /tmp/before.json
    python -m bench.roundtrips --before /tmp/before.json    # writes bench/results/roundtrips.*
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aether.memory.v1 import episode_pb2, memory_pb2
from aether.memory.v1 import episode_service_pb2 as E
from aether.memory.v1 import episode_service_pb2_grpc as EG
from aether.memory.v1 import memory_service_pb2 as S
from aether.memory.v1 import memory_service_pb2_grpc as SG
from google.protobuf import struct_pb2

from aether_memory.app import serve
from aether_memory.settings import Settings
from bench.output import publish

MD = (("aether-tenant", "bench"),)
MEMORIES = 2000
EPISODES = 500
TIERS = [
    memory_pb2.MEMORY_TIER_LONG_TERM,
    memory_pb2.MEMORY_TIER_SHORT_TERM,
    memory_pb2.MEMORY_TIER_WORKING,
]
TYPES = [
    memory_pb2.MEMORY_TYPE_FACT,
    memory_pb2.MEMORY_TYPE_EVENT,
    memory_pb2.MEMORY_TYPE_PROCEDURE,
]


async def _timed(call: Callable[[], Awaitable[Any]], calls: int) -> dict[str, float]:
    for _ in range(5):  # warm-up
        await call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    times.sort()
    return {"p50_ms": 1e3 * statistics.median(times), "p90_ms": 1e3 * times[int(0.9 * calls)]}


async def measure(calls: int) -> dict[str, Any]:
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(port=0, data_dir=Path(tmp), redis_url=None, grace_s=1.0)
        async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
            memories, episodes = SG.MemoryServiceStub(ch), EG.EpisodeServiceStub(ch)
            for start in range(0, MEMORIES, 100):  # given vectors: only the calls are measured
                batch = [
                    S.StoreMemoryRequest(
                        memory=memory_pb2.Memory(
                            agent_id="a",
                            content=f"Memory {i}: the agent noted fact number {i}.",
                            tier=TIERS[i % len(TIERS)],
                            type=TYPES[(i // 3) % len(TYPES)],
                            embedding=rng.standard_normal(384).astype(np.float32).tolist(),
                        )
                    )
                    for i in range(start, start + 100)
                ]
                await memories.BatchStoreMemories(
                    S.BatchStoreMemoriesRequest(requests=batch), metadata=MD
                )

            def episode(i: int) -> episode_pb2.Episode:
                payload = struct_pb2.Struct()
                payload.update({"tool": "weather", "city": f"city {i}", "temperature": i % 40})
                return episode_pb2.Episode(
                    event_id=f"e{i}",
                    agent_id="a",
                    type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                    outcome=episode_pb2.EPISODE_OUTCOME_SUCCESS,
                    payload=payload,
                )

            for i in range(EPISODES):
                request = E.RecordEpisodeRequest(episode=episode(i))
                await episodes.RecordEpisode(request, metadata=MD)
            while True:  # every episode embedded and indexed
                reply = await episodes.SearchEpisodes(
                    E.SearchEpisodesRequest(query="weather"), metadata=MD
                )
                if reply.index_lag == 0:
                    break
                await asyncio.sleep(0.2)
            counter = iter(range(EPISODES, EPISODES + 10 * calls))
            rows = {
                "raw Redis PING": await _timed(running.redis.ping, calls),
                "DescribeSelf (no topic: counts, outcomes, state)": await _timed(
                    lambda: memories.DescribeSelf(S.DescribeSelfRequest(agent_id="a"), metadata=MD),
                    calls,
                ),
                "ListMemories, 100 per page": await _timed(
                    lambda: memories.ListMemories(
                        S.ListMemoriesRequest(agent_id="a", page_size=100), metadata=MD
                    ),
                    calls,
                ),
                "RecordEpisode": await _timed(
                    lambda: episodes.RecordEpisode(
                        E.RecordEpisodeRequest(episode=episode(next(counter))), metadata=MD
                    ),
                    calls,
                ),
                "SearchEpisodes, 50 per page": await _timed(
                    lambda: episodes.SearchEpisodes(
                        E.SearchEpisodesRequest(query="temperature in city 7", page_size=50),
                        metadata=MD,
                    ),
                    calls,
                ),
            }
    return {"calls": calls, "memories": MEMORIES, "episodes": EPISODES, "rows": rows}


def report(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    lines = [
        "# Per-item round trips removed (issue 19)",
        "",
        f"Generated by `python -m bench.roundtrips`: one caller over gRPC on loopback, "
        f"{after['calls']} calls each after 5 warm-up calls, {after['memories']} memories (3 "
        f"tiers x 3 types) and {after['episodes']} indexed episodes of one agent. The raw PING "
        "is one Redis round trip from the service's own client, measured in the same run. "
        "Before: the build before the change, run just before on the same machine.",
        "",
        "| call | before p50 | after p50 | after p90 | after / before | after in PINGs |",
        "|---|---|---|---|---|---|",
    ]
    ping = after["rows"]["raw Redis PING"]["p50_ms"]
    for name, row in after["rows"].items():
        old = before["rows"].get(name) if before else None
        lines.append(f"| {name} | {old['p50_ms']:.2f} ms | " if old else f"| {name} | - | ")
        lines[-1] += (
            f"{row['p50_ms']:.2f} ms | {row['p90_ms']:.2f} ms | "
            + (f"{row['p50_ms'] / old['p50_ms']:.2f}x | " if old else "- | ")
            + f"{row['p50_ms'] / ping:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", type=Path, help="write the JSON here instead of publishing")
    parser.add_argument("--before", type=Path, help="the JSON of the build before")
    args = parser.parse_args()
    result = {"label": args.label, **asyncio.run(measure(args.calls))}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["rows"], indent=2))
        return
    before = json.loads(args.before.read_text()) if args.before else None
    publish("roundtrips", {"before": before, "after": result}, report(before, result))
    print(report(before, result))


if __name__ == "__main__":
    main()
