"""What Redis's errors mean to a caller: a cluster between owners of a slot is a retry, not a
bug (UNAVAILABLE, never INTERNAL); a Redis that refused the command for what it is stays a bug."""

from __future__ import annotations

import pytest
import redis.exceptions as r
from redis.asyncio.connection import Connection

from aether_memory.domain.errors import BackendUnavailable, StorageFull
from aether_memory.stores.backend_errors import as_domain, backend_failed


@pytest.mark.parametrize(
    "error",
    [
        r.ConnectionError("Connection refused"),
        r.TimeoutError("Timeout reading from socket"),
        r.BusyLoadingError("Redis is loading the dataset in memory"),
        r.ClusterDownError("The cluster is down"),
        r.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
        r.TryAgainError("Multiple keys request during rehashing of slot"),
        r.MovedError("3999 127.0.0.1:6381"),
        r.AskError("3999 127.0.0.1:6381"),
        r.SlotNotCoveredError("Slot 3999 is not covered by the cluster."),
        r.ReadOnlyError("You can't write against a read only replica."),
        r.NoScriptError("No matching script. Please use EVAL."),
        r.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
    ],
)
def test_a_redis_between_owners_is_unavailable_for_a_moment(error: Exception) -> None:
    assert isinstance(as_domain(error), BackendUnavailable)
    assert backend_failed(error)


def test_refusals_for_what_the_command_is_stay_errors() -> None:
    assert as_domain(r.ResponseError("Syntax error at offset 12")) is None
    assert as_domain(r.ClusterCrossSlotError("Keys in request don't hash to the same slot")) is None
    assert isinstance(as_domain(r.OutOfMemoryError("OOM command not allowed")), StorageFull)


async def test_a_connection_redis_py_lost_under_a_call_is_unavailable_and_our_bugs_are_not() -> (
    None
):
    # What redis-py 8.1 raises writing to a connection whose transport was torn down.
    connection = Connection()
    with pytest.raises(AttributeError) as lost:
        await connection._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    assert isinstance(as_domain(lost.value), BackendUnavailable)
    with pytest.raises(AttributeError) as ours:
        _ = None.name  # type: ignore[attr-defined]
    assert as_domain(ours.value) is None and not backend_failed(ours.value)
