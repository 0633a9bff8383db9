"""One real service per test session (embedded Redis with modules, bundled model), reached through
generated stubs over a real channel. Tests isolate themselves by tenant, never by flushing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import episode_service_pb2_grpc, memory_service_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from aether_memory.app import Running, serve
from aether_memory.settings import Settings


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data_dir: Path = tmp_path_factory.mktemp("redis-data")
    settings = Settings(
        port=0, data_dir=data_dir, redis_url=None, grace_s=1.0, maintenance_interval_s=3600
    )
    async with serve(settings) as running:
        yield running


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def channel(service: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(service.address) as ch:
        yield ch


@dataclass
class Client:
    """Stubs bound to one tenant's metadata."""

    memory: memory_service_pb2_grpc.MemoryServiceStub
    episodes: episode_service_pb2_grpc.EpisodeServiceStub
    tenant: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("aether-tenant", self.tenant),)


def new_client(channel: grpc.aio.Channel, tenant: str | None = None) -> Client:
    return Client(
        memory_service_pb2_grpc.MemoryServiceStub(channel),
        episode_service_pb2_grpc.EpisodeServiceStub(channel),
        tenant or f"t-{uuid.uuid4().hex[:10]}",
    )


@pytest.fixture
def client(channel: grpc.aio.Channel) -> Client:
    return new_client(channel)


@dataclass
class RpcFailure:
    code: grpc.StatusCode
    reason: str
    fields: list[str]
    status: status_pb2.Status


def failure(error: grpc.aio.AioRpcError) -> RpcFailure:
    """The code, ErrorInfo.reason and BadRequest field paths of a failed call."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, f"no google.rpc.Status details on {error}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    reason, fields = "", []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "memory.aether"
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return RpcFailure(error.code(), reason, fields, status)
