"""Trace detail (AETHER_TRACE_DETAIL): at the default `calls` one span per RPC carries each
step's figures; `operations` makes a span per step and none per Redis command. Separate from
test_telemetry.py, whose module-wide service owns the process-wide instruments while it runs."""

from __future__ import annotations

import grpc
import pytest
from aether.memory.v1 import memory_service_pb2
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aether_memory.app import serve
from aether_memory.telemetry import Telemetry, folded_key

from .conftest import new_client
from .test_telemetry import children, store, traced_settings, tree


def test_a_step_s_attributes_are_named_under_the_step_without_repeating_it() -> None:
    assert folded_key("aether.search.fuse", "aether.fuse.candidates") == (
        "aether.search.fuse.candidates"
    )
    assert folded_key("aether.search.vector", "aether.hits") == "aether.search.vector.hits"
    assert folded_key("aether.embed", "aether.embed.model") == "aether.embed.model"
    assert folded_key("aether.search.fuse", "aether.rescore.weights") == (
        "aether.search.fuse.rescore.weights"
    )


def recording() -> tuple[InMemorySpanExporter, TracerProvider]:
    """A tracer provider that keeps every finished span in memory."""
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return exported, provider


async def test_default_detail_makes_one_span_per_call_with_each_steps_figures(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    exported, provider = recording()
    settings = traced_settings(tmp_path_factory, None)
    assert settings.trace_detail == "calls"
    interceptors = aio_client_interceptors(tracer_provider=provider)
    async with (
        serve(settings, Telemetry(provider)) as running,
        grpc.aio.insecure_channel(running.address, interceptors=interceptors) as channel,
    ):
        client = new_client(channel)
        await store(client, "The user keeps bees on the allotment.")
        await client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(
                agent_id="agent-1", query="what does the user keep?", page_size=3
            ),
            metadata=client.md,
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await client.memory.GetMemory(
                memory_service_pb2.GetMemoryRequest(id="no-such-id"), metadata=client.md
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    root, trace_spans = tree(exported, "/aether.memory.v1.MemoryService/SearchMemories")
    # The whole search is the client's span and the server's: no span per step or command.
    assert sorted(s.kind.name for s in trace_spans) == ["CLIENT", "SERVER"]
    assert root.parent is not None  # the caller's trace context crossed the wire
    attributes = dict(root.attributes or {})
    assert attributes["rpc.service"] == "aether.memory.v1.MemoryService"
    assert attributes["rpc.method"] == "SearchMemories"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["aether.embed.mode"] == "query"
    assert attributes["aether.search.vector.hits"] >= 1
    assert attributes["aether.search.vector.index"] == "aether-memories"
    assert list(attributes["aether.search.vector.filters"]) == ["agent_id"]
    assert attributes["aether.search.fuse.candidates"] >= 1
    for step in ("aether.embed", "aether.search.vector", "aether.search.keyword"):
        assert 0 < attributes[f"{step}.ms"] < 60_000, step
    assert root.status.status_code == trace.StatusCode.UNSET

    stored, stored_spans = tree(exported, "/aether.memory.v1.MemoryService/StoreMemory")
    assert len(stored_spans) == 2 and (stored.attributes or {})["aether.embed.mode"] == "document"
    failed, _ = tree(exported, "/aether.memory.v1.MemoryService/GetMemory")
    assert (failed.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.status.description == "NOT_FOUND"


async def test_operations_detail_makes_a_span_per_step_but_none_per_redis_command(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    exported, provider = recording()
    async with (
        serve(traced_settings(tmp_path_factory, "operations"), Telemetry(provider)) as running,
        grpc.aio.insecure_channel(running.address) as channel,
    ):
        client = new_client(channel)
        await store(client, "The user rows on the river at dawn.")
        await client.memory.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(agent_id="agent-1", query="rowing?"),
            metadata=client.md,
        )
    root, trace_spans = tree(exported, "/aether.memory.v1.MemoryService/SearchMemories")
    assert {s.name for s in children(root, trace_spans)} >= {
        "aether.embed",
        "aether.search.vector",
        "aether.search.keyword",
        "aether.search.fuse",
    }
    assert not [s for s in exported.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert "aether.embed.ms" not in (root.attributes or {})
