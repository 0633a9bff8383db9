"""OpenTelemetry traces, metrics and structured logs.

Off unless the standard variables name an exporter: `OTEL_TRACES_EXPORTER` and
`OTEL_METRICS_EXPORTER` = `otlp` (gRPC, configured by `OTEL_EXPORTER_OTLP_*`) or `console`;
`OTEL_SDK_DISABLED=true` forces off; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and
`OTEL_TRACES_SAMPLER` work as the SDK documents. When off, no interceptor or instrumentation is
installed and the project's own spans and instruments are the API's no-ops.

How much of a call becomes spans is `AETHER_TRACE_DETAIL` (passed to `Telemetry.install`):

- `calls` (the default): one server span per RPC. The operations inside it (embedding, each
  search half, fusion, an episode append) add their attributes and their duration
  (`<operation>.ms`) to that span instead of making spans of their own.
- `operations`: a child span per operation, as above.
- `commands`: also a span per Redis command and MongoDB operation (the libraries'
  instrumentations).

Every span costs this process CPU (span creation and OTLP encoding in Python, about 0.1-0.5 ms
each under load here), so the default keeps a search at one span; the finer levels are for
looking into one deployment's behaviour (bench/results/telemetry.md has the cost of each).
Background jobs (maintenance ticks, archiver batches, episode indexing) run outside any call
and always make their own spans.

The project's spans and instruments are reached through `operation()` and `instruments()`,
which `Telemetry.install()` points at its providers (and `uninstall()` points back at no-ops), so
a test can run services with different providers one after another in one process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import grpc
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
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
from opentelemetry.trace import NoOpTracerProvider, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

SCOPE = "aether_memory"
TraceDetail = Literal["calls", "operations", "commands"]


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
_detail: TraceDetail = "calls"


@functools.lru_cache(maxsize=1024)
def folded_key(operation: str, key: str) -> str:
    """`key` of `operation` as it is written on the call's span: under the operation's name,
    without repeating it (`aether.fuse.candidates` of `aether.search.fuse` is
    `aether.search.fuse.candidates`; `aether.hits` of `aether.search.vector` is
    `aether.search.vector.hits`)."""
    if key.startswith(operation + "."):
        return key
    rest, name = key.removeprefix("aether.").split("."), operation.split(".")
    for n in range(min(len(name), len(rest)), 0, -1):
        if name[-n:] == rest[:n]:
            rest = rest[n:]
            break
    return ".".join([operation, *rest])


class _Folded:
    """An operation recorded on the call's span, under the operation's name, so two
    operations of one call never overwrite each other's figures."""

    __slots__ = ("_name", "_span")

    def __init__(self, span: trace.Span, name: str) -> None:
        self._span, self._name = span, name

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(folded_key(self._name, key), value)


class Attributed(Protocol):
    """What `operation()` yields: its own span, or (`calls`) the call's span under its name."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


@contextlib.contextmanager
def operation(
    name: str, attributes: Mapping[str, AttributeValue] | None = None
) -> Iterator[Attributed]:
    """One step of the service's work (`aether.embed`, `aether.search.vector`, ...): a span of
    its own, or, at the `calls` detail inside a call, attributes and a duration on the call's
    span. Repeated in one call, the duration adds up and `<name>.calls` counts the steps."""
    parent = trace.get_current_span() if _detail == "calls" else None
    if parent is None or not parent.is_recording():
        with _tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span
        return
    folded = _Folded(parent, name)
    for key, value in (attributes or {}).items():
        folded.set_attribute(key, value)
    started = time.perf_counter()
    try:
        yield folded
    finally:
        elapsed = 1000 * (time.perf_counter() - started)
        held = getattr(parent, "attributes", None) or {}
        before = held.get(name + ".ms")
        if isinstance(before, float):
            parent.set_attribute(name + ".calls", int(held.get(name + ".calls", 1)) + 1)
            elapsed += before
        parent.set_attribute(name + ".ms", round(elapsed, 3))


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

    def install(self, detail: TraceDetail = "calls") -> None:
        """Point the project's spans and instruments here, at this trace detail; at `commands`,
        instrument redis and pymongo."""
        global _tracer, _instruments, _detail
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            _tracer, _detail = self.tracer_provider.get_tracer(SCOPE), detail
            # Instrumentation is process-wide: the service started last owns it (one
            # telemetry-enabled service per process is the deployment; tests start several).
            for instrumentor in (RedisInstrumentor(), PymongoInstrumentor()):
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
                if detail == "commands":
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
        if not self.enabled:
            return []
        tracer = self.tracer_provider.get_tracer(SCOPE) if self.tracer_provider else None
        return [RpcTelemetryInterceptor(tracer, metrics=self.meter_provider is not None)]

    def uninstall(self) -> None:
        """Flush and stop exporting; the project's spans and instruments become no-ops again."""
        global _tracer, _instruments, _detail
        if self.tracer_provider is not None:
            from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
            from opentelemetry.instrumentation.redis import RedisInstrumentor

            _detail = "calls"
            for instrumentor in (RedisInstrumentor(), PymongoInstrumentor()):
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        _tracer = NoOpTracerProvider().get_tracer(SCOPE)
        _instruments = Instruments.create(NoOpMeterProvider().get_meter(SCOPE))


class RpcTelemetryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """One wrapper per RPC for both signals: a SERVER span named by the method (the caller's
    W3C trace context continued from the metadata) and `aether.rpc.duration` by method and
    final status. The final status is read from the context, so statuses sent with
    `abort_with_status` are on the span too."""

    def __init__(self, tracer: trace.Tracer | None, *, metrics: bool) -> None:
        self._tracer, self._metrics = tracer, metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method: str = details.method
        service, _, name = method.lstrip("/").partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer, record_metrics = self._tracer, self._metrics

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Any, object]:
            if tracer is None:
                return None, None
            carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            parent = propagate.extract(carrier)
            span = tracer.start_span(method, parent, SpanKind.SERVER, attributes)
            return span, otel_context.attach(trace.set_span_in_context(span, parent))

        def end(
            span: Any,
            token: object,
            started: float,
            context: grpc.aio.ServicerContext[Any, Any],
            error: BaseException | None,
        ) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK
            if not isinstance(code, grpc.StatusCode):
                code = grpc.StatusCode.UNKNOWN
            if record_metrics:
                instruments().rpc_duration.record(
                    time.perf_counter() - started,
                    {"rpc.method": method, "rpc.grpc.status_code": code.name},
                )
            if span is None:
                return
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
                if error is not None and not isinstance(error, grpc.aio.AbortError):
                    span.record_exception(error)
            otel_context.detach(token)  # type: ignore[arg-type]
            span.end()

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started, error = time.perf_counter(), None
                span, token = begin(context)
                try:
                    return await inner(request, context)
                except BaseException as raised:
                    error = raised
                    raise
                finally:
                    end(span, token, started, context, error)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        streaming = handler.unary_stream or handler.stream_stream

        async def streamed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, error = time.perf_counter(), None
            span, token = begin(context)
            try:
                async for response in streaming(request, context):
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                end(span, token, started, context, error)

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
