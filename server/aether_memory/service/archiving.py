"""The archiver: moves outbox entries to MongoDB, acknowledging each only after MongoDB did.

The outbox is one stream per tenant. The archiver takes the streams that writers marked due
(waiting while none is) and reads a batch from each in one round trip: its pending entries
(read before but not confirmed: a failed write, a crash) or else its new ones. It writes them
to the archive in batches across tenants, so many small tenants cost no more archive round
trips than one large one. A stream that may hold more goes back on the due set, so a busy
tenant cannot hold the others up. A periodic sweep (and one on
taking the lease) puts back any stream with entries that no mark points at (its writer died
between the write and the mark).

The tenants are split into partitions (AETHER_ARCHIVE_PARTITIONS, 1 by default), each with its
own due set and listing and its own archiver (`Archivers`). One replica at a time holds a
partition's lease and archives it: a tenant's entries are then applied in stream order, so an
older version of a document can never overwrite a newer one (every document belongs to one
tenant, and a tenant to one partition). Other replicas wait for the lease; when its holder
dies, the lease expires and another takes over the pending entries. Partitions are archived
in parallel, by one replica or spread over several.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..domain.outbox import Backlog, OutboxEntry
from ..stores.backend_errors import archive_failed
from ..telemetry import instruments, operation
from .ports import ArchiveWriter, JobLease, Outbox

log = logging.getLogger(__name__)


class Archiver:
    def __init__(
        self,
        outbox: Outbox,
        archive: ArchiveWriter,
        lease: JobLease,
        *,
        block_ms: int = 500,
        max_retry_s: float = 5.0,
        sweep_s: float = 10.0,
        observe_s: float = 1.0,
        gauge: Callable[[], Awaitable[Backlog]] | None = None,
    ) -> None:
        """`gauge`: the backlog this archiver reports to the metrics (every partition's, by the
        first partition's archiver); None: it reports none."""
        self.outbox = outbox
        self._gauge = gauge
        self.archive = archive
        self._lease = lease
        self._block_ms = block_ms
        self._max_retry_s = max_retry_s
        self._sweep_s = sweep_s
        self._observe_s = observe_s
        self._swept_at = -math.inf  # monotonic; -inf: sweep at the next step
        self._observed_at = -math.inf
        self.archived = 0  # documents written, this process
        self.failures = 0  # failed batches (retried), this process
        self.last_error: str | None = None
        self.features: object | None = None  # what the archive is, once it answered

    async def backlog(self) -> Backlog:
        """Entries not yet archived, and how long the oldest has waited."""
        return await self.outbox.backlog()

    async def step(self, block_ms: int | None = None, *, sweep: bool = False) -> int:
        """Archive what the due streams hold (a batch from each, read in one round trip and
        written to the archive `batch` entries at a time); how many entries were archived."""
        if sweep or time.monotonic() - self._swept_at >= self._sweep_s:
            await self.outbox.sweep()
            self._swept_at = time.monotonic()
        streams = await self.outbox.due(self._block_ms if block_ms is None else block_ms)
        if not streams:
            return 0
        batch = self.outbox.batch
        try:
            found = await self.outbox.read(streams)
            taken = [(stream, entry) for stream, entries, _ in found for entry in entries]
            for start in range(0, len(taken), batch):
                await self._archive(taken[start : start + batch])
        except BaseException:
            for stream in streams:  # they still hold entries; the sweep is the fallback
                with contextlib.suppress(Exception):
                    await self.outbox.requeue(stream)
            raise
        for stream, entries, pending in found:
            if pending or len(entries) >= batch:  # more may wait behind these
                await self.outbox.requeue(stream)
        return len(taken)

    async def _archive(self, taken: list[tuple[str, OutboxEntry]]) -> None:
        """Write entries (each stream's in its order) to the archive, then confirm them."""
        confirmed: dict[str, list[str]] = {}
        for stream, entry in taken:
            confirmed.setdefault(stream, []).append(entry.stream_id)
        with operation(
            "aether.archive.batch", attributes={"aether.archive.entries": len(taken)}
        ) as span:
            written = await self.archive.apply([entry for _, entry in taken])
            span.set_attribute("aether.archive.documents", written)
            await self.outbox.confirm(confirmed)
        self.archived += len(taken)

    async def observe(self) -> None:
        """The backlog gauges, at most every `observe_s` (the backlog reads every stream)."""
        if self._gauge is None or time.monotonic() - self._observed_at < self._observe_s:
            return
        self._observed_at = time.monotonic()
        backlog = await self._gauge()
        instruments().outbox_backlog.set(backlog.entries)
        instruments().archive_lag.set(backlog.oldest_age_s)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Archive until the outbox is empty (tests and benchmarks); raises on timeout."""
        deadline = time.monotonic() + timeout_s
        while (await self.backlog()).entries:
            if time.monotonic() > deadline:
                raise TimeoutError("the archive outbox did not drain")
            await self.step(block_ms=50, sweep=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Archive until `stop` is set, holding the lease; MongoDB failures back off and retry."""
        delay = 0.1
        try:
            while not stop.is_set():
                if not await self._lease.hold():
                    self._swept_at = -math.inf  # whoever held it may have died mid-batch
                    await _wait(stop, self._lease.ttl_ms / 2000)
                    continue
                try:
                    if self.features is None:
                        self.features = await self.archive.ensure()
                        log.info("archive ready: %s", self.features)
                    await self.step()
                    await self.observe()
                    delay, self.last_error = 0.1, None
                except Exception as error:
                    if not archive_failed(error):
                        raise  # not the archive's: the worker's supervisor restarts it
                    self.failures += 1
                    self.last_error = str(error)
                    log.warning("archive write failed (retrying in %.1fs): %s", delay, error)
                    await _wait(stop, delay)
                    delay = min(delay * 2, self._max_retry_s)
        finally:
            await self._lease.release()


class Archivers:
    """One archiver per outbox partition, each under its partition's lease."""

    def __init__(
        self,
        partitions: Sequence[tuple[Outbox, JobLease]],
        archive: ArchiveWriter,
        **options: Any,
    ) -> None:
        """`partitions`: each partition's outbox and lease, in partition order."""
        self.archive = archive
        self.parts = tuple(
            Archiver(outbox, archive, lease, gauge=self.backlog if n == 0 else None, **options)
            for n, (outbox, lease) in enumerate(partitions)
        )

    @property
    def archived(self) -> int:
        return sum(a.archived for a in self.parts)

    @property
    def failures(self) -> int:
        return sum(a.failures for a in self.parts)

    @property
    def last_error(self) -> str | None:
        return next((a.last_error for a in self.parts if a.last_error), None)

    async def backlog(self) -> Backlog:
        """Entries not yet archived in every partition, and how long the oldest has waited."""
        return Backlog.total([await a.backlog() for a in self.parts])

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Archive until every partition's outbox is empty, the partitions in parallel (tests,
        benchmarks)."""
        await asyncio.gather(*(archiver.drain(timeout_s) for archiver in self.parts))

    async def run(self, stop: asyncio.Event) -> None:
        """Every partition's archiver, each taking its lease when it can (a failure that is not
        the archive's stops them all; the worker's supervisor restarts them)."""
        await asyncio.gather(*(a.run(stop) for a in self.parts))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
