"""Spans leave the service over the wire: a real OTLP/gRPC receiver (the collector's trace
service from opentelemetry-proto) gets them when the OTEL_* variables say so."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from aether_memory.app import serve
from aether_memory.settings import Settings

from .conftest import new_client
from .test_telemetry import store


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[_Receiver, int]]:
    receiver = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, port
    server.stop(None)


async def test_spans_reach_a_real_otlp_receiver_over_grpc(
    otlp_receiver: tuple[_Receiver, int],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    receiver, port = otlp_receiver
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "aether-under-test")
    settings = Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp("redis-otlp"),
        redis_url=None,
        maintenance_interval_s=3600,
        index_episodes=False,
        grace_s=1.0,
    )
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        await store(new_client(channel), "Exported over OTLP.")
    # Leaving serve() shut the provider down, which flushed the batch processor.
    names, services, attributes = set(), set(), set()
    for request in receiver.requests:
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    services.add(attr.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names |= {s.name for s in scope_spans.spans}
                attributes |= {a.key for s in scope_spans.spans for a in s.attributes}
    assert services == {"aether-under-test"}
    # The default detail: the call's span carries the embedding's figures and duration.
    assert "/aether.memory.v1.MemoryService/StoreMemory" in names
    assert {"aether.embed.model", "aether.embed.ms", "rpc.grpc.status_code"} <= attributes
