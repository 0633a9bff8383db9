"""`aether-memory`: run the service, or try it from a terminal (store, search, health).

The client commands (health above all: the image's HEALTHCHECK runs it every 10 s with a 3 s
limit) import only gRPC and the generated stubs; the server's modules load for `serve`, `status`
and `keys` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .settings import Settings

CLIENT_COMMANDS = ("store", "search", "health")


def _version() -> str:
    try:
        return version("aether-memory")
    except PackageNotFoundError:
        return "unknown"


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS when asked (--tls, --ca-file), or when this machine serves with TLS
    (AETHER_TLS_CERT_FILE set, as in a container started with it): then that certificate is
    the trust root, which holds for a self-signed one or a file that carries its CA."""
    ca_file = args.ca_file or os.environ.get("AETHER_TLS_CERT_FILE")
    if not (args.tls or ca_file or args.cert_file):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes() if ca_file else None,
        private_key=Path(args.key_file).read_bytes() if args.key_file else None,
        certificate_chain=Path(args.cert_file).read_bytes() if args.cert_file else None,
    )


def _channel_options(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []


def _channel(args: argparse.Namespace) -> grpc.Channel:
    credentials = _credentials(args)
    if credentials is None:
        return grpc.insecure_channel(args.target)
    return grpc.secure_channel(args.target, credentials, options=_channel_options(args))


def _aio_channel(args: argparse.Namespace) -> grpc.aio.Channel:
    credentials = _credentials(args)
    if credentials is None:
        return grpc.aio.insecure_channel(args.target)
    return grpc.aio.secure_channel(args.target, credentials, options=_channel_options(args))


async def _serve(settings: Settings) -> None:
    from .app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(settings) as running:
        print(f"aether-memory: serving on {running.address}", flush=True)
        await stop.wait()
        print("aether-memory: draining and shutting down", flush=True)


async def _serve_workers(settings: Settings, workers: int) -> int:
    """`serve --workers N`: N server processes on one port (SO_REUSEPORT) and one Redis. The
    parent claims the port, holds the data directory and runs the embedded Redis (when no
    AETHER_REDIS_URL), restarts a worker that dies, and on SIGINT/SIGTERM stops the workers
    (each drains its calls) before Redis."""
    from .app import claim_port
    from .domain.errors import StartupError
    from .stores.redis.embedded import data_dir_lock, embedded_redis

    if settings.port == 0:
        raise StartupError("--workers needs a fixed port (AETHER_PORT), not 0")
    claim_port(settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None:
            stack.enter_context(data_dir_lock(settings.data_dir))
            redis_url = await stack.enter_async_context(
                embedded_redis(
                    settings.data_dir, settings.embedded_redis_port, settings.embedded_redis_fsync
                )
            )
            url_file = settings.data_dir / "redis.url"  # for `keys` and `status`
            url_file.write_text(redis_url + "\n")
            stack.callback(url_file.unlink, missing_ok=True)
        env = {
            **os.environ,
            "AETHER_REDIS_URL": redis_url,
            "AETHER_SHARE_PORT": "true",
            "AETHER_WORKERS": "1",
            "AETHER_PARENT_RUNS_REDIS": str(settings.redis_url is None).lower(),
        }

        async def start() -> asyncio.subprocess.Process:
            # Their own session: Ctrl-C reaches the parent, which stops them in order.
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aether_memory", "serve", env=env, start_new_session=True
            )

        running = [await start() for _ in range(workers)]
        print(f"aether-memory: {workers} workers on port {settings.port}", flush=True)
        while not stop.is_set():
            waits = {asyncio.ensure_future(p.wait()): i for i, p in enumerate(running)}
            stopped = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([*waits, stopped], return_when=asyncio.FIRST_COMPLETED)
            for future in waits:
                future.cancel()
            if stop.is_set():
                stopped.cancel()
                break
            stopped.cancel()
            for future in done:
                i = waits[future]
                print(
                    f"aether-memory: worker {running[i].pid} exited with {running[i].returncode}; "
                    "starting another",
                    file=sys.stderr,
                    flush=True,
                )
                await asyncio.sleep(1.0)
                running[i] = await start()
        print("aether-memory: stopping the workers", flush=True)
        for process in running:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        grace = settings.grace_s + 10
        for process in running:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()
    return 0


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    found = [("aether-tenant", args.tenant)] if args.tenant else []
    if args.api_key:
        found.append(("authorization", f"Bearer {args.api_key}"))
    return found


def _redis_url(settings: Settings) -> str:
    """AETHER_REDIS_URL, or the embedded Redis of the server running on AETHER_DATA_DIR."""
    from .stores.redis.embedded import server_running

    if settings.redis_url:
        return settings.redis_url
    data_dir = settings.data_dir.resolve()
    written = data_dir / "redis.url"
    if not written.exists() or not server_running(data_dir):
        raise SystemExit(
            f"aether-memory: no server runs on {data_dir} (the data directory of "
            "`aether-memory serve` here): start it, or set AETHER_DATA_DIR to its data "
            "directory, or AETHER_REDIS_URL"
        )
    return written.read_text().strip()


def _unreachable(url: str, error: Exception) -> SystemExit:
    return SystemExit(f"aether-memory: Redis at {url} does not answer ({error})")


async def _status(args: argparse.Namespace) -> int:
    """Health, workers, memories by tier, archive backlog, index lag and last-minute throughput."""

    from .domain.outbox import Backlog
    from .settings import Settings
    from .stores.redis.episode_index import RedisEpisodeIndex
    from .stores.redis.episode_log import RedisEpisodeLog
    from .stores.redis.keys import keys_of
    from .stores.redis.memory_store import RedisMemoryStore
    from .stores.redis.outbox import RedisOutbox
    from .stores.redis.pool import connect

    settings = Settings()
    url = _redis_url(settings)
    client = connect(url, cluster=settings.redis_cluster)
    try:
        await _ping(client, url)
        health = "UNREACHABLE"
        workers: dict[str, str] = {}
        try:
            async with _aio_channel(args) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
                health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                workers = await _workers(stub)
        except grpc.aio.AioRpcError as error:
            health = f"UNREACHABLE ({error.code().name})"
        store = RedisMemoryStore(
            client, index_name=settings.index_name, dimension=1, layout=settings.index_layout
        )
        tiers = await store.tier_counts()
        redis: Any = client  # redis-py types replies as unions over every decode mode
        now_ms = int(time.time() * 1000)
        n = settings.archive_partitions
        backlog = Backlog.total(
            [
                await RedisOutbox(client, batch=1, partition=p, partitions=n).backlog()
                for p in range(n)
            ]
        )
        index = RedisEpisodeIndex(
            client,
            index_name=f"{settings.index_name}-episodes",
            dimension=1,
            layout=settings.index_layout,
        )
        tenants = await RedisEpisodeLog(client, max_len=1).tenants()
        lag = await index.total_lag()
        recent = 0
        for tenant in tenants:
            since = f"{now_ms - 60_000}-0"
            recent += len(await redis.xrange(keys_of(tenant).episodes(), since, "+", count=100_000))
        stored = await store.created_since(time.time() - 60)
        report = {
            "health": health,
            "workers": workers,
            "memories_by_tier": tiers,
            "archive_outbox": {
                "entries": backlog.entries,
                "oldest_age_s": round(backlog.oldest_age_s, 3),
            },
            "episode_index_lag": lag,
            "last_minute": {"memories_stored": stored, "episodes_recorded": recent},
        }
        print(json.dumps(report, indent=2))
        healthy = health == "SERVING" and all(v == "SERVING" for v in workers.values())
        return 0 if healthy else 1
    finally:
        await client.aclose()


async def _workers(stub: health_pb2_grpc.HealthStub) -> dict[str, str]:
    """Each background worker the server runs: SERVING, or NOT_SERVING while it is failing
    and being restarted (its errors are in the server's log and `aether.worker.restarts`)."""
    from .supervision import WORKER_NAMES

    states = {}
    for name in WORKER_NAMES:
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=f"aether.worker.{name}"), timeout=3
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                continue  # not run by this server (no archive, episodes not indexed)
            raise
        states[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return states


async def _ping(client: aioredis.Redis, url: str) -> None:
    import redis.asyncio as aioredis

    try:
        await client.ping()
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as error:
        raise _unreachable(url, error) from None


async def _keys(args: argparse.Namespace) -> int:

    from .settings import Settings
    from .stores.redis.api_keys import ApiKeys, Role
    from .stores.redis.pool import connect

    settings = Settings()
    url = _redis_url(settings)
    client = connect(url, cluster=settings.redis_cluster)
    try:
        await _ping(client, url)
        keys = ApiKeys(client)
        if args.action == "create":
            key_id, key = await keys.create(args.tenant, Role[args.role.upper()], args.name)
            print(json.dumps({"key_id": key_id, "key": key, "tenant": args.tenant}))
            print("aether-memory: the key is shown once; store it now", file=sys.stderr)
        elif args.action == "revoke":
            if not await keys.revoke(args.key_id):
                print(f"aether-memory: no key {args.key_id}", file=sys.stderr)
                return 1
        else:
            for p in await keys.list(args.tenant):
                print(json.dumps({"key_id": p.key_id, "role": p.role.name.lower(), "name": p.name}))
        return 0
    finally:
        await client.aclose()


async def _reembed(args: argparse.Namespace) -> int:

    from .reembed_command import run
    from .settings import Settings
    from .stores.redis.pool import connect

    settings = Settings()
    url = _redis_url(settings)
    client = connect(url, cluster=settings.redis_cluster)
    try:
        await _ping(client, url)
        return await run(args, client)
    finally:
        await client.aclose()


async def _index_layout(args: argparse.Namespace) -> int:
    import contextlib

    from .domain.errors import StartupError
    from .index_layout_command import run
    from .settings import Settings
    from .stores.redis.embedded import data_dir_lock, embedded_redis
    from .stores.redis.pool import connect

    settings = Settings()
    async with contextlib.AsyncExitStack() as stack:
        if settings.redis_url:
            url = settings.redis_url
        else:  # the data directory's own Redis, which no server may hold meanwhile
            try:
                stack.enter_context(data_dir_lock(settings.data_dir))
            except StartupError as held:
                raise SystemExit(f"aether-memory: stop the service first: {held}") from None
            url = await stack.enter_async_context(
                embedded_redis(settings.data_dir, 0, settings.embedded_redis_fsync)
            )
        client = connect(url, decode_responses=False)
        stack.push_async_callback(client.aclose)
        await _ping(client, url)
        return await run(args, client)
    raise AssertionError("unreachable")


def _client_call(args: argparse.Namespace) -> int:
    with _channel(args) as channel:
        if args.command == "health":
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=args.timeout
            )
            print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
        from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
        from google.protobuf import json_format

        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        if args.command == "store":
            response: Any = stub.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id=args.agent, content=args.content, tags=args.tag or []
                    )
                ),
                metadata=_metadata(args),
                timeout=args.timeout,
            )
        else:
            response = stub.SearchMemories(
                memory_service_pb2.SearchMemoriesRequest(
                    agent_id=args.agent,
                    query=args.query,
                    page_size=args.limit,
                ),
                metadata=_metadata(args),
                timeout=args.timeout,
            )
        print(
            json.dumps(
                json_format.MessageToDict(response, always_print_fields_with_no_presence=True),
                indent=2,
                ensure_ascii=False,
            )
        )
        if args.command == "search" and not response.results:
            tenant = args.tenant or "the default tenant"
            print(
                f"aether-memory: no memories of agent {args.agent!r} in {tenant} match; "
                "check --agent and --tenant",
                file=sys.stderr,
            )
            return 1
    return 0


