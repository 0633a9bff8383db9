"""Who may call what, how often: API keys, roles, per-tenant rate limits and stream limits.

One server interceptor wraps every handler of the two services (health and reflection stay
open). Inside the call it authenticates the `authorization: Bearer <key>` (or `x-api-key`)
metadata, checks the role the method needs, and records the principal in a context variable
that `tenancy.call_tenant` reads, so a key can only ever act for its own tenant. Failures are
statuses with ErrorInfo reasons: UNAUTHENTICATED (API_KEY_MISSING, API_KEY_INVALID),
PERMISSION_DENIED (ROLE_FORBIDDEN, TENANT_FORBIDDEN), RESOURCE_EXHAUSTED (RATE_LIMITED with
RetryInfo, TOO_MANY_STREAMS). It also parses requests itself: bytes that are not the method's
request message are INVALID_ARGUMENT (field "request"), not gRPC's UNKNOWN with a Python
exception's text.
"""

from __future__ import annotations

import contextvars
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aether.memory.v1 import episode_service_pb2, memory_service_pb2
from cachetools import TTLCache
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from ..domain.errors import (
    DomainError,
    InvalidField,
    PermissionDenied,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
)
from ..stores.redis.api_keys import ApiKeys, Principal, Role
from .errors import status_for

PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "aether_principal", default=None
)
OPEN_PREFIXES = ("/grpc.",)  # health checks and reflection need no key
# "/package.Service/Method" of every RPC the protos declare NO_SIDE_EFFECTS: a read key may call
# them, and the disk guard lets them through (the clients' retry lists come from the same option).
# SubscribeEpisodes reads too; it was published without the option, and adding it now is a
# breaking change to buf (RPC_SAME_IDEMPOTENCY_LEVEL), so it is named here.
READS = frozenset(
    f"/{service.full_name}/{method.name}"
    for module in (memory_service_pb2, episode_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.GetOptions().idempotency_level == MethodOptions.NO_SIDE_EFFECTS
) | {"/aether.memory.v1.EpisodeService/SubscribeEpisodes"}
UNPARSED = object()  # what a request that is not its message deserializes to
NOT_A_REQUEST = InvalidField.one("request", "is not a valid message of this method's request type")


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's deserializer, answering UNPARSED instead of raising on bad bytes."""
    if deserializer is None:
        return None
    parse = deserializer

    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return UNPARSED

    return lenient


async def _parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose unparsable message ends the call with INVALID_ARGUMENT."""
    async for request in requests:
        if request is UNPARSED:
            raise NOT_A_REQUEST
        yield request


def may_write() -> bool:
    """Whether this call's caller may change data: a read-only key's reads count no accesses
    (which promote memories and drop their expiry). Without keys everyone may."""
    principal = PRINCIPAL.get()
    return principal is None or principal.role >= Role.WRITE


def required_role(method: str) -> Role:
    """READ for what the protos declare NO_SIDE_EFFECTS, WRITE for every other call."""
    return Role.READ if method in READS else Role.WRITE


def _metadata(context: Any) -> dict[str, str]:
    found = {}
    for key, value in context.invocation_metadata() or ():
        found[key] = value if isinstance(value, str) else value.decode(errors="replace")
    return found


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.updated = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        api_keys: ApiKeys | None,
        *,
        default_tenant: str,
        rate_per_s: float | None,
        burst: int,
        max_streams: int,
        key_cache_s: float,
        write_guard: Callable[[], None] | None = None,
    ) -> None:
        self._keys = api_keys
        self._write_guard = write_guard  # raises (StorageFull) while writes cannot be taken
        self._default_tenant = default_tenant
        self._rate = rate_per_s
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._max_streams = max_streams
        self._streams: defaultdict[str, int] = defaultdict(int)
        self._cache: TTLCache[str, Principal | None] = TTLCache(10_000, key_cache_s)

    async def _principal(self, method: str, metadata: dict[str, str]) -> Principal | None:
        if self._keys is None:
            return None
        key = metadata.get("x-api-key", "")
        auth = metadata.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise Unauthenticated("API_KEY_MISSING", "send an API key: authorization: Bearer <key>")
        if key in self._cache:
            principal = self._cache[key]
        else:
            principal = await self._keys.authenticate(key)
            self._cache[key] = principal
        if principal is None:
            raise Unauthenticated("API_KEY_INVALID", "the API key is unknown or revoked")
        if principal.role < required_role(method):
            raise PermissionDenied(
                "ROLE_FORBIDDEN",
                f"{method} needs the {required_role(method).name.lower()} role; "
                f"this key has {principal.role.name.lower()}",
            )
        asked = metadata.get("aether-tenant")
        if asked is not None and asked != principal.tenant:
            raise PermissionDenied("TENANT_FORBIDDEN", "this API key belongs to another tenant")
        return principal

    def _admit(self, tenant: str) -> None:
        if self._rate is None:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = TokenBucket(self._rate, self._burst)
        wait = bucket.take()
        if wait:
            raise RateLimited(f"{self._rate:g} calls/s per tenant", wait)

    async def _enter(self, method: str, context: Any) -> tuple[Principal | None, str]:
        metadata = _metadata(context)
        principal = await self._principal(method, metadata)
        tenant = (
            principal.tenant if principal else metadata.get("aether-tenant", self._default_tenant)
        )
        self._admit(tenant)
        if self._write_guard is not None and required_role(method) is Role.WRITE:
            self._write_guard()
        PRINCIPAL.set(principal)
        return principal, tenant

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler

        async def refuse(context: Any, error: DomainError) -> None:
            await context.abort_with_status(rpc_status.to_status(status_for(error)))

        streamed = handler.request_streaming
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: Any) -> Any:
                try:
                    await self._enter(method, context)
                    if request is UNPARSED:
                        raise NOT_A_REQUEST
                except DomainError as error:
                    await refuse(context, error)
                return await inner(_parsed(request) if streamed else request, context)

            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
            return factory(
                unary,
                request_deserializer=_lenient(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )

        streaming = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                _, tenant = await self._enter(method, context)
                if request is UNPARSED:
                    raise NOT_A_REQUEST
                if self._streams[tenant] >= self._max_streams:
                    raise TooManyStreams(self._max_streams)
            except DomainError as error:
                await refuse(context, error)
                return
            self._streams[tenant] += 1
            try:
                async for response in streaming(_parsed(request) if streamed else request, context):
                    yield response
            except DomainError as error:  # an unparsable message in the request stream
                await refuse(context, error)
            finally:
                self._streams[tenant] -= 1
                if not self._streams[tenant]:
                    del self._streams[tenant]

        factory = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream
            else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            stream,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
