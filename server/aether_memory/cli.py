"""`aether-memory`: run the service, or try it from a terminal (store, search, health)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

import grpc
import redis.asyncio as aioredis
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .app import serve
from .domain.errors import StartupError
from .settings import Settings
from .stores.redis.api_keys import ApiKeys, Role
from .stores.redis.embedded import server_running
from .stores.redis.episode_log import INDEX_QUEUE, RedisEpisodeLog
from .stores.redis.memory_store import RedisMemoryStore
from .stores.redis.outbox import OUTBOX_KEY
from .supervision import WORKER_NAMES
from .telemetry import JsonLogFormatter


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(settings) as running:
        print(f"aether-memory: serving on {running.address}", flush=True)
        await stop.wait()
        print("aether-memory: draining and shutting down", flush=True)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    found = [("aether-tenant", args.tenant)] if args.tenant else []
    if args.api_key:
        found.append(("authorization", f"Bearer {args.api_key}"))
    return found


def _redis_url(settings: Settings) -> str:
    """AETHER_REDIS_URL, or the embedded Redis of the server running on AETHER_DATA_DIR."""
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
    settings = Settings()
    url = _redis_url(settings)
    client = aioredis.from_url(url)
    try:
        await _ping(client, url)
        health = "UNREACHABLE"
        workers: dict[str, str] = {}
        try:
            async with grpc.aio.insecure_channel(args.target) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
                health = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                workers = await _workers(stub)
        except grpc.aio.AioRpcError as error:
            health = f"UNREACHABLE ({error.code().name})"
        store = RedisMemoryStore(client, index_name=settings.index_name, dimension=1)
        tiers = await store.tier_counts()
        redis: Any = client  # redis-py types replies as unions over every decode mode
        now_ms = int(time.time() * 1000)
        outbox, first = await redis.xlen(OUTBOX_KEY), await redis.xrange(OUTBOX_KEY, count=1)
        oldest_s = (now_ms - int(first[0][0].decode().split("-")[0])) / 1000 if first else 0.0
        lag = 0
        groups = await redis.xinfo_groups(INDEX_QUEUE) if await redis.exists(INDEX_QUEUE) else []
        for group in groups:
            lag += int(group.get("lag") or 0) + int(group.get("pending") or 0)
        recent = 0
        for keys in await RedisEpisodeLog(client, max_len=1).tenants():
            since = f"{now_ms - 60_000}-0"
            recent += len(await redis.xrange(keys.episodes(), since, "+", count=100_000))
        stored = await store.created_since(time.time() - 60)
        report = {
            "health": health,
            "workers": workers,
            "memories_by_tier": tiers,
            "archive_outbox": {"entries": int(outbox), "oldest_age_s": round(oldest_s, 3)},
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
    try:
        await client.ping()
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as error:
        raise _unreachable(url, error) from None


async def _keys(args: argparse.Namespace) -> int:
    url = _redis_url(Settings())
    client = aioredis.from_url(url)
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


def _client_call(args: argparse.Namespace) -> int:
    with grpc.insecure_channel(args.target) as channel:
        if args.command == "health":
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
            print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
            return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        if args.command == "store":
            response = stub.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        agent_id=args.agent, content=args.content, tags=args.tag or []
                    )
                ),
                metadata=_metadata(args),
                timeout=30,
            )
        else:
            response = stub.SearchMemories(
                memory_service_pb2.SearchMemoriesRequest(
                    agent_id=args.agent,
                    query=args.query,
                    page_size=args.limit,
                ),
                metadata=_metadata(args),
                timeout=30,
            )
        print(json.dumps(json_format.MessageToDict(response), indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aether-memory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the service (settings from AETHER_* variables)")
    for name in ("store", "search", "health"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--target", default="127.0.0.1:50051")
        cmd.add_argument("--tenant", default="")
        cmd.add_argument("--api-key", default="", help="sent as authorization: Bearer <key>")
        if name != "health":
            cmd.add_argument("--agent", required=True)
        if name == "store":
            cmd.add_argument("content")
            cmd.add_argument("--tag", action="append")
        if name == "search":
            cmd.add_argument("query")
            cmd.add_argument("--limit", type=int, default=5)
    status = sub.add_parser("status", help="health, counts, backlogs and throughput at a glance")
    status.add_argument("--target", default="127.0.0.1:50051")
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
    args = parser.parse_args(argv)
    if args.command == "keys":
        return asyncio.run(_keys(args))
    if args.command == "status":
        return asyncio.run(_status(args))
    settings = Settings() if args.command == "serve" else None
    handler = logging.StreamHandler()
    if settings is not None and settings.log_format == "json":
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
        assert settings is not None
        try:
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
