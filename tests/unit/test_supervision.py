"""The worker supervisor: restarts after any failure, with backoff, and stops when told."""

from __future__ import annotations

import asyncio
import itertools

from aether_memory.supervision import WorkerState, supervise
from tests.support.waiting import until


async def test_a_failing_worker_is_restarted_until_it_runs_and_stops_with_the_service() -> None:
    stop, fourth = asyncio.Event(), asyncio.Event()
    runs: list[float] = []

    async def flaky(stop: asyncio.Event) -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) < 4:
            raise ConnectionError(f"down, run {len(runs)}")
        fourth.set()
        await stop.wait()

    state = WorkerState("flaky")
    reports: list[bool] = []

    async def report(name: str, healthy: bool) -> None:
        reports.append(healthy)

    task = asyncio.create_task(supervise("flaky", flaky, stop, state, report))
    await asyncio.wait_for(fourth.wait(), 5)
    assert state.running and state.restarts == 3
    assert state.last_error == "ConnectionError: down, run 3"
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39  # 0.1 s, doubling
    assert reports == [False, False, False] and not state.healthy
    # The fourth run has lasted a second: healthy again.
    await until(lambda: state.healthy, "the supervisor reported healthy again")
    assert reports == [False, False, False, True]
    stop.set()
    await asyncio.wait_for(task, 1)
    assert not state.running and len(runs) == 4


async def test_a_worker_that_returns_early_is_run_again() -> None:
    stop = asyncio.Event()
    calls = 0

    async def quits(stop: asyncio.Event) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            stop.set()

    await asyncio.wait_for(supervise("quits", quits, stop, WorkerState("quits")), 2)
    assert calls == 2
