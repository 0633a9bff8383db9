"""OpenTelemetry end to end: span trees through the real service (SDK in-memory exporters) at each
trace detail, metric values after known traffic, trace ids on episodes, and spans arriving at a
real OTLP receiver (test_telemetry_otlp.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import (
    agent_state_pb2,
    memory_pb2,
    memory_service_pb2,
)
from google.protobuf import struct_pb2
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether_memory.app import Running, serve
from aether_memory.settings import Settings
from aether_memory.telemetry import JsonLogFormatter, Telemetry, TraceDetail

from .conftest import Client, new_client
from .test_episode_service import episode, list_all, record


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def metric_reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture(scope="module")
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def traced(
    tracer_provider: TracerProvider,
    metric_reader: InMemoryMetricReader,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Running]:
    """The service at the finest trace detail: a span per operation and per Redis command."""
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[metric_reader]))
    async with serve(traced_settings(tmp_path_factory, "commands"), telemetry) as running:
        yield running


def traced_settings(
    tmp_path_factory: pytest.TempPathFactory, detail: TraceDetail | None
) -> Settings:
    chosen = {} if detail is None else {"trace_detail": detail}
    return Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp(f"redis-traced-{detail}"),
        redis_url=None,
        maintenance_interval_s=3600,
        index_episodes=False,
        grace_s=1.0,
        **chosen,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def tclient(traced: Running, tracer_provider: TracerProvider) -> AsyncIterator[Client]:
    interceptors = aio_client_interceptors(tracer_provider=tracer_provider)
    async with grpc.aio.insecure_channel(traced.address, interceptors=interceptors) as channel:
        yield new_client(channel)


def tree(spans: InMemorySpanExporter, root_name: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The newest server span named `root_name` and every span of its trace."""
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.name == root_name and s.kind == trace.SpanKind.SERVER]
    assert roots, f"no server span {root_name}: {[s.name for s in finished]}"
    root = roots[-1]
    return root, [s for s in finished if s.context.trace_id == root.context.trace_id]


def children(of: ReadableSpan, trace_spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [
        s for s in trace_spans if s.parent is not None and s.parent.span_id == of.context.span_id
    ]


async def store(client: Client, content: str) -> memory_pb2.Memory:
    response = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="agent-1", content=content)
        ),
        metadata=client.md,
    )
    return response.memory


async def test_store_memory_span_tree_reaches_the_embedder_and_redis(
    tclient: Client, spans: InMemorySpanExporter
) -> None:
    await store(tclient, "The user's favourite tea is genmaicha.")
    root, trace_spans = tree(spans, "/aether.memory.v1.MemoryService/StoreMemory")
    client_spans = [
        s for s in trace_spans if s.kind == trace.SpanKind.CLIENT and s.name == root.name
    ]
    assert client_spans and root.parent is not None
    assert root.parent.span_id == client_spans[0].context.span_id  # context crossed the wire
    below = children(root, trace_spans)
    embed = [s for s in below if s.name == "aether.embed"]
    assert embed and embed[0].attributes is not None
    assert embed[0].attributes["aether.embed.model"]
    assert embed[0].attributes["aether.embed.mode"] == "document"
    redis_spans = [s for s in below if (s.attributes or {}).get("db.system") == "redis"]
    assert {s.name for s in redis_spans} >= {"GET", "EVALSHA"}  # dedup check, store script


async def test_search_span_tree_has_vector_keyword_and_fusion_spans(
    tclient: Client, spans: InMemorySpanExporter
) -> None:
    await store(tclient, "The user plays the cello in a community orchestra.")
    await tclient.memory.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(
            agent_id="agent-1", query="which instrument does the user play?", page_size=3
        ),
        metadata=tclient.md,
    )
    root, trace_spans = tree(spans, "/aether.memory.v1.MemoryService/SearchMemories")
    by_name = {s.name: s for s in children(root, trace_spans)}
    assert {
        "aether.embed",
        "aether.search.vector",
        "aether.search.keyword",
        "aether.search.fuse",
    } <= set(by_name)
    vector = by_name["aether.search.vector"].attributes or {}
    assert vector["aether.index"] == "aether-memories" and vector["aether.k"] >= 3
    assert vector["aether.hits"] >= 1
    assert list(vector["aether.filters"]) == ["agent_id"]
    fuse = by_name["aether.search.fuse"].attributes or {}
    assert fuse["aether.fuse.candidates"] >= 1
    assert (by_name["aether.embed"].attributes or {})["aether.embed.mode"] == "query"
    # The hit query's own span says what Redis's span of its one command would: none is made.
    assert children(by_name["aether.search.vector"], trace_spans) == []
    # Other Redis calls (the page's read, ...) have Redis's spans, sanitized: no caller data
    # (query text, ids, tag values) in them, only the command and a "?" per argument.
    redis_calls = [s for s in trace_spans if (s.attributes or {}).get("db.system") == "redis"]
    assert "EVALSHA" in {s.name for s in redis_calls}
    for call in redis_calls:
        words = str((call.attributes or {})["db.statement"]).split()
        command = [w for w in words if w != "?"]  # "SCRIPT LOAD ?": a two-word command
        assert all(w.isupper() for w in command) and words[: len(command)] == command, words


