"""Errors the domain raises; the transport maps each to one gRPC status."""

from __future__ import annotations


class StartupError(Exception):
    """The service cannot start as configured; the message says why and what to do."""


class DomainError(Exception):
    """Base of every error with a meaning for the caller."""


class InvalidField(DomainError):
    """One or more request fields are invalid: (field path, description) pairs."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {why}" for field, why in violations))
        self.violations = violations

    @classmethod
    def one(cls, field: str, why: str) -> InvalidField:
        return cls([(field, why)])


class InvalidPageToken(DomainError):
    """A page token is malformed or belongs to another request."""


class DimensionMismatch(DomainError):
    def __init__(self, field: str, expected: int, actual: int) -> None:
        super().__init__(f"{field} has {actual} values, the service's dimension is {expected}")
        self.field, self.expected, self.actual = field, expected, actual


class TooLarge(DomainError):
    def __init__(self, field: str, limit: int, unit: str = "bytes") -> None:
        super().__init__(f"{field} exceeds {limit} {unit}")
        self.field, self.limit = field, limit


class NotFound(DomainError):
    """A resource does not exist in the caller's tenant."""

    def __init__(self, resource_type: str, name: str, reason: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type, self.name, self.reason = resource_type, name, reason


class RequestIdReused(DomainError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id {request_id!r} was used for a different request")
        self.request_id = request_id


class Conflict(DomainError):
    """Concurrent writes kept changing a resource while this write was applied."""

    def __init__(self, resource: str, name: str) -> None:
        super().__init__(f"the {resource} {name!r} kept changing under this write; retry")


class RevisionMismatch(DomainError):
    def __init__(self, current: int) -> None:
        super().__init__(f"the stored revision is {current}")
        self.current = current


class CursorExpired(DomainError):
    def __init__(self, oldest: str) -> None:
        super().__init__("the cursor points before the oldest retained episode")
        self.oldest = oldest


class NothingToSummarize(DomainError):
    """A session has no memories to summarize."""


class ShuttingDown(DomainError):
    """The server is draining; the caller should reconnect (and resume from its cursor)."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; reconnect and resume from your last cursor")


class Unauthenticated(DomainError):
    """No credentials, or credentials that name no live API key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(DomainError):
    """Valid credentials that do not allow this call (role, or another tenant)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RateLimited(DomainError):
    def __init__(self, limit: str, retry_after_s: float) -> None:
        super().__init__(f"rate limit reached: {limit}; retry after {retry_after_s:.2f}s")
        self.limit = limit
        self.retry_after_s = retry_after_s


class TooManyStreams(DomainError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} concurrent streams per tenant")
        self.limit = limit


class StorageFull(DomainError):
    """The hot store cannot take writes now (its disk is nearly full); reads still work."""


class NotReplicated(DomainError):
    """A write reached the primary but not enough of its replicas within the wait
    (AETHER_REDIS_WAIT_REPLICAS): a failover now could lose it. Retrying is safe for an
    idempotent call (a request_id makes any call so)."""

    def __init__(self, confirmed: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(
            f"written, but {confirmed} of the {wanted} replicas required confirmed it within "
            f"{timeout_ms} ms; retry"
        )
        self.confirmed = confirmed
        self.wanted = wanted


class BackendUnavailable(DomainError):
    """A store the call needs did not answer (connection lost, timed out); nothing was changed
    that the caller must know of, and the call may be retried."""

    def __init__(self, backend: str, retry_after_ms: int) -> None:
        super().__init__(f"the {backend} is unreachable; retry")
        self.backend = backend
        self.retry_after_ms = retry_after_ms
