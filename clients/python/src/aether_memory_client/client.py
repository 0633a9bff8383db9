"""A thin, typed client over the generated stubs: channel set-up, tenant and API-key metadata on
every call, default deadlines, retries of idempotent calls on UNAVAILABLE (gRPC's own retry
policy), and `record()`, which resends unacknowledged episodes with the same event ids after a
broken RecordEpisodes stream. `AsyncClient` for asyncio, `Client` for synchronous code."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc
from aether.memory.v1 import (
    episode_pb2,
    episode_service_pb2,
    episode_service_pb2_grpc,
    memory_service_pb2_grpc,
)

from .rpcs import RETRYABLE

# The unary reads (rpcs.py, generated from the protos' idempotency_level) are retried after
# UNAVAILABLE.
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": s, "method": m} for s, m in RETRYABLE],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
OPTIONS = [("grpc.service_config", SERVICE_CONFIG), ("grpc.enable_retries", 1)]
MAX_PER_REQUEST = 100


def _metadata(tenant: str | None, api_key: str | None) -> tuple[tuple[str, str], ...]:
    pairs = []
    if tenant:
        pairs.append(("aether-tenant", tenant))
    if api_key:
        pairs.append(("authorization", f"Bearer {api_key}"))
    return tuple(pairs)


def _details(details: Any, extra: tuple[tuple[str, str], ...], timeout: float | None) -> Any:
    metadata = tuple(details.metadata or ()) + extra
    return details._replace(
        metadata=metadata, timeout=details.timeout if details.timeout is not None else timeout
    )


class _AsyncMetadataBase:
    def __init__(self, extra: tuple[tuple[str, str], ...], timeout: float | None) -> None:
        self._extra, self._timeout = extra, timeout


# grpc.aio files each interceptor under the first kind it implements, so each kind is its own
# class (one object implementing all four would only ever see unary-unary calls).
class _AsyncUnaryUnary(_AsyncMetadataBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self._extra, self._timeout), request)


class _AsyncUnaryStream(_AsyncMetadataBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_details(details, self._extra, None), request)


class _AsyncStreamUnary(_AsyncMetadataBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_details(details, self._extra, self._timeout), requests)


class _AsyncStreamStream(_AsyncMetadataBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_details(details, self._extra, None), requests)


class AsyncClient:
    """`async with AsyncClient("127.0.0.1:50051", tenant="demo") as c: await c.memory...`"""

    def __init__(
        self,
        target: str,
        *,
        tenant: str | None = None,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        extra = _metadata(tenant, api_key)
        interceptors: list[Any] = [
            kind(extra, timeout_s)
            for kind in (_AsyncUnaryUnary, _AsyncUnaryStream, _AsyncStreamUnary, _AsyncStreamStream)
        ]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(
                target, options=OPTIONS, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=OPTIONS, interceptors=interceptors
            )
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self.channel)
        self.episodes = episode_service_pb2_grpc.EpisodeServiceStub(self.channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def record(
        self, episodes: Sequence[episode_pb2.Episode], attempts: int = 3
    ) -> list[episode_pb2.EpisodeAck]:
        """One ack per episode, in order; after a broken stream the unacknowledged episodes are
        sent again with the same event ids (the server acks resent ids with the original)."""
        acks: list[episode_pb2.EpisodeAck] = []
        last: Exception | None = None
        for _ in range(attempts):
            if len(acks) == len(episodes):
                break
            pending = list(episodes[len(acks) :])

            async def requests(
                pending: list[episode_pb2.Episode] = pending,
            ) -> AsyncIterator[episode_service_pb2.RecordEpisodesRequest]:
                for i in range(0, len(pending), MAX_PER_REQUEST):
                    yield episode_service_pb2.RecordEpisodesRequest(
                        episodes=pending[i : i + MAX_PER_REQUEST]
                    )

            try:
                async for response in self.episodes.RecordEpisodes(requests()):
                    acks.extend(response.acks)
            except grpc.aio.AioRpcError as error:
                last = error
        if len(acks) < len(episodes):
            raise RuntimeError(f"recorded {len(acks)} of {len(episodes)} episodes") from last
        return acks


class _SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, extra: tuple[tuple[str, str], ...], timeout: float | None) -> None:
        self._extra, self._timeout = extra, timeout

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_details(details, self._extra, self._timeout), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_details(details, self._extra, None), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_details(details, self._extra, self._timeout), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_details(details, self._extra, None), requests)


class Client:
    """The synchronous twin of AsyncClient: `with Client(target, tenant=...) as c: ...`"""

    def __init__(
        self,
        target: str,
        *,
        tenant: str | None = None,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        raw = (
            grpc.insecure_channel(target, options=OPTIONS)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=OPTIONS)
        )
        self._raw = raw
        self.channel = grpc.intercept_channel(
            raw, _SyncMetadata(_metadata(tenant, api_key), timeout_s)
        )
        self.memory = memory_service_pb2_grpc.MemoryServiceStub(self.channel)
        self.episodes = episode_service_pb2_grpc.EpisodeServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def record(
        self, episodes: Sequence[episode_pb2.Episode], attempts: int = 3
    ) -> list[episode_pb2.EpisodeAck]:
        acks: list[episode_pb2.EpisodeAck] = []
        last: Exception | None = None
        for _ in range(attempts):
            if len(acks) == len(episodes):
                break
            pending = list(episodes[len(acks) :])

            def requests(
                pending: list[episode_pb2.Episode] = pending,
            ) -> Iterator[episode_service_pb2.RecordEpisodesRequest]:
                for i in range(0, len(pending), MAX_PER_REQUEST):
                    yield episode_service_pb2.RecordEpisodesRequest(
                        episodes=pending[i : i + MAX_PER_REQUEST]
                    )

            try:
                for response in self.episodes.RecordEpisodes(requests()):
                    acks.extend(response.acks)
            except grpc.RpcError as error:
                last = error
        if len(acks) < len(episodes):
            raise RuntimeError(f"recorded {len(acks)} of {len(episodes)} episodes") from last
        return acks
