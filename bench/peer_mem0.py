"""The peer's side of `bench.peer`: Mem0 (open source, `infer=False`) on its Redis vector store.

Runs in the peer's own virtual environment (`make bench-peer`), not the project's: Mem0 pins
libraries of its own. It reads the conversations `bench.peer` wrote (every turn's memory text
and dia_id, every question with its evidence), stores every turn with `Memory.add(...,
infer=False)` (Mem0 embeds it and writes it as is: no LLM), asks every question with
`Memory.search` as one caller, then again from 16 threads in a closed loop, and prints one JSON
object. The embeddings come from `bench.peer`'s OpenAI-compatible endpoint, which serves the
same MiniLM pack the service uses.

    tools/peer/venv/bin/python bench/peer_mem0.py --redis URL --embeddings URL --data FILE
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from mem0 import Memory  # bench.peer runs this with MEM0_TELEMETRY=false

K = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory(args: argparse.Namespace, history: str) -> Memory:
    endpoint = {"openai_base_url": args.embeddings, "api_key": "local"}
    return Memory.from_config(
        {
            "vector_store": {
                "provider": "redis",
                "config": {
                    "redis_url": args.redis,
                    "collection_name": "mem0",
                    "embedding_model_dims": 384,
                },
            },
            "embedder": {
                "provider": "openai",
                "config": {"model": "all-MiniLM-L6-v2", "embedding_dims": 384, **endpoint},
            },
            # Required by the config; never called with infer=False.
            "llm": {"provider": "openai", "config": {"model": "unused", **endpoint}},
            "history_db_path": history,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    conversations = json.loads(Path(args.data).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        m = memory(args, f"{tmp}/history.db")
        stored, started = 0, time.perf_counter()
        for c in conversations:
            for turn in c["turns"]:
                m.add(
                    [{"role": "user", "content": turn["content"]}],
                    user_id=c["name"],
                    metadata={"dia_id": turn["dia_id"]},
                    infer=False,
                )
                stored += 1
        store_s = time.perf_counter() - started

        def ask(c: dict[str, Any], q: dict[str, Any]) -> tuple[float, list[str]]:
            began = time.perf_counter()
            found = m.search(q["question"], filters={"user_id": c["name"]}, top_k=K)
            elapsed = time.perf_counter() - began
            return elapsed, [r.get("metadata", {}).get("dia_id", "") for r in found["results"]]

        rows, latencies = [], []
        for c in conversations:
            for q in c["questions"]:
                elapsed, ranked = ask(c, q)
                latencies.append(elapsed)
                evidence = set(q["evidence"])
                rows.append(
                    {
                        "conversation": c["name"],
                        "category": q["category"],
                        "recall@10": len(evidence & set(ranked[:K])) / len(evidence),
                    }
                )

        work = [(c, q) for c in conversations for q in c["questions"]] * args.rounds
        lock, loaded = threading.Lock(), []

        def caller(n: int) -> None:
            for c, q in work[n :: args.callers]:
                elapsed, _ = ask(c, q)
                with lock:
                    loaded.append(elapsed)

        began = time.perf_counter()
        with ThreadPoolExecutor(args.callers) as pool:
            list(pool.map(caller, range(args.callers)))
        loaded_s = time.perf_counter() - began
    print(
        json.dumps(
            {
                "peer": f"mem0ai {metadata.version('mem0ai')}",
                "python": sys.version.split()[0],
                "stored": stored,
                "store_per_s": stored / store_s,
                "rows": rows,
                "one_caller": {
                    "p50_ms": statistics.median(latencies) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                },
                "callers": {
                    "callers": args.callers,
                    "requests_per_s": len(loaded) / loaded_s,
                    "p50_ms": statistics.median(loaded) * 1000,
                    "p99_ms": percentile(loaded, 0.99) * 1000,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