def _connection_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--target", default="127.0.0.1:50051", help="the server's host:port")
    tls = cmd.add_argument_group(
        "TLS", "on with --tls or --ca-file, or by itself where AETHER_TLS_CERT_FILE is set"
    )
    tls.add_argument("--tls", action="store_true", help="TLS, trusting the system's roots")
    tls.add_argument("--ca-file", help="trust this CA (PEM) for the server's certificate")
    tls.add_argument("--cert-file", help="client certificate (PEM), where the server asks one")
    tls.add_argument("--key-file", help="the client certificate's key (PEM)")
    tls.add_argument("--server-name", help="the name to check the certificate against")


def build_parser() -> argparse.ArgumentParser:
    """Every command and its arguments."""
    parser = argparse.ArgumentParser(
        prog="aether-memory",
        description="Aether Memory: long-term, working and episodic memory for AI agents, "
        "over gRPC.",
        epilog="Settings are AETHER_* environment variables (the README lists them all). "
        "Start with `aether-memory serve`, then `aether-memory store --agent me 'a fact'` and "
        "`aether-memory search --agent me 'fact'`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_cmd = sub.add_parser(
        "serve",
        help="run the service (embedded Redis and bundled model unless AETHER_* say otherwise)",
    )
    serve_cmd.add_argument(
        "--workers",
        type=int,
        default=None,
        help="server processes sharing the port and one Redis (default: AETHER_WORKERS, 1)",
    )
    helps = {
        "store": "store one memory (prints it as JSON)",
        "search": "search an agent's memories (exit 1 when nothing matches)",
        "health": "the server's gRPC health: prints SERVING and exits 0, else exits 1",
    }
    for name in CLIENT_COMMANDS:
        cmd = sub.add_parser(name, help=helps[name], description=helps[name])
        _connection_arguments(cmd)
        cmd.add_argument("--tenant", default="", help="tenant (default: the server's default)")
        cmd.add_argument("--api-key", default="", help="sent as authorization: Bearer <key>")
        cmd.add_argument("--timeout", type=float, default=5.0 if name == "health" else 30.0)
        if name != "health":
            cmd.add_argument("--agent", required=True, help="the agent whose memories these are")
        if name == "store":
            cmd.add_argument("content", help="the memory's text")
            cmd.add_argument("--tag", action="append", help="a tag (repeat for more)")
        if name == "search":
            cmd.add_argument("query", help="what to look for")
            cmd.add_argument("--limit", type=int, default=5, help="results to show (default 5)")
    mcp = sub.add_parser(
        "mcp",
        help="memory tools over the Model Context Protocol (needs the [mcp] extra)",
        description="An MCP server (stdio, or streamable HTTP on loopback) whose tools call the "
        "running service; tenant, key and agent come from these flags or AETHER_MCP_* variables.",
    )
    env = os.environ.get
    mcp.add_argument("--target", default=env("AETHER_MCP_TARGET", "127.0.0.1:50051"))
    mcp.add_argument("--tenant", default=env("AETHER_MCP_TENANT"))
    mcp.add_argument("--api-key", default=env("AETHER_MCP_API_KEY"))
    mcp.add_argument("--agent", default=env("AETHER_MCP_AGENT", "default"))
    mcp.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
    mcp.add_argument("--port", type=int, default=8765, help="streamable-http, on 127.0.0.1")
    reembed = sub.add_parser(
        "reembed",
        help="re-embed every memory and episode with another bundled model into a new index, "
        "while the service serves (talks to Redis)",
        description="Builds <AETHER_INDEX_NAME>-<model> beside the serving index and fills it "
        "with the model's vectors; then restart the service on it (AETHER_MODEL, "
        "AETHER_INDEX_NAME) and, once it logs the index complete, run --drop-source.",
    )
    reembed.add_argument("--model", help="the bundled model to move to, e.g. all-mpnet-base-v2")
    reembed.add_argument("--pack", help="or a model pack directory (`aether-embed export`)")
    reembed.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    reembed.add_argument("--index", help="the new index (default <AETHER_INDEX_NAME>-<model>)")
    reembed.add_argument(
        "--threads", type=int, default=1, help="inference threads (leave the service its cores)"
    )
    reembed.add_argument(
        "--drop-source",
        action="store_true",
        help="after the cut-over: drop the index AETHER_INDEX_NAME replaced, and its vectors",
    )
    layout = sub.add_parser(
        "index-layout",
        help="move a store from one shared index to one index per tenant (talks to Redis; "
        "stop the service first)",
        description="Indexes every memory and episode into its tenant's own index, verifies "
        "the counts, then drops the shared indexes; resumes where it stopped. Afterwards "
        "start the service with AETHER_INDEX_LAYOUT=tenant (docs/operations.md).",
    )
    layout.add_argument("layout", choices=["tenant"], help="the layout to move to")
    move = sub.add_parser(
        "move-slot",
        help="move a hash slot of a Redis Cluster to another primary, with its tenants' "
        "indexes (talks to Redis)",
        description="Creates the slot's tenants' indexes on the target, moves the keys "
        "(MIGRATE), then hands the slot over; the service keeps serving (docs/operations.md).",
    )
    move.add_argument("slot", type=int, help="the hash slot (0-16383)")
    move.add_argument("target", help="the primary to move it to, host:port")
    form = sub.add_parser(
        "cluster-create",
        help="form a Redis Cluster from fresh nodes, by host name or IP (talks to Redis)",
        description="The first nodes become the primaries and share the slots; the rest "
        "replicate them in turn. Resolves host names (redis-cli --cluster create takes IPs "
        "only), and can be run again: it finishes a cluster formed half-way and leaves a "
        "formed one as it is (docs/operations.md).",
    )
    form.add_argument("nodes", nargs="+", metavar="HOST:PORT", help="the nodes, primaries first")
    form.add_argument("--replicas", type=int, default=1, help="replicas per primary (default 1)")
    form.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for each step (default 60)"
    )
    status = sub.add_parser("status", help="health, workers, counts, backlogs and throughput")
    _connection_arguments(status)
    keys = sub.add_parser("keys", help="create, revoke and list API keys (talks to Redis)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", choices=["read", "write", "admin"], default="write")
    create.add_argument("--name", default="")
    revoke = actions.add_parser("revoke")
    revoke.add_argument("key_id")
    listing = actions.add_parser("list")
    listing.add_argument("--tenant", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "keys":
        return asyncio.run(_keys(args))
    if args.command == "status":
        return asyncio.run(_status(args))
    if args.command == "reembed":
        if not args.drop_source and not (args.model or args.pack):
            parser.error("reembed needs --model or --pack (or --drop-source)")
        return asyncio.run(_reembed(args))
    if args.command == "index-layout":
        return asyncio.run(_index_layout(args))
    if args.command == "move-slot":
        from .slot_move import run as move_slot

        return asyncio.run(move_slot(args))
    if args.command == "cluster-create":
        from .cluster_create import run as cluster_create

        return cluster_create(args)
    if args.command == "mcp":
        if getattr(args, "mcp_missing", False):
            print(
                "aether-memory: the MCP server needs: pip install 'aether-memory[mcp]'",
                file=sys.stderr,
            )
            return 2
        from .mcp_server import run

        return run(args)
    if args.command == "serve":
        from .settings import Settings

        settings = Settings()
    handler = logging.StreamHandler()
    if args.command == "serve" and settings.log_format == "json":
        from .telemetry import JsonLogFormatter

        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.command == "serve":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        from .domain.errors import StartupError

        workers = args.workers or settings.workers
        try:
            if workers > 1:
                return asyncio.run(_serve_workers(settings, workers))
            asyncio.run(_serve(settings))
        except StartupError as error:
            print(f"aether-memory: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        return _client_call(args)
    except grpc.RpcError as error:
        print(f"aether-memory: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
