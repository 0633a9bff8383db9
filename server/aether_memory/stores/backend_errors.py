"""What the backends' own exceptions mean to a caller, as domain errors: the one place that
knows redis-py's, redisvl's and pymongo's exception types (transport maps domain errors only).
"""

from __future__ import annotations

from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from pymongo.errors import ExecutionTimeout as MongoExecutionTimeout
from pymongo.errors import PyMongoError
from pymongo.errors import WTimeoutError as MongoWriteTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemory
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redisvl.exceptions import RedisVLError

from ..domain.errors import BackendUnavailable, DomainError, StorageFull


def as_domain(error: BaseException) -> DomainError | None:
    """The domain error a backend exception stands for; None for anything else."""
    match error:
        case RedisVLError() if isinstance(error.__cause__, RedisError):
            # redisvl wraps what Redis said ("Error while searching: ..."): answer for that.
            return as_domain(error.__cause__)
        case RedisConnectionError() | RedisTimeoutError():
            return BackendUnavailable("hot store", retry_after_ms=500)
        case MongoConnectionFailure() | MongoExecutionTimeout() | MongoWriteTimeout():
            # Reads that need the archive (rehydration, forgetting archived memories) read it
            # before they change anything, so a refused call changed nothing.
            return BackendUnavailable("archive", retry_after_ms=1000)
        case RedisOutOfMemory():
            return StorageFull("at its memory limit")
        case RedisResponseError() if str(error).startswith("MISCONF"):
            return StorageFull("unable to persist (a full disk?)")
    return None


def archive_timed_out(error: BaseException) -> bool:
    """An archive call that ran out of time (a deadline `archive.mongo.within` set, say)."""
    return isinstance(error, PyMongoError) and bool(error.timeout)


def archive_failed(error: BaseException) -> bool:
    """A failure of the archive itself (unreachable, refused, timed out): worth a retry."""
    return isinstance(error, PyMongoError)


def backend_failed(error: BaseException) -> bool:
    """Any failure of Redis or the archive (or the network to them), as opposed to a bug."""
    return isinstance(error, RedisError | PyMongoError | RedisVLError | OSError)
