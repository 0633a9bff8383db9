"""What the backends' own exceptions mean to a caller, as domain errors: the one place that
knows redis-py's, redisvl's and pymongo's exception types (transport maps domain errors only).
"""

from __future__ import annotations

import os

from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from pymongo.errors import ExecutionTimeout as MongoExecutionTimeout
from pymongo.errors import PyMongoError
from pymongo.errors import WTimeoutError as MongoWriteTimeout
from redis.exceptions import AskError as RedisRedirected
from redis.exceptions import ClusterError as RedisClusterError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError as RedisNoScript
from redis.exceptions import OutOfMemoryError as RedisOutOfMemory
from redis.exceptions import ReadOnlyError as RedisReadOnly
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import SlotNotCoveredError as RedisSlotNotCovered
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import TryAgainError as RedisTryAgain
from redisvl.exceptions import RedisVLError

from ..domain.errors import BackendUnavailable, DomainError, StorageFull


def _lost_connection_in_redis_py(error: BaseException) -> bool:
    """redis-py 8.1's asyncio connection, written to after its transport was torn down (the
    peer closed it, or the cluster client closed its connections after one node failed while
    other calls were using them), raises AttributeError or TypeError on a None where it
    means a lost connection (redis/redis-py#4287)."""
    if not isinstance(error, AttributeError | TypeError) or "NoneType" not in str(error):
        return False
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(_REDIS_CONNECTION):
            return True
        tb = tb.tb_next
    return False


_REDIS_CONNECTION = os.path.join("redis", "asyncio", "connection.py")


def as_domain(error: BaseException) -> DomainError | None:
    """The domain error a backend exception stands for; None for anything else."""
    if _lost_connection_in_redis_py(error):
        return BackendUnavailable("hot store", retry_after_ms=500)
    match error:
        case RedisVLError() if isinstance(error.__cause__, RedisError):
            # redisvl wraps what Redis said ("Error while searching: ..."): answer for that.
            return as_domain(error.__cause__)
        case RedisConnectionError() | RedisTimeoutError():
            return BackendUnavailable("hot store", retry_after_ms=500)
        case (
            RedisClusterError()
            | RedisTryAgain()
            | RedisRedirected()
            | RedisSlotNotCovered()
            | RedisReadOnly()
            | RedisNoScript()
        ):
            # A Redis Cluster between owners of a slot (a failover, a slot moving): the command
            # did not run where it was sent (a script Redis did not find did not run either).
            return BackendUnavailable("hot store", retry_after_ms=500)
        case RedisResponseError() if str(error).startswith("UNBLOCKED"):
            # A blocking read on a primary that just became a replica.
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
    return isinstance(
        error, RedisError | RedisClusterException | PyMongoError | RedisVLError | OSError
    ) or _lost_connection_in_redis_py(error)
