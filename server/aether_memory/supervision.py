"""Background workers that outlive their failures: each one restarts with backoff after any
error, and says how it is doing (in `Running.workers`, the health service as
`aether.worker.<name>`, the log and the `aether.worker.restarts` metric).

A worker is a coroutine function taking the service's stop event; it returns when the event is
set. An exception (Redis gone, the archive unreachable, a bug) ends that run, not the worker: it
is logged, counted, reported unhealthy, and the worker runs again after 0.1 s, doubling up to
30 s while it keeps failing, and from 0.1 s again once a run lasted a minute. A run that has
lasted a second without failing reports the worker healthy again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .telemetry import instruments

log = logging.getLogger(__name__)

# Every worker a server may run; each reports to the health service as aether.worker.<name>.
WORKER_NAMES = (
    "maintenance",
    "health",
    "access-recorder",
    "episode-indexer",
    "archiver",
    "re-embedder",
    "topology",
)
Worker = Callable[[asyncio.Event], Awaitable[None]]
Report = Callable[[str, bool], Awaitable[None]]  # (worker name, healthy)
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 30.0
HEALTHY_RUN_S = 60.0
HEALTHY_AFTER_S = 1.0


@dataclass
class WorkerState:
    name: str
    running: bool = False
    healthy: bool = True
    restarts: int = 0
    last_error: str = ""  # the exception's type and message; logs carry its traceback
    last_error_time: float = 0.0


async def _nothing(name: str, healthy: bool) -> None:
    return None


async def supervise(
    name: str, worker: Worker, stop: asyncio.Event, state: WorkerState, report: Report = _nothing
) -> None:
    """Run `worker` until `stop` is set, restarting it after each failure."""
    delay = FIRST_DELAY_S
    while not stop.is_set():
        started = time.monotonic()
        state.running = True
        run = asyncio.ensure_future(worker(stop))
        try:
            done, _ = await asyncio.wait({run}, timeout=HEALTHY_AFTER_S)
            if not done and not state.healthy:
                state.healthy = True
                await report(name, True)
            await run
        except asyncio.CancelledError:
            run.cancel()
            raise
        except Exception as error:  # any failure is the supervisor's to handle
            state.restarts += 1
            state.last_error = f"{type(error).__name__}: {error}"[:500]
            state.last_error_time = time.time()
            state.healthy = False
            instruments().worker_restarts.add(1, {"worker": name})
            log.warning(
                "worker %s failed; restart %d in %.1fs", name, state.restarts, delay, exc_info=True
            )
            await report(name, False)
        else:
            if stop.is_set():
                break
            log.warning("worker %s returned before the service stopped; restarting", name)
        finally:
            state.running = False
        if time.monotonic() - started >= HEALTHY_RUN_S:
            delay = FIRST_DELAY_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, MAX_DELAY_S)
