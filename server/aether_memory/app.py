"""The service's lifecycle: starts Redis and the embedder, has `wiring` build every part, runs
the gRPC server and the supervised workers, and shuts down in order."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import (
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio.cluster import RedisCluster

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.bundled import ensure_default_pack
from aether_embeddings.pack import ModelPack
from aether_embeddings.runtime import Embedder

from . import wiring
from .domain.errors import StartupError
from .service.archiving import Archivers
from .service.maintenance import Maintenance
from .service.memories import MemoryBank
from .settings import Settings
from .stores.redis.embedded import data_dir_lock, embedded_redis
from .stores.redis.episode_tail import EpisodeTails
from .stores.redis.pool import CancelSafePool, connect, refresh_topology
from .supervision import WORKER_NAMES, Worker, WorkerState, supervise
from .telemetry import Telemetry, instruments

log = logging.getLogger(__name__)
HEALTH_INTERVAL_S = 0.5
HEALTH_TIMEOUT_S = 1.0
SERVICE_NAMES = (
    memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
    episode_service_pb2.DESCRIPTOR.services_by_name["EpisodeService"].full_name,
)


@dataclass
class Running:
    """A started service: where it listens and the parts tests may inspect."""

    address: str
    port: int
    redis_url: str
    embedder: MicroBatcher
    redis: aioredis.Redis
    server: grpc.aio.Server
    archiver: Archivers | None
    maintenance: Maintenance
    memories: MemoryBank
    workers: dict[str, WorkerState]
    tails: EpisodeTails  # the live episode readers, one per tenant with subscribers


async def _watch_health(
    client: aioredis.Redis, health_servicer: health.aio.HealthServicer, stop: asyncio.Event
) -> None:
    """NOT_SERVING while Redis does not answer, SERVING again once it does."""
    serving = True
    while not stop.is_set():
        try:
            up = bool(await asyncio.wait_for(client.ping(), HEALTH_TIMEOUT_S))
        except (aioredis.RedisError, OSError, TimeoutError):
            up = False
        if up != serving and not stop.is_set():
            serving = up
            if up:  # pooled connections to the Redis that went away would each fail a call
                pool = getattr(client, "connection_pool", None)  # none on a cluster client
                if isinstance(pool, CancelSafePool):
                    await pool.disconnect_idle()
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if up
                else (health_pb2.HealthCheckResponse.NOT_SERVING)
            )
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, status)
            log.warning("Redis is %s: health %s", "back" if up else "unreachable", status)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEALTH_INTERVAL_S)


def claim_port(host: str, port: int) -> None:
    """Fail at once, with the port's name, when something already listens on it."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartupError(
                f"port {port} on {host} is taken ({error.strerror}): another aether-memory "
                "server or another program listens there; stop it or set AETHER_PORT"
            ) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tls_credentials(settings: Settings) -> grpc.ServerCredentials:
    if settings.tls_key_file is None:
        raise RuntimeError("AETHER_TLS_CERT_FILE is set but AETHER_TLS_KEY_FILE is not")
    assert settings.tls_cert_file is not None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _record_batch(size: int, seconds: float, queue_depth: int) -> None:
    instruments().embed_batch_size.record(size)
    instruments().embed_batch_duration.record(seconds)


def _load_pack(settings: Settings) -> ModelPack:
    if settings.model_pack is not None:
        return ModelPack.open(settings.model_pack)
    return ensure_default_pack(settings.model_variant, model=settings.model)


