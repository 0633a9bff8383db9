"""The comparison a user would make: the same LoCoMo turns in this service and in a peer.

The peer is Mem0 (open source, `mem0ai`, pinned in tools/peer/requirements.txt; `make
bench-peer` installs it into tools/peer/venv) with `infer=False`, so it stores each turn as is and
no LLM runs, on its Redis vector store. Both get the same vectors: the service embeds in process
with its bundled MiniLM pack (int8); the peer calls an OpenAI-compatible `/v1/embeddings`
endpoint this harness serves from the same pack (its own process, micro-batched as the service
is). Each side has a Redis of its own, started from the embedded recipe (the same redis-server
and modules). Same machine, same run, one side after the other.

Measured on each side, for the three conversations of ../shared/data/locomo-dev (1451 turns,
383 questions of categories 1-4; `bench.locomo` describes the data):

- store: every turn stored by one caller, one call per turn (StoreMemory; Mem0's `add`), turns/s;
- search: every question asked by one caller (SearchMemories with its defaults, top 10; Mem0's
  `search` with its defaults, top 10), p50 and p99; then 16 callers in a closed loop over the
  questions twice: calls/s, p50, p99;
- recall@10 of the evidence turns, with 95% bootstrap intervals, by category.

The service's default search re-ranks with a model fitted on these three conversations, so its
recall here is a dev figure; `bench/results/locomo.md` gives the leave-one-conversation-out one,
and the hybrid search without re-ranking (no fitted weights) is reported beside it.

    make bench-peer && python -m bench.peer      # writes bench/results/peer.json and .md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from google.protobuf import struct_pb2

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.runtime import Embedder
from aether_memory.stores.redis.embedded import embedded_redis

from .episodes import service
from .load import embed_ceiling
from .locomo import CATEGORIES, content_of, evidence_of, interval, read_conversations

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEER_PYTHON = ROOT / "tools" / "peer" / "venv" / "bin" / "python"
S = memory_service_pb2
K = 10
CALLERS = 16
ROUNDS = 2


# ---- the OpenAI-compatible embeddings endpoint the peer calls ---------------------------------


def serve_embeddings(port: int) -> None:
    """POST /v1/embeddings over the service's bundled pack (runs until killed)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    embedder = Embedder(ensure_default_pack("int8"))
    batcher = MicroBatcher(embedder, max_batch=32, cache_size=0)

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        vectors = await batcher.embed_many(texts)
        return JSONResponse(
            {
                "object": "list",
                "model": body.get("model", "all-MiniLM-L6-v2"),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                    for i, v in enumerate(vectors)
                ],
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with batcher:
            yield

    app = Starlette(
        routes=[Route("/v1/embeddings", embeddings, methods=["POST"])], lifespan=lifespan
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---- this service ----------------------------------------------------------------------------


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


async def ours(conversations: list[dict[str, Any]], redis_url: str) -> dict[str, Any]:
    """Store, one caller's searches and recall, then 16 callers, through gRPC."""
    env = {"AETHER_EMBED_CACHE_SIZE": "0"}  # every search embeds its query, as the peer does
    async with (
        service(redis_url, index=False, env=env) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        dia: dict[str, str] = {}
        started, stored = time.perf_counter(), 0
        for c in conversations:
            md = (("aether-tenant", f"peer-{c['name']}"),)
            for session, turn, when in c["turns"]:
                metadata_ = struct_pb2.Struct()
                metadata_.update({"speaker": turn["speaker"], "dia_id": turn["dia_id"]})
                reply = await stub.StoreMemory(
                    S.StoreMemoryRequest(
                        memory=memory_pb2.Memory(
                            agent_id="locomo",
                            session_id=session,
                            content=content_of(turn),
                            event_time=when,
                            type=memory_pb2.MEMORY_TYPE_OBSERVATION,
                            metadata=metadata_,
                        )
                    ),
                    metadata=md,
                )
                dia[reply.memory.id] = turn["dia_id"]
                stored += 1
        store_s = time.perf_counter() - started

        async def ask(c: dict[str, Any], question: str, rerank: bool) -> tuple[float, list]:
            began = time.perf_counter()
            found = await stub.SearchMemories(
                S.SearchMemoriesRequest(
                    agent_id="locomo",
                    query=question,
                    page_size=K,
                    mode=S.SEARCH_MODE_UNSPECIFIED if rerank else S.SEARCH_MODE_HYBRID,
                    rerank=S.RERANK_MODE_UNSPECIFIED if rerank else S.RERANK_MODE_NONE,
                ),
                metadata=(("aether-tenant", f"peer-{c['name']}"),),
            )
            ranked = [dia.get(r.memory.id, "") for r in found.results]
            return time.perf_counter() - began, ranked

        rows: dict[str, list[dict[str, Any]]] = {"default": [], "hybrid, not re-ranked": []}
        latencies = []
        for c in conversations:
            for q in c["questions"]:
                evidence = evidence_of(q)
                for name, rerank in (("default", True), ("hybrid, not re-ranked", False)):
                    elapsed, ranked = await ask(c, q["question"], rerank)
                    if rerank:
                        latencies.append(elapsed)
                    rows[name].append(
                        {
                            "conversation": c["name"],
                            "category": q["category"],
                            "recall@10": len(evidence & set(ranked[:K])) / len(evidence),
                        }
                    )
        work = [(c, q["question"]) for c in conversations for q in c["questions"]] * ROUNDS
        loaded: list[float] = []

        async def caller(n: int) -> None:
            for c, question in work[n::CALLERS]:
                loaded.append((await ask(c, question, True))[0])

        began = time.perf_counter()
        await asyncio.gather(*(caller(n) for n in range(CALLERS)))
        loaded_s = time.perf_counter() - began
    return {
        "stored": stored,
        "store_per_s": stored / store_s,
        "rows": rows["default"],
        "rows_not_reranked": rows["hybrid, not re-ranked"],
        "one_caller": percentiles(latencies),
        "callers": {
            "callers": CALLERS,
            "requests_per_s": len(loaded) / loaded_s,
            **percentiles(loaded),
        },
    }


# ---- the peer -----------------------------------------------------------------------------


def theirs(conversations: list[dict[str, Any]], redis_url: str, embeddings: str) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as data:
        json.dump(
            [
                {
                    "name": c["name"],
                    "turns": [
                        {"dia_id": turn["dia_id"], "content": content_of(turn)}
                        for _, turn, _ in c["turns"]
                    ],
                    "questions": [
                        {
                            "question": q["question"],
                            "category": q["category"],
                            "evidence": sorted(evidence_of(q)),
                        }
                        for q in c["questions"]
                    ],
                }
                for c in conversations
            ],
            data,
        )
        data.flush()
        done = subprocess.run(
            [
                str(PEER_PYTHON),
                str(ROOT / "bench" / "peer_mem0.py"),
                "--redis",
                redis_url,
                "--embeddings",
                embeddings,
                "--data",
                data.name,
                "--callers",
                str(CALLERS),
                "--rounds",
                str(ROUNDS),
            ],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "MEM0_TELEMETRY": "false"},  # nothing leaves the machine
        )
    if done.returncode != 0:
        raise SystemExit(f"the peer failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the run and its report -----------------------------------------------------------------


def recall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["recall@10"] for r in rows]
    out: dict[str, Any] = {"all": (statistics.fmean(values), *interval(values))}
    for category, name in CATEGORIES.items():
        kept = [r["recall@10"] for r in rows if r["category"] == category]
        out[name] = (statistics.fmean(kept), *interval(kept))
    return out


async def run(limit: int | None) -> dict[str, Any]:
    conversations = read_conversations()
    if limit:  # a quick check of the harness: the first questions of each conversation
        for c in conversations:
            c["turns"], c["questions"] = c["turns"][:limit], c["questions"][: limit // 10]
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp) / "ours", fsync="everysec") as url:
            ours_result = await ours(conversations, url)
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
            [sys.executable, "-m", "bench.peer", "--serve-embeddings", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            wait_for_port(port)
            async with embedded_redis(Path(tmp) / "theirs", fsync="everysec") as url:
                peer = await asyncio.to_thread(
                    theirs, conversations, url, f"http://127.0.0.1:{port}/v1"
                )
        finally:
            server.terminate()
            server.wait(30)
    texts = [content_of(turn) for _, turn, _ in conversations[0]["turns"][:512]]
    return {
        "service": {
            **ours_result,
            "version": metadata.version("aether-memory"),
            "recall": recall(ours_result["rows"]),
            "recall_not_reranked": recall(ours_result["rows_not_reranked"]),
        },
        "peer": {**peer, "recall": recall(peer["rows"])},
        "embed_ceiling_texts_per_s": await asyncio.to_thread(embed_ceiling, texts),
        "turns": sum(len(c["turns"]) for c in conversations),
        "questions": sum(len(c["questions"]) for c in conversations),
    }


def _r(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.3f} ({value[1]:.2f}-{value[2]:.2f})"


def report(result: dict[str, Any]) -> str:
    ours_, peer = result["service"], result["peer"]
    ceiling = result["embed_ceiling_texts_per_s"]
    rows = [
        ("this service, default search", ours_, ours_["recall"]),
        ("this service, hybrid without re-ranking", None, ours_["recall_not_reranked"]),
        (f"{peer['peer']}, infer=False, Redis vector store", peer, peer["recall"]),
    ]
    lines = [
        "# This service against a peer, same LoCoMo turns, same vectors, same machine",
        "",
        f"Produced by `python -m bench.peer` (bench/peer.py says how). {result['turns']} turns "
        f"stored one call each by one caller, {result['questions']} questions; the raw embed "
        f"ceiling of the shared MiniLM int8 pack, batches of 32 turns, was {ceiling:.0f} texts/s "
        "in the same run. Latencies in ms; recall@10 with its 95% bootstrap interval.",
        "",
        "| system | store, turns/s | search, 1 caller: p50 / p99 | 16 callers: calls/s, p50 / p99 "
        "| recall@10 | multi-hop | temporal | open-domain | single-hop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, timing, r in rows:
        cells = [name]
        if timing is None:
            cells += ["", "", ""]
        else:
            one, many = timing["one_caller"], timing["callers"]
            cells += [
                f"{timing['store_per_s']:.0f}",
                f"{one['p50_ms']:.1f} / {one['p99_ms']:.1f}",
                f"{many['requests_per_s']:.0f}: {many['p50_ms']:.0f} / {many['p99_ms']:.0f}",
            ]
        cells += [_r(r["all"])] + [_r(r[n]) for n in CATEGORIES.values()]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "The service's default search re-ranks with weights fitted on these three conversations "
        "(a dev figure); its leave-one-conversation-out recall@10 is in `locomo.md`. The hybrid "
        "row has no fitted weights.",
        "",
        f"Peer configuration: {peer['peer']} on Python {peer['python']}; `Memory.from_config` "
        "with the `redis` vector store (its own embedded Redis, collection `mem0`, 384 dims), "
        "the `openai` embedder pointed at this harness's `/v1/embeddings` (all-MiniLM-L6-v2, the "
        "same int8 pack), `add([turn], user_id=<conversation>, metadata={dia_id}, infer=False)` "
        "and `search(question, filters={user_id}, top_k=10)` with its other defaults "
        "(threshold 0.1, no re-ranker). spaCy is not installed, so Mem0 runs without its "
        "optional lemmatizer and entity boosts, as its code falls back to.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-embeddings", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help="turns per conversation (a quick check)")
    args = parser.parse_args()
    if args.serve_embeddings:
        serve_embeddings(args.serve_embeddings)
        return
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} is missing: run `make bench-peer`")
    result = asyncio.run(run(args.limit))
    if args.limit:
        print(report(result))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peer.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "peer.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
