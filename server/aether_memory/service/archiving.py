"""The archiver: moves outbox entries to MongoDB, acknowledging each only after MongoDB did.

It reads the outbox with a consumer group, so entries read but not yet confirmed stay pending and
are read again after a failed write or a crash. One replica at a time holds the archiver lease
and does the work: entries are then applied in stream order, so an older version of a document
can never overwrite a newer one. Other replicas wait for the lease; when its holder dies, the
lease expires and another takes over the pending entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..domain.outbox import Backlog
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
    ) -> None:
        self.outbox = outbox
        self.archive = archive
        self._lease = lease
        self._block_ms = block_ms
        self._max_retry_s = max_retry_s
        self.archived = 0  # documents written, this process
        self.failures = 0  # failed batches (retried), this process
        self.last_error: str | None = None
        self.features: object | None = None  # what the archive is, once it answered

    async def ensure(self) -> None:
        await self.outbox.ensure()

    async def backlog(self) -> Backlog:
        """Entries not yet archived, and how long the oldest has waited."""
        return await self.outbox.backlog()

    async def step(self, block_ms: int | None = None) -> int:
        """Archive one batch: pending entries first (unconfirmed earlier), then new ones."""
        entries = await self.outbox.pending()
        if not entries:
            entries = await self.outbox.new(self._block_ms if block_ms is None else block_ms)
        if not entries:
            return 0
        with operation(
            "aether.archive.batch", attributes={"aether.archive.entries": len(entries)}
        ) as span:
            span.set_attribute("aether.archive.documents", await self.archive.apply(entries))
            await self.outbox.confirm([e.stream_id for e in entries])
        self.archived += len(entries)
        return len(entries)

    async def observe(self) -> Backlog:
        backlog = await self.backlog()
        instruments().outbox_backlog.set(backlog.entries)
        instruments().archive_lag.set(backlog.oldest_age_s)
        return backlog

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Archive until the outbox is empty (tests and benchmarks); raises on timeout."""
        deadline = time.monotonic() + timeout_s
        while (await self.backlog()).entries:
            if time.monotonic() > deadline:
                raise TimeoutError("the archive outbox did not drain")
            await self.step(block_ms=50)

    async def run(self, stop: asyncio.Event) -> None:
        """Archive until `stop` is set, holding the lease; MongoDB failures back off and retry."""
        delay = 0.1
        try:
            while not stop.is_set():
                if not await self._lease.hold():
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


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
