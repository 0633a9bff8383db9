"""Counts reads of memories off the reader's path.

Under `appendfsync always` (the embedded default) Redis answers a write only after its fsync.
A search used to count its results' reads in the same script that read them, so each search
waited for the disk: one caller at 10k memories ran at 53 searches/s against 67/s with everysec
(p50 17.9 against 13.7 ms, `bench/results/load-always.md`). Reads are now read-only; the counts
come here, are coalesced per memory while a write is in flight (the episode log's group commit,
for access stats) for up to 50 ms, and are written by a worker in one round trip.

A count is never dropped while the server runs: a failed write puts its counts back and is
retried. Stopping writes what is left (a few tries, then the number not written is logged).
What this server read but has not written yet is added to the counts it answers with, so a
caller sees its own reads (`GetMemory` twice answers 1, then 2). Only other readers see the
stored count some milliseconds late, which is all that promotion and decay ever read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from ..domain.tenant import Tenant
from ..stores.backend_errors import backend_failed

log = logging.getLogger(__name__)

Reads = dict[str, dict[str, tuple[int, float]]]  # tenant -> memory id -> (reads, last read time)
RETRY_S = 0.5
# Reads are gathered this long before a write: at most 20 writes a second whatever the read
# rate. Under appendfsync always each write is an fsync, during which Redis serves no one.
INTERVAL_S = 0.05
FINAL_TRIES = 3


def _merge(into: Reads, reads: Reads) -> None:
    for tenant, by_id in reads.items():
        target = into.setdefault(tenant, {})
        for memory_id, (count, last) in by_id.items():
            held, held_last = target.get(memory_id, (0, 0.0))
            target[memory_id] = (held + count, max(held_last, last))


class AccessStore(Protocol):
    async def record_accesses(
        self, reads: Mapping[str, Mapping[str, tuple[int, float]]]
    ) -> None: ...


class AccessRecorder:
    def __init__(
        self, store: AccessStore, *, interval_s: float = INTERVAL_S, retry_s: float = RETRY_S
    ) -> None:
        self._store = store
        self._interval_s = interval_s
        self._retry_s = retry_s
        self._pending: Reads = {}
        self._writing: Reads = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # one write in flight: `_writing` is that write's

    def record(self, tenant: Tenant, ids: Iterable[str], now: float) -> None:
        """Count one read of each memory in `ids`, at `now`."""
        _merge(self._pending, {tenant.name: {memory_id: (1, now) for memory_id in ids}})
        self._wake.set()

    def unwritten(self, tenant: Tenant, memory_id: str, stored_last: float) -> int:
        """Reads of the memory that this server counted and that the stats it read back (last
        read time `stored_last`) do not hold yet.

        A write in flight may or may not have been applied when the stats were read: it was if
        the stored last read time has reached the write's (the script only moves it forward).
        """
        count = self._pending.get(tenant.name, {}).get(memory_id, (0, 0.0))[0]
        writing, last = self._writing.get(tenant.name, {}).get(memory_id, (0, 0.0))
        return count + (writing if last > stored_last else 0)

    async def flush(self) -> None:
        """Write what is pending now; on failure it is pending again and the error is raised."""
        async with self._flushing:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            try:
                await self._store.record_accesses(self._writing)
            except BaseException:
                _merge(self._pending, self._writing)
                raise
            finally:
                self._writing = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Write counts as they come until `stop`, then write what is left."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                with contextlib.suppress(TimeoutError):  # gather more reads, unless stopping
                    await asyncio.wait_for(asyncio.shield(stopping), self._interval_s)
                self._wake.clear()
                try:
                    await self.flush()
                except Exception as error:
                    if not backend_failed(error):
                        raise
                    log.warning("access counts not written yet (%s); retrying", error)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._retry_s)
                    self._wake.set()
        finally:
            stopping.cancel()
        for attempt in range(FINAL_TRIES):
            try:
                await self.flush()
                return
            except Exception as error:
                if not backend_failed(error):
                    raise
                if attempt + 1 == FINAL_TRIES:
                    lost = sum(c for by_id in self._pending.values() for c, _ in by_id.values())
                    log.error("%d access counts not written at shutdown: %s", lost, error)
                    return
                await asyncio.sleep(self._retry_s)
