"""The cost of telemetry: SearchMemories and RecordEpisodes with tracing and metrics on (100%
sampling, OTLP/gRPC export to a real receiver in another process) at each trace detail
(AETHER_TRACE_DETAIL: calls, the default; operations; commands) against off, in one run.

One Redis serves every round; each round starts the service afresh once per setting, in
turn: off, calls, operations, commands. The load comes from this process over loopback:
16 concurrent SearchMemories callers, and 8 RecordEpisodes streams of 50-episode requests.

    python -m bench.telemetry [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc
from aether.memory.v1 import (
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from aether_memory.app import serve
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import embedded_redis
from aether_memory.telemetry import Telemetry
from bench.output import publish

from .episodes import make_episode, pct

SINK = """
import sys, grpc
from concurrent import futures
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
class T(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        return trace_service_pb2.ExportTraceServiceResponse()
class M(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):
        return metrics_service_pb2.ExportMetricsServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(T(), server)
metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(M(), server)
print(server.add_insecure_port("127.0.0.1:0"), flush=True)
server.start()
server.wait_for_termination()
"""
# Each round starts the service once with each of these: off, then every trace detail.
SETTINGS = ("off", "calls", "operations", "commands")
TOPICS = ["travel", "food", "health", "work", "family", "music", "sport", "books"]


def telemetry_on(endpoint: str) -> Telemetry:
    resource = Resource.create({"service.name": "aether-bench"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=5000
    )
    return Telemetry(tracer_provider, MeterProvider(resource=resource, metric_readers=[reader]))


async def seed(target: str, count: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        for start in range(0, count, 100):
            requests = [
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id="bench",
                        content=f"Note {n} about {TOPICS[n % 8]}: detail {n * 7 % 1000}.",
                    )
                )
                for n in range(start, min(count, start + 100))
            ]
            await stub.BatchStoreMemories(
                memory_service_pb2.BatchStoreMemoriesRequest(requests=requests),
                metadata=(("aether-tenant", "bench"),),
            )


async def searches(target: str, callers: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def caller(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                request = memory_service_pb2.SearchMemoriesRequest(
                    agent_id="bench", query=f"what about {TOPICS[n % 8]} {n % 13}?", page_size=10
                )
                started = time.perf_counter()
                await stub.SearchMemories(request, metadata=(("aether-tenant", "bench"),))
                latencies.append(time.perf_counter() - started)
                n += callers

        await asyncio.gather(*(caller(i) for i in range(callers)))
    return {"per_s": len(latencies) / seconds, **pct(latencies)}


async def episodes(target: str, streams: int, batch: int, seconds: float) -> dict[str, float]:
    acked = 0
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = episode_service_pb2_grpc.EpisodeServiceStub(channel)
        stop = time.perf_counter() + seconds

        async def stream(s: int) -> None:
            nonlocal acked
            call = stub.RecordEpisodes(metadata=(("aether-tenant", "bench"),))
            n = 0
            while time.perf_counter() < stop:
                request = episode_service_pb2.RecordEpisodesRequest(
                    episodes=[make_episode(s, n + i) for i in range(batch)]
                )
                n += batch
                started = time.perf_counter()
                await call.write(request)
                response = await call.read()
                latencies.append(time.perf_counter() - started)
                acked += sum(1 for a in response.acks if a.HasField("written"))
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass

        await asyncio.gather(*(stream(s) for s in range(streams)))
    return {"per_s": acked / seconds, **pct(latencies)}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) another process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(
    load: Awaitable[dict[str, float]], seconds: float, sink: int
) -> dict[str, float]:
    """The load's figures, plus CPU per call of this process (the service and the load's
    client; the client's share is the same on and off) and the receiver's CPU share of one
    core: here it runs on the same two cores, where a deployment's collector would not."""
    ours, theirs = time.process_time(), cpu_s(sink)
    found = await load
    ours, theirs = time.process_time() - ours, cpu_s(sink) - theirs
    return {
        **found,
        "cpu_ms_per_call": 1000 * ours / max(1.0, found["per_s"] * seconds),
        "receiver_core_share": theirs / seconds,
    }


async def run(args: argparse.Namespace, endpoint: str, sink: int) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with embedded_redis(Path(tmp), 0) as redis_url:
            settings = Settings(
                port=0,
                redis_url=redis_url,
                index_episodes=False,
                maintenance_interval_s=3600,
                grace_s=1.0,
                episode_max_len=200_000,
            )
            async with serve(settings, Telemetry()) as running:
                await seed(running.address, args.memories)
            for r in range(args.rounds * len(SETTINGS)):
                detail = SETTINGS[r % len(SETTINGS)]
                telemetry = telemetry_on(endpoint) if detail != "off" else Telemetry()
                level = "calls" if detail == "off" else detail
                chosen = settings.model_copy(update={"trace_detail": level})
                async with serve(chosen, telemetry) as running:
                    await searches(running.address, 16, 1.0)  # warm-up
                    search = await measured(
                        searches(running.address, 16, args.seconds), args.seconds, sink
                    )
                    record = await measured(
                        episodes(running.address, 8, 50, args.seconds), args.seconds, sink
                    )
                rounds.append({"telemetry": detail, "search": search, "episodes": record})
                print(rounds[-1], flush=True)

    def median(detail: str, kind: str, key: str) -> float:
        return statistics.median(r[kind][key] for r in rounds if r["telemetry"] == detail)

    summary: dict[str, Any] = {"memories": args.memories, "seconds": args.seconds, "rounds": rounds}
    for kind in ("search", "episodes"):
        off_rate, off_cpu = median("off", kind, "per_s"), median("off", kind, "cpu_ms_per_call")
        summary[kind] = {
            "off_per_s": off_rate,
            "off_p50_ms": median("off", kind, "p50_ms"),
            "off_p99_ms": median("off", kind, "p99_ms"),
            "off_cpu_ms": off_cpu,
        }
        for detail in SETTINGS[1:]:
            on_rate, on_cpu = median(detail, kind, "per_s"), median(detail, kind, "cpu_ms_per_call")
            summary[kind][detail] = {
                "on_per_s": on_rate,
                "throughput_cost": 1 - on_rate / off_rate,
                "on_p50_ms": median(detail, kind, "p50_ms"),
                "on_p99_ms": median(detail, kind, "p99_ms"),
                "on_cpu_ms": on_cpu,
                "cpu_cost": on_cpu / off_cpu - 1,
                "receiver_core_share": median(detail, kind, "receiver_core_share"),
            }
    return summary


def report(summary: dict[str, Any]) -> str:
    lines = [
        "# Telemetry overhead (tracing at 100% sampling + metrics, OTLP/gRPC export)",
        "",
        f"Generated by `python -m bench.telemetry`: {len(summary['rounds'])} rounds taking "
        f"turns ({', '.join(SETTINGS)}), {summary['seconds']:.0f} s of load each, "
        f"{summary['memories']} memories; medians of each setting's rounds. `calls` (the "
        "default) is one span per RPC, `operations` a span per step, `commands` also a span "
        "per Redis command (`AETHER_TRACE_DETAIL`).",
        "",
        "The OTLP receiver runs on this machine's two cores too (a deployment's collector would",
        "not): the throughput cost includes its CPU. The service's own cost is the CPU per call",
        "of the process that serves (the load's gRPC client shares it, the same on and off);",
        "for episodes a call is one acknowledged event.",
        "",
        "| load | trace detail | off | on | throughput cost | CPU per call off → on (cost) "
        "| receiver, share of a core | p50 off → on | p99 off → on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"search": "SearchMemories, 16 callers", "episodes": "RecordEpisodes, 8×50"}
    units = {"search": "calls/s", "episodes": "events/s"}
    for kind, name in names.items():
        off = summary[kind]
        for detail in SETTINGS[1:]:
            s = off[detail]
            lines.append(
                f"| {name} | {detail} | {off['off_per_s']:.0f} {units[kind]} "
                f"| {s['on_per_s']:.0f} {units[kind]} | {s['throughput_cost']:.1%} "
                f"| {off['off_cpu_ms']:.3f} → {s['on_cpu_ms']:.3f} ms ({s['cpu_cost']:.1%}) "
                f"| {s['receiver_core_share']:.0%} "
                f"| {off['off_p50_ms']:.1f} → {s['on_p50_ms']:.1f} ms "
                f"| {off['off_p99_ms']:.1f} → {s['on_p99_ms']:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memories", type=int, default=2000)
    args = parser.parse_args()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    try:
        endpoint = f"http://127.0.0.1:{sink.stdout.readline().strip()}"
        summary = asyncio.run(run(args, endpoint, sink.pid))
    finally:
        sink.terminate()
        sink.wait(10)
    publish("telemetry", summary, report(summary))
    print(report(summary))


if __name__ == "__main__":
    main()
