"""Every non-OK status this service sends, built as google.rpc.Status with typed details."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aether.memory.v1 import episode_service_pb2, error_reason_pb2, memory_service_pb2
from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..domain.errors import (
    BackendUnavailable,
    Conflict,
    CursorExpired,
    DimensionMismatch,
    DomainError,
    InvalidField,
    InvalidPageToken,
    NotFound,
    NothingToSummarize,
    NotReplicated,
    PermissionDenied,
    RateLimited,
    RequestIdReused,
    RevisionMismatch,
    ShuttingDown,
    StorageFull,
    TooLarge,
    TooManyStreams,
    Unauthenticated,
)
from ..stores.backend_errors import archive_timed_out, as_domain
from ..stores.mongo.archive import within
from .convert import check_request

DOMAIN = "memory.aether"
log = logging.getLogger(__name__)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# Every ErrorInfo.reason this server may send: error_reason.proto's values without the prefix.
REASONS = frozenset(
    value.name.removeprefix("ERROR_REASON_")
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values
    if value.number != 0
)


def build_status(
    code: int, message: str, reason: str, *details: Any, metadata: dict[str, str] | None = None
) -> status_pb2.Status:
    if reason not in REASONS:  # a bug: clients switch on the documented reasons only
        raise ValueError(f"reason {reason!r} is not in error_reason.proto")
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return status_pb2.Status(
        code=code, message=message, details=[_pack(info), *(_pack(d) for d in details)]
    )


def bad_request(
    violations: list[tuple[str, str]],
    reason: str = "INVALID_FIELD",
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations
        ]
    )
    message = "; ".join(f"{f}: {d}" for f, d in violations)
    return build_status(code_pb2.INVALID_ARGUMENT, message, reason, detail, metadata=metadata)


def status_for(error: BaseException) -> status_pb2.Status:
    """The status a caller sees for an exception; unknown exceptions become a generic INTERNAL."""
    translated = as_domain(error)  # a backend's own exception, as what it means
    if translated is not None:
        return status_for(translated)
    match error:
        case InvalidField():
            return bad_request(error.violations)
        case InvalidPageToken():
            return bad_request([("page_token", str(error))], "INVALID_PAGE_TOKEN")
        case DimensionMismatch():
            return bad_request(
                [(error.field, str(error))],
                "EMBEDDING_DIMENSION_MISMATCH",
                {"expected": str(error.expected), "actual": str(error.actual)},
            )
        case TooLarge():
            quota = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=error.field, description=str(error)
                    )
                ]
            )
            return build_status(
                code_pb2.RESOURCE_EXHAUSTED,
                str(error),
                "PAYLOAD_TOO_LARGE",
                quota,
                metadata={"limit": str(error.limit), "field": error.field},
            )
        case NotFound():
            resource = error_details_pb2.ResourceInfo(
                resource_type=error.resource_type, resource_name=error.name
            )
            return build_status(code_pb2.NOT_FOUND, str(error), error.reason, resource)
        case NothingToSummarize():
            return build_status(code_pb2.NOT_FOUND, str(error), "NOTHING_TO_SUMMARIZE")
        case RequestIdReused():
            return build_status(code_pb2.ALREADY_EXISTS, str(error), "REQUEST_ID_REUSED")
        case RevisionMismatch():
            failure = error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type="REVISION", subject="expected_revision", description=str(error)
                    )
                ]
            )
            return build_status(
                code_pb2.FAILED_PRECONDITION,
                str(error),
                "REVISION_MISMATCH",
                failure,
                metadata={"currentRevision": str(error.current)},
            )
        case CursorExpired():
            return build_status(
                code_pb2.OUT_OF_RANGE,
                str(error),
                "CURSOR_EXPIRED",
                metadata={"oldestCursor": error.oldest},
            )
        case Conflict():
            return _retry_after(code_pb2.ABORTED, str(error), "CONFLICT", 50)
        case ShuttingDown():
            return _retry_after(code_pb2.UNAVAILABLE, str(error), "SHUTTING_DOWN", 1000)
        case BackendUnavailable():
            return _retry_after(
                code_pb2.UNAVAILABLE, str(error), "BACKEND_UNAVAILABLE", error.retry_after_ms
            )
        case NotReplicated():
            return _retry_after(code_pb2.UNAVAILABLE, str(error), "NOT_REPLICATED", 500)
        case StorageFull():
            return _retry_after(code_pb2.RESOURCE_EXHAUSTED, STORAGE_FULL % str(error))
        case Unauthenticated():
            return build_status(code_pb2.UNAUTHENTICATED, str(error), error.reason)
        case PermissionDenied():
            return build_status(code_pb2.PERMISSION_DENIED, str(error), error.reason)
        case RateLimited():
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(max(1, int(error.retry_after_s * 1000)))
            return build_status(
                code_pb2.RESOURCE_EXHAUSTED,
                str(error),
                "RATE_LIMITED",
                retry,
                metadata={"limit": error.limit},
            )
        case TooManyStreams():
            return build_status(
                code_pb2.RESOURCE_EXHAUSTED,
                str(error),
                "TOO_MANY_STREAMS",
                metadata={"limit": str(error.limit)},
            )
        case DomainError():
            return build_status(code_pb2.INVALID_ARGUMENT, str(error), "INVALID_FIELD")
    log.exception("unhandled error in a call", exc_info=error)
    return build_status(code_pb2.INTERNAL, "internal error; it was logged", "INTERNAL")


STORAGE_FULL = "the hot store refuses writes, %s; reads still work"


def _retry_after(
    code: int, message: str, reason: str = "STORAGE_FULL", after_ms: int = 1000
) -> status_pb2.Status:
    """A status that says when to retry (RetryInfo)."""
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromMilliseconds(after_ms)
    return build_status(code, message, reason, retry)


Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")


def _writes() -> frozenset[str]:
    """The methods that change stored data: all but those the protos mark NO_SIDE_EFFECTS."""
    reads = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return frozenset(
        m.name
        for module in (memory_service_pb2, episode_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for m in service.methods
        if m.GetOptions().idempotency_level != reads
    )


# A servicer with a `confirm_replicated(context)` method has it awaited after each of these
# succeeded, before the answer goes out (AETHER_REDIS_WAIT_REPLICAS).
WRITES = _writes()


def mapped(
    method: Callable[[Servicer, Request, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[Servicer, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Turns exceptions of a unary handler into the statuses above."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext
    ) -> Response:
        try:
            check_request(request)  # out-of-range times, NaN in Structs: never past here
            # The caller's deadline bounds the archive's work too (Redis calls end when gRPC
            # cancels the handler at the deadline).
            with within(context.time_remaining()):
                response = await method(self, request, context)
                if method.__name__ in WRITES:
                    confirm = getattr(self, "confirm_replicated", None)
                    if confirm is not None:
                        await confirm(context)
                return response
        except (grpc.aio.AbortError, grpc.aio.BaseError):
            raise
        except Exception as error:  # every other exception becomes a documented status
            status = status_for(error)
            if _deadline_reached(error, context):
                status = build_status(
                    code_pb2.DEADLINE_EXCEEDED, "the deadline passed", "DEADLINE_EXCEEDED"
                )
            await context.abort_with_status(rpc_status.to_status(status))
            raise  # unreachable: abort_with_status raises

    return wrapper


def _deadline_reached(error: Exception, context: grpc.aio.ServicerContext) -> bool:
    """An archive call that timed out because the caller's deadline ran out (`within`)."""
    remaining = context.time_remaining()
    return archive_timed_out(error) and remaining is not None and remaining < 0.05


def mapped_stream(
    method: Callable[[Servicer, Request, grpc.aio.ServicerContext], AsyncIterator[Response]],
) -> Callable[[Servicer, Request, grpc.aio.ServicerContext], AsyncIterator[Response]]:
    """The same for server-streaming handlers."""

    @functools.wraps(method)
    async def wrapper(
        self: Servicer, request: Request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Response]:
        try:
            check_request(request)
            async for item in method(self, request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.BaseError):
            raise
        except Exception as error:  # every other exception becomes a documented status
            await context.abort_with_status(rpc_status.to_status(status_for(error)))

    return wrapper
