"""Faults under load: Redis SIGKILLed and restarted, MongoDB stopped and restarted. The service
reports NOT_SERVING while Redis is gone and recovers by itself; nothing acknowledged is lost
(Redis AOF with fsync always; the archive outbox) and nothing is stored twice.

The scenarios live in bench/reliability.py, which also writes the reliability report."""

from __future__ import annotations

from pathlib import Path

from bench.reliability import archive_outage, redis_kill


async def test_redis_killed_and_restarted_mid_load_loses_no_acked_write(tmp_path: Path) -> None:
    outcome = await redis_kill(tmp_path)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5  # there was load
    assert outcome.failed_calls > 0  # and the fault was felt
    assert (outcome.lost, outcome.duplicated) == (0, 0)


async def test_archive_down_under_load_loses_nothing_and_catches_up(tmp_path: Path) -> None:
    outcome = await archive_outage(tmp_path, outage_s=2.0)
    print(outcome)
    assert outcome.acked_episodes > 100 and outcome.acked_memories > 5
    assert (outcome.lost, outcome.duplicated) == (0, 0)