@contextlib.asynccontextmanager
async def serve(settings: Settings, telemetry: Telemetry | None = None) -> AsyncIterator[Running]:
    """Start everything; on exit drain calls, stop workers, close pools, stop embedded Redis.

    `telemetry` defaults to what the OTEL_* variables configure (off when they name no exporter).
    """
    telemetry = Telemetry.from_env() if telemetry is None else telemetry
    if not settings.require_api_keys:
        if not _loopback(settings.host):
            raise RuntimeError(
                f"refusing to serve on {settings.host} without API keys: set "
                "AETHER_REQUIRE_API_KEYS=true (keys: `aether-memory keys create`) or bind loopback"
            )
        log.warning("API keys are not required: serving on loopback only (%s)", settings.host)
    if not settings.share_port:  # `serve --workers` claimed it for all its workers
        claim_port(settings.host, settings.port)  # a clash fails before anything starts
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis_url is None:
            stack.enter_context(data_dir_lock(settings.data_dir))
        telemetry.install(settings.trace_detail)
        stack.callback(telemetry.uninstall)  # last out: spans of the shutdown are exported too
        pack = await asyncio.to_thread(_load_pack, settings)  # fails here, never at first use
        embedder = Embedder(pack, threads=settings.embed_threads, spin=settings.embed_spin)
        if settings.redis_url is None:
            redis_url = await stack.enter_async_context(
                embedded_redis(
                    settings.data_dir,
                    settings.embedded_redis_port,
                    settings.embedded_redis_fsync,
                )
            )
            # Where `aether-memory keys ...` finds the embedded Redis while the service runs.
            url_file = settings.data_dir / "redis.url"
            url_file.write_text(redis_url + "\n")
            stack.callback(url_file.unlink, missing_ok=True)
        else:
            redis_url = settings.redis_url
        client = connect(redis_url, cluster=settings.redis_cluster, decode_responses=False)
        stack.push_async_callback(client.aclose)
        await client.ping()
        batcher = await stack.enter_async_context(
            MicroBatcher(
                embedder,
                max_batch=settings.embed_max_batch,
                cache_size=settings.embed_cache_size,
                on_batch=_record_batch,
            )
        )
        telemetry.observe_embedder(batcher.stats)

        parts = await wiring.build(settings, client, batcher, pack.manifest.vector_space, stack)
        server = grpc.aio.server(
            interceptors=[*telemetry.server_interceptors(), parts.interceptor],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.max_pings_without_data", 0),
                # gRPC shares a port between processes by default (SO_REUSEPORT): a second
                # server would take half the calls to another data set.
                ("grpc.so_reuseport", int(settings.share_port)),
            ],
        )
        memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(parts.memories, server)
        episode_service_pb2_grpc.add_EpisodeServiceServicer_to_server(parts.episodes, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{settings.host}:{settings.port}"
        try:
            port = (
                server.add_secure_port(address, _tls_credentials(settings))
                if settings.tls_cert_file
                else server.add_insecure_port(address)
            )
        except RuntimeError as error:  # taken since _claim_port looked
            raise StartupError(f"cannot listen on {address}: {error}") from None
        await server.start()

        stop_workers = asyncio.Event()
        loops: dict[str, Worker] = {
            "maintenance": parts.maintenance.run,
            "health": lambda stop: _watch_health(client, health_servicer, stop),
            "access-recorder": parts.access.run,
        }
        if settings.index_episodes:
            loops["episode-indexer"] = parts.episode_indexer.run
        if parts.archiver is not None:
            loops["archiver"] = parts.archiver.run
        if parts.reembedder is not None:
            reembedder = parts.reembedder
            loops["re-embedder"] = lambda stop: reembedder.catch_up(settings.index_name, stop)
        if isinstance(parts.search_reader, RedisCluster):
            reader = parts.search_reader
            every_s = settings.redis_cluster_refresh_s
            loops["topology"] = lambda stop: refresh_topology(reader, every_s, stop)
        assert set(loops) <= set(WORKER_NAMES), "name new workers in WORKER_NAMES"
        states = {name: WorkerState(name) for name in loops}

        async def report(name: str, healthy: bool) -> None:
            status = health_pb2.HealthCheckResponse
            await health_servicer.set(
                f"aether.worker.{name}", status.SERVING if healthy else status.NOT_SERVING
            )

        for name in loops:
            await report(name, True)
        workers = asyncio.gather(
            *(
                supervise(name, run, stop_workers, states[name], report)
                for name, run in loops.items()
            )
        )

        async def shutdown() -> None:
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
            parts.episodes.draining.set()  # subscriptions end with UNAVAILABLE within a second
            await server.stop(settings.grace_s)
            await parts.episodes.aclose()
            stop_workers.set()
            await workers  # each restarted itself after failures; none is left running

        stack.push_async_callback(shutdown)
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving on %s:%d (redis %s, model %s, %d dims)",
            settings.host,
            port,
            "embedded" if settings.redis_url is None else redis_url,
            pack.manifest.model_name,
            embedder.dimension,
        )
        yield Running(
            f"{settings.host}:{port}",
            port,
            redis_url,
            batcher,
            client,
            server,
            parts.archiver,
            parts.maintenance,
            parts.bank,
            states,
            parts.tails,
        )
