"""Faults under load: Redis SIGKILLed and restarted, MongoDB stopped and restarted. The service
reports NOT_SERVING while Redis is gone and recovers by itself; nothing acknowledged is lost
(Redis AOF with fsync always; the archive outbox) and nothing is stored twice.

The scenarios live in bench/reliability.py, which also writes the reliability report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import (
    CLIENT_WRITE_AFTER_END,
    CannotMount,
    Outcome,
    archive_outage,
    client_cancel,
    disk_full,
    embedded_redis_kill,
    mongo_slow,
    redis_full,
    redis_kill,
    server_kill,
)

RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"}


def refused_clearly(outcome: Outcome) -> set[str]:
    """The statuses of the load's failed calls that a client could not simply retry (a search
    answering INTERNAL while Redis restarts, say): none is allowed. A refused RecordEpisodes
    stream that grpcio's client misreports as INTERNAL is not the server's (see
    tests.support.faults.code_of)."""
    calls = set(outcome.seen.get("failed calls", {})) - {CLIENT_WRITE_AFTER_END}
    return {call.split()[-1] for call in calls} - RETRYABLE


async def test_redis_killed_and_restarted_mid_load_loses_no_acked_write(tmp_path: Path) -> None:
    outcome = await redis_kill(tmp_path)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5  # there was load
    assert outcome.failed_calls > 0  # and the fault was felt
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_archive_down_under_load_loses_nothing_and_catches_up(tmp_path: Path) -> None:
    outcome = await archive_outage(tmp_path, outage_s=2.0)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_the_embedded_redis_killed_under_load_comes_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    outcome = await embedded_redis_kill(tmp_path)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5
    assert outcome.failed_calls > 0 and "differs" in outcome.detail
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_redis_at_its_memory_limit_refuses_clearly_stays_serving_and_loses_nothing(
    tmp_path: Path,
) -> None:
    outcome = await redis_full(tmp_path)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5
    assert outcome.failed_calls > 0  # writes were refused while Redis was full
    assert "RESOURCE_EXHAUSTED" in outcome.detail and "UNKNOWN" not in outcome.detail
    assert "INTERNAL" not in outcome.detail and outcome.detail.endswith(
        "health while full: SERVING"
    )
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_a_killed_server_restarted_on_its_data_stops_the_orphan_and_loses_nothing(
    tmp_path: Path,
) -> None:
    outcome = await server_kill(tmp_path)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5
    assert "left running" in outcome.detail and "stopped by the new server" in outcome.detail
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_a_full_disk_refuses_writes_clearly_keeps_reads_and_loses_nothing(
    tmp_path: Path,
) -> None:
    try:
        outcome = await disk_full(tmp_path)
    except CannotMount as error:
        pytest.skip(f"cannot mount a small tmpfs here: {error}")
    print(outcome)
    seen = outcome.seen
    assert outcome.acked_episodes > 20 and outcome.acked_memories > 5
    # Under the margin: writes refused as RESOURCE_EXHAUSTED; Redis, reads and health go on.
    assert set(seen["near-full refused"]) - {CLIENT_WRITE_AFTER_END} == {"RESOURCE_EXHAUSTED"}
    assert set(seen["near-full reads"]) == {"OK"}
    assert set(seen["near-full health"]) == {"SERVING"}
    # At the last byte Redis may fail an AOF write and exit: refusals stay retryable statuses.
    codes = {c.split()[-1] for c in seen["full refused"] if c != CLIENT_WRITE_AFTER_END}
    assert codes <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    assert set(seen["full reads"]) <= {"OK", "UNAVAILABLE"}
    assert "space freed: SERVING" in outcome.detail
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_deadlines_and_cancels_leave_nothing_half_written(tmp_path: Path) -> None:
    outcome = await client_cancel(tmp_path)
    print(outcome)
    answers = outcome.seen["answers"]
    assert outcome.acked_episodes > 20 and outcome.acked_memories > 5  # calls got through
    assert answers.get("DEADLINE_EXCEEDED", 0) > 20 and answers.get("CANCELLED", 0) > 0
    assert set(answers) <= {"DEADLINE_EXCEEDED", "CANCELLED", CLIENT_WRITE_AFTER_END}
    assert outcome.seen["pending claims"] == {"": 0}
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)


async def test_a_slow_archive_slows_no_write_and_its_reads_end_at_their_deadline(
    tmp_path: Path,
) -> None:
    outcome = await mongo_slow(tmp_path)
    print(outcome)
    seen = outcome.seen
    assert outcome.acked_episodes > 20 and outcome.acked_memories > 5
    assert set(seen["before cold reads"]) == {"NOT_FOUND"}  # the archive was asked, promptly
    assert set(seen["slow cold reads"]) <= {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
    assert seen["slow cold reads"].get("DEADLINE_EXCEEDED", 0) > 0  # slow enough to matter
    # Once it is fast again, archive reads answer (nothing hung on the slow calls).
    assert seen["after cold reads"].get("NOT_FOUND", 0) >= 10
    assert (outcome.lost, outcome.duplicated) == (0, 0)
    assert not refused_clearly(outcome)
