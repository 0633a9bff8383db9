"""OpenTelemetry traces, metrics and structured logs.

Off unless the standard variables name an exporter: `OTEL_TRACES_EXPORTER` and
`OTEL_METRICS_EXPORTER` = `otlp` (gRPC, configured by `OTEL_EXPORTER_OTLP_*`) or `console`;
`OTEL_SDK_DISABLED=true` forces off; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and
`OTEL_TRACES_SAMPLER` work as the SDK documents. When off, no interceptor or instrumentation is
installed and the project's own spans and instruments are the API's no-ops.

The project's spans and instruments are reached through `tracer()` and `instruments()`, which
`Telemetry.install()` points at its providers (and `uninstall()` points back at no-ops), so a
test can run services with different providers one after another in one process.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import NoOpTracerProvider

SCOPE = "aether_memory"


@dataclass(frozen=True)
class Instruments:
    rpc_duration: metrics.Histogram
    embed_batch_size: metrics.Histogram
    embed_batch_duration: metrics.Histogram
    cache_lookups: metrics.Counter
    dedup_hits: metrics.Counter
    episodes_appended: metrics.Counter
    worker_restarts: metrics.Counter
    outbox_backlog: metrics._Gauge
    archive_lag: metrics._Gauge
    episode_index_lag: metrics._Gauge
    memories: metrics._Gauge

    @classmethod
    def create(cls, meter: metrics.Meter) -> Instruments:
        return cls(
            rpc_duration=meter.create_histogram(
                "aether.rpc.duration", unit="s", description="Server-side duration of each RPC"
            ),
            embed_batch_size=meter.create_histogram(
                "aether.embed.batch_size", unit="{text}", description="Texts per model call"
            ),
            embed_batch_duration=meter.create_histogram(
                "aether.embed.batch_duration", unit="s", description="Duration of a model call"
            ),
            cache_lookups=meter.create_counter(
                "aether.cache.lookups", description="Cache lookups by cache and result"
            ),
            dedup_hits=meter.create_counter(
                "aether.memory.dedup_hits", description="Stores answered by an existing memory"
            ),
            episodes_appended=meter.create_counter(
                "aether.episodes.appended", description="Episodes written (duplicates excluded)"
            ),
            worker_restarts=meter.create_counter(
                "aether.worker.restarts", description="Background worker failures, by worker"
            ),
            outbox_backlog=meter.create_gauge(
                "aether.archive.backlog", description="Outbox entries not yet archived"
            ),
            archive_lag=meter.create_gauge(
                "aether.archive.lag", unit="s", description="Age of the oldest unarchived entry"
            ),
            episode_index_lag=meter.create_gauge(
                "aether.episodes.index_lag", description="Episodes not yet embedded for search"
            ),
            memories=meter.create_gauge(
                "aether.memories", description="Memories in the hot tier, by tier"
            ),
        )


_tracer: trace.Tracer = NoOpTracerProvider().get_tracer(SCOPE)
_instruments = Instruments.create(NoOpMeterProvider().get_meter(SCOPE))


def tracer() -> trace.Tracer:
    return _tracer


def instruments() -> Instruments:
    return _instruments


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class Telemetry:
    """The providers of one running service, and what it installs while it runs."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider

    @property
    def enabled(self) -> bool:
        return self.tracer_provider is not None or self.meter_provider is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Telemetry:
        env = os.environ if environ is None else environ
        if _truthy(env.get("OTEL_SDK_DISABLED")):
            return cls()
        traces = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
        metric = env.get("OTEL_METRICS_EXPORTER", "none").strip().lower()
        if traces == "none" and metric == "none":
            return cls()
        attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "aether-memory"}
        resource = Resource.create(attributes)
        tracer_provider = None
        if traces != "none":
            tracer_provider = TracerProvider(resource=resource)  # the sampler comes from env
            processor: SpanProcessor
            if traces == "console":
                processor = BatchSpanProcessor(ConsoleSpanExporter())
            elif traces == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter,
                )

                processor = BatchSpanProcessor(OTLPSpanExporter())
            else:
                raise ValueError(f"OTEL_TRACES_EXPORTER={traces!r}: use otlp, console or none")
            tracer_provider.add_span_processor(processor)
        meter_provider = None
        if metric != "none":
            reader: MetricReader
            if metric == "console":
                reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
            elif metric == "otlp":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter,
                )

                reader = PeriodicExportingMetricReader(OTLPMetricExporter())
            else:
                raise ValueError(f"OTEL_METRICS_EXPORTER={metric!r}: use otlp, console or none")
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        return cls(tracer_provider, meter_provider)

    def install(self) -> None:
        """Point the project's spans and instruments here; instrument redis and pymongo."""
        global _tracer, _instruments
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            _tracer = self.tracer_provider.get_tracer(SCOPE)
            # Instrumentation is process-wide: the service started last owns it (one
            # telemetry-enabled service per process is the deployment; tests start several).
            for instrumentor in (RedisInstrumentor(), PymongoInstrumentor()):
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
                instrumentor.instrument(tracer_provider=self.tracer_provider)
        if self.meter_provider is not None:
            _instruments = Instruments.create(self.meter_provider.get_meter(SCOPE))

    def observe_embedder(self, stats: Any) -> None:
        """Counters and a gauge read from the micro-batcher's statistics at each export."""
        if self.meter_provider is None:
            return
        meter = self.meter_provider.get_meter(SCOPE)

        def read(name: str) -> Callable[[metrics.CallbackOptions], list[metrics.Observation]]:
            return lambda _: [metrics.Observation(getattr(stats, name))]

        meter.create_observable_counter(
            "aether.embed.requests", [read("requests")], description="Texts asked for"
        )
        meter.create_observable_counter(
            "aether.embed.cache_hits", [read("cache_hits")], description="Texts served by cache"
        )
        meter.create_observable_gauge(
            "aether.embed.queue_depth", [read("queue_depth")], description="Texts waiting"
        )

    def server_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        found: list[grpc.aio.ServerInterceptor] = []
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.grpc import aio_server_interceptor

            found.append(aio_server_interceptor(tracer_provider=self.tracer_provider))  # type: ignore[no-untyped-call]
        if self.meter_provider is not None:
            found.append(RpcMetricsInterceptor())
        return found

    def uninstall(self) -> None:
        """Flush and stop exporting; the project's spans and instruments become no-ops again."""
        global _tracer, _instruments
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            for instrumentor in (RedisInstrumentor(), PymongoInstrumentor()):
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        _tracer = NoOpTracerProvider().get_tracer(SCOPE)
        _instruments = Instruments.create(NoOpMeterProvider().get_meter(SCOPE))


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Records `aether.rpc.duration` by method and final status for every kind of RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method

        def record(
            started: float, context: grpc.aio.ServicerContext[Any, Any], error: bool
        ) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.UNKNOWN if error else grpc.StatusCode.OK
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            instruments().rpc_duration.record(
                time.perf_counter() - started,
                {"rpc.method": method, "rpc.grpc.status_code": name},
            )

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, failed = time.perf_counter(), True
                try:
                    result = await inner(request, context)
                    failed = False
                    return result
                finally:
                    record(started, context, failed)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            streaming = handler.unary_stream or handler.stream_stream

            async def streamed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, failed = time.perf_counter(), True
                try:
                    async for response in streaming(request, context):
                        yield response
                    failed = False
                finally:
                    record(started, context, failed)

            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
            return factory(
                streamed,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return factory(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids when there is a span."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = trace.format_trace_id(context.trace_id)
            entry["span_id"] = trace.format_span_id(context.span_id)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def current_trace_id() -> str:
    """The W3C trace id of the current span, or "" outside a sampled trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""