def _points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    found = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += list(metric.data.data_points)
    return found


async def test_metrics_after_known_traffic(
    tclient: Client, metric_reader: InMemoryMetricReader
) -> None:
    def rpc_count(method: str, code: str) -> int:
        return sum(
            p.count
            for p in _points(metric_reader, "aether.rpc.duration")
            if p.attributes["rpc.method"] == f"/aether.memory.v1.MemoryService/{method}"
            and p.attributes["rpc.grpc.status_code"] == code
        )

    def total(name: str, **attrs: str) -> int:
        return sum(
            p.value
            for p in _points(metric_reader, name)
            if all(p.attributes.get(k) == v for k, v in attrs.items())
        )

    stores, not_found = rpc_count("StoreMemory", "OK"), rpc_count("GetMemory", "NOT_FOUND")
    dedup = total("aether.memory.dedup_hits")
    tool = {
        r: total("aether.cache.lookups", **{"aether.cache": "tool", "aether.cache.result": r})
        for r in ("hit", "miss")
    }

    await store(tclient, "Metrics fact one.")
    await store(tclient, "Metrics fact two.")
    await store(tclient, "metrics FACT two.")  # a duplicate after normalization
    with pytest.raises(grpc.aio.AioRpcError):
        await tclient.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id="no-such-id"), metadata=tclient.md
        )
    args = struct_pb2.Struct()
    args.update({"q": "weather"})
    lookup = memory_service_pb2.GetToolResultRequest(tool_name="search", arguments=args)
    await tclient.memory.GetToolResult(lookup, metadata=tclient.md)
    await tclient.memory.PutToolResult(
        memory_service_pb2.PutToolResultRequest(
            tool_result=agent_state_pb2.ToolResult(tool_name="search", arguments=args, result=args)
        ),
        metadata=tclient.md,
    )
    await tclient.memory.GetToolResult(lookup, metadata=tclient.md)

    assert rpc_count("StoreMemory", "OK") - stores == 3
    assert rpc_count("GetMemory", "NOT_FOUND") - not_found == 1
    assert total("aether.memory.dedup_hits") - dedup == 1
    assert (
        total("aether.cache.lookups", **{"aether.cache": "tool", "aether.cache.result": "hit"})
        - tool["hit"]
        == 1
    )
    assert (
        total("aether.cache.lookups", **{"aether.cache": "tool", "aether.cache.result": "miss"})
        - tool["miss"]
        == 1
    )
    sizes = _points(metric_reader, "aether.embed.batch_size")
    assert sizes and sum(p.sum for p in sizes) >= 2  # at least the two new contents
    assert total("aether.embed.requests") >= 3


async def test_recorded_episodes_carry_the_recording_calls_trace_id(
    tclient: Client, spans: InMemorySpanExporter
) -> None:
    await record(tclient, [episode("traced-1"), episode("traced-2")])
    root, _ = tree(spans, "/aether.memory.v1.EpisodeService/RecordEpisodes")
    stored = await list_all(tclient)
    expected = trace.format_trace_id(root.context.trace_id)
    assert [e.trace_id for e in stored] == [expected, expected]


def test_json_logs_carry_trace_and_span_ids(tracer_provider: TracerProvider) -> None:
    formatter = JsonLogFormatter()
    record_ = logging.LogRecord("aether", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    outside = json.loads(formatter.format(record_))
    assert outside["message"] == "hello there" and "trace_id" not in outside
    with tracer_provider.get_tracer("test").start_as_current_span("s") as span:
        inside = json.loads(formatter.format(record_))
    assert inside["trace_id"] == trace.format_trace_id(span.get_span_context().trace_id)
    assert inside["span_id"] == trace.format_span_id(span.get_span_context().span_id)


def test_telemetry_is_off_unless_an_exporter_is_named() -> None:
    assert not Telemetry.from_env({}).enabled
    assert not Telemetry.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not Telemetry.from_env(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
    ).enabled
    assert Telemetry().server_interceptors() == []
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        Telemetry.from_env({"OTEL_TRACES_EXPORTER": "zipkin-please"})
