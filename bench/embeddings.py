"""Embedding throughput and latency, against the raw onnxruntime ceiling measured in the same run.

For each bundled pack (fp32, int8):
  - raw: `InferenceSession.run` on pre-tokenized batches of 1, 8 and 32, in arrival order and
    length-bucketed (consecutive texts of a length-sorted pool: the best raw batches can do);
  - api: `Embedder.embed` (tokenization included) with batches of 1, 8 and 32;
  - batcher: `MicroBatcher.embed` with 1, 8 and 64 concurrent single-text callers, cache off;
  - latency: p50/p99 of one text through raw (tokenize + run) vs one caller through the batcher.

Texts are dialogue turns from LoCoMo (../shared/data/locomo-dev) when present, else synthetic
sentences of similar length. Writes bench/results/embeddings.json and .md.

    python -m bench.embeddings [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.runtime import Embedder
from bench.output import publish

ROOT = Path(__file__).resolve().parent.parent
LOCOMO = ROOT.parent / "shared" / "data" / "locomo-dev"


def load_texts(limit: int = 4096) -> tuple[list[str], str]:
    texts: list[str] = []
    for path in sorted(LOCOMO.glob("*.json")):
        data = json.loads(path.read_text())
        for key in sorted(
            k for k in data if k.startswith("session_") and not k.endswith("date_time")
        ):
            turns = data[key] if isinstance(data[key], list) else []
            texts += [t["text"] for t in turns if t.get("text", "").strip()]
    if texts:
        return texts[:limit], "LoCoMo dialogue turns"
    words = ["memory", "agent", "remembers", "the", "user", "likes", "hiking", "coffee"]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, 16)) for _ in range(limit)], "synthetic 16-word sentences"


def timed(seconds: float, step: Any) -> tuple[int, float]:
    """Run step() (returns items done) repeatedly for about `seconds`; (items, elapsed)."""
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done, elapsed


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "n": len(ordered),
    }


def bench_pack(variant: str, texts: list[str], seconds: float) -> dict[str, Any]:
    pack = ensure_default_pack(variant)  # type: ignore[arg-type]
    embedder = Embedder(pack)
    cycle = itertools.cycle(range(len(texts)))
    result: dict[str, Any] = {
        "variant": variant,
        "raw": {},
        "raw_bucketed": {},
        "api": {},
        "batcher": {},
    }
    by_length = sorted(texts, key=lambda t: len(embedder.tokenize([t])[0]))

    session = embedder._session  # the same session the embedder uses: the ceiling for this pack
    for batch in (1, 8, 32):
        inputs = [embedder.encode(texts[i : i + batch]) for i in range(0, 32 * batch, batch)]
        feeds = itertools.cycle(inputs)

        def raw_step(batch: int = batch, feeds: Any = feeds) -> int:
            ids, mask = next(feeds)
            session.run(None, {"input_ids": ids, "attention_mask": mask})
            return batch

        done, elapsed = timed(seconds, raw_step)
        result["raw"][str(batch)] = done / elapsed

        stride = max(1, len(by_length) // 32)
        bucketed = [
            embedder.encode(by_length[i : i + batch])
            for i in range(0, len(by_length) - batch, stride)
        ][:32]
        bucket_feeds = itertools.cycle(bucketed)

        def bucketed_step(batch: int = batch, bucket_feeds: Any = bucket_feeds) -> int:
            ids, mask = next(bucket_feeds)
            session.run(None, {"input_ids": ids, "attention_mask": mask})
            return batch

        done, elapsed = timed(seconds, bucketed_step)
        result["raw_bucketed"][str(batch)] = done / elapsed

        def api_step(batch: int = batch) -> int:
            start = next(cycle)
            embedder.embed([texts[(start + j) % len(texts)] for j in range(batch)])
            return batch

        done, elapsed = timed(seconds, api_step)
        result["api"][str(batch)] = done / elapsed

    async def through_batcher(callers: int) -> float:
        async with MicroBatcher(embedder, max_batch=32, cache_size=0) as batcher:
            await batcher.embed(texts[0])
            stop = time.perf_counter() + seconds
            counts = [0] * callers

            async def caller(k: int) -> None:
                i = k
                while time.perf_counter() < stop:
                    await batcher.embed(texts[i % len(texts)])
                    counts[k] += 1
                    i += callers

            start = time.perf_counter()
            await asyncio.gather(*(caller(k) for k in range(callers)))
            return sum(counts) / (time.perf_counter() - start)

    for callers in (1, 8, 64):
        result["batcher"][str(callers)] = asyncio.run(through_batcher(callers))

    # Latency of one text: raw (tokenize + run) vs a lone caller through the batcher, interleaved
    # text by text so both see the same machine (sequential blocks drifted by more than 1 ms).
    sample = texts[:400]

    async def paired_latency() -> tuple[list[float], list[float]]:
        raw, batched = [], []
        async with MicroBatcher(embedder, cache_size=0) as batcher:
            await batcher.embed(texts[0])
            for text in sample:
                start = time.perf_counter()
                ids, mask = embedder.encode([text])
                session.run(None, {"input_ids": ids, "attention_mask": mask})
                raw.append(time.perf_counter() - start)
                start = time.perf_counter()
                await batcher.embed(text)
                batched.append(time.perf_counter() - start)
        return raw, batched

    raw_lat, batched_lat = asyncio.run(paired_latency())
    result["latency_batch1"] = {"raw": percentiles(raw_lat), "batcher": percentiles(batched_lat)}
    result["latency_batch1"]["overhead_p50_ms"] = (
        statistics.median(b - r for r, b in zip(raw_lat, batched_lat, strict=True)) * 1e3
    )
    result["best_raw"] = max([*result["raw"].values(), *result["raw_bucketed"].values()])
    result["batcher64_vs_raw32"] = result["batcher"]["64"] / result["raw"]["32"]
    result["batcher64_vs_best_raw"] = result["batcher"]["64"] / result["best_raw"]
    return result


def report(data: dict[str, Any]) -> str:
    lines = [
        "# Embedding benchmark",
        "",
        f"{data['machine']}; onnxruntime {data['onnxruntime']}; texts: {data['texts']} "
        f"(mean {data['mean_tokens']:.1f} tokens); {data['seconds']} s per measurement.",
        "",
        "Throughput in texts/s. `raw` is `InferenceSession.run` on pre-tokenized batches in "
        "arrival order; `bucketed` the same on batches of similar length (the best raw batches "
        "can do on this data); `api` is `Embedder.embed` including tokenization and its "
        "length-sorted chunks of 8; `batcher` is N concurrent callers of one text each through "
        "`MicroBatcher` (cache off). The ratio compares batcher 64 with the best raw figure.",
        "",
        "| pack | raw b1 | raw b8 | raw b32 | bucketed b8 | bucketed b32 | api b1 | api b8 "
        "| api b32 | batcher 1 | batcher 8 | batcher 64 | batcher 64 / best raw "
        "| b1 p50 raw → batcher (median paired overhead) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["packs"]:
        lat = r["latency_batch1"]
        lines.append(
            f"| {r['variant']} | {r['raw']['1']:.0f} | {r['raw']['8']:.0f} | {r['raw']['32']:.0f} "
            f"| {r['raw_bucketed']['8']:.0f} | {r['raw_bucketed']['32']:.0f} "
            f"| {r['api']['1']:.0f} | {r['api']['8']:.0f} | {r['api']['32']:.0f} "
            f"| {r['batcher']['1']:.0f} | {r['batcher']['8']:.0f} | {r['batcher']['64']:.0f} "
            f"| {r['batcher64_vs_best_raw']:.0%} | {lat['raw']['p50_ms']:.2f} → "
            f"{lat['batcher']['p50_ms']:.2f} ms ({lat['overhead_p50_ms']:+.2f} ms) |"
        )
    lines += ["", "p99 single-text latency (ms):", ""]
    for r in data["packs"]:
        lat = r["latency_batch1"]
        lines.append(
            f"- {r['variant']}: raw {lat['raw']['p99_ms']:.2f}, "
            f"batcher {lat['batcher']['p99_ms']:.2f}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    texts, source = load_texts()
    probe = Embedder(ensure_default_pack("fp32"))
    tokens = [int(probe.encode([t])[1].sum()) for t in texts[:1000]]
    data = {
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "onnxruntime": ort.__version__,
        "texts": source,
        "mean_tokens": float(np.mean(tokens)),
        "seconds": args.seconds,
        "packs": [bench_pack(v, texts, args.seconds) for v in ("fp32", "int8")],
    }
    publish("embeddings", data, report(data))
    print(report(data))


if __name__ == "__main__":
    main()
