"""The maintenance task: promotion, decay out of the hot tier, and the archive's retention sweep.

Each tick walks about `batch` memories (of every tenant, with a SCAN cursor, continuing where
the previous tick stopped and wrapping at the end), so its cost is bounded however many memories
are stored. It is safe on several replicas at once: a tick runs only under a lease that expires with
the interval, and every change is a conditional script that does nothing if the memory changed
or was read after it was scored.

Eviction needs an archive: without one, leaving the hot tier would delete the memory, so decayed
memories stay where they are (and the start-up log says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from ..domain.lifecycle import LifecyclePolicy, should_evict, should_promote
from ..domain.memory import Memory, Tier, fingerprint
from ..domain.tenant import Tenant
from ..stores.backend_errors import backend_failed
from ..telemetry import instruments, operation
from .access import AccessRecorder
from .ports import JobLease, MemoryStore

log = logging.getLogger(__name__)


class WalkedStore(MemoryStore, Protocol):
    """The hot tier as maintenance walks it (`stores/redis/memory_store.py`)."""

    async def walk_position(self) -> int: ...

    async def save_walk_position(self, cursor: int) -> None: ...

    async def scan(self, cursor: int, limit: int) -> tuple[int, list[tuple[Tenant, Memory]]]: ...

    async def evict(self, tenant: Tenant, memory: Memory, fingerprint: str) -> bool: ...

    async def tier_counts(self) -> dict[str, int]: ...

    async def grow_indexes(self) -> list[Tenant]: ...


class SweptArchive(Protocol):
    async def update_times(self, tenant: str, ids: Iterable[str]) -> dict[str, float]: ...

    async def sweep_expired(self, now: float) -> int: ...


class TrimmedLog(Protocol):
    async def tenants(self) -> list[Tenant]: ...

    async def trim_before(self, tenant: Tenant, min_id: str) -> tuple[int, str | None]: ...


class PrunedIndex(Protocol):
    async def prune(self, tenant: Tenant, first_kept: str | None, limit: int = 1000) -> int: ...


GROW_EVERY_TICKS = 10  # how often a tick looks for tenant indexes to move to HNSW


@dataclass(frozen=True)
class TickReport:
    scanned: int
    promoted: int
    evicted: int
    swept: int
    wrapped: bool
    episodes_trimmed: int = 0
    indexes_to_hnsw: int = 0


class Maintenance:
    def __init__(
        self,
        store: WalkedStore,
        archive: SweptArchive | None,
        policy: LifecyclePolicy,
        *,
        lease: JobLease,
        batch: int,
        interval_s: float,
        episodes: tuple[TrimmedLog, PrunedIndex] | None = None,
        episode_retention_s: float | None = None,
        access: AccessRecorder | None = None,
    ) -> None:
        """`lease`: one tick per interval across replicas (its TTL should be the interval)."""
        self._lease = lease
        self._store = store
        self._access = access
        self._archive = archive
        self.policy = policy
        self._batch = batch
        self._interval_s = interval_s
        self._episodes = episodes
        self._episode_retention_s = episode_retention_s
        self.ticks = 0

    async def tick(self, now: float | None = None) -> TickReport:
        """One bounded pass; `now` may be set by tests to look ahead in time."""
        with operation("aether.maintenance.tick") as span:
            report = await self._tick(time.time() if now is None else now)
            for name, value in vars(report).items():
                span.set_attribute(f"aether.maintenance.{name}", value)
        for tier, count in (await self._store.tier_counts()).items():
            instruments().memories.set(count, {"aether.tier": tier})
        return report

    async def _tick(self, now: float) -> TickReport:
        if self._access is not None:  # score what this server has read, not yet written
            await self._access.flush()
        next_cursor, found = await self._store.scan(await self._store.walk_position(), self._batch)
        promoted = evicted = 0
        to_evict: dict[Tenant, list[Memory]] = {}
        for tenant, memory in found:
            if should_promote(memory, self.policy):
                promoted += await self._promote(tenant, memory.id, memory.update_time, now)
            elif self._archive is not None and should_evict(memory, now, self.policy):
                to_evict.setdefault(tenant, []).append(memory)
        for tenant, memories in to_evict.items():
            evicted += await self._evict(tenant, memories)
        wrapped = next_cursor == 0
        await self._store.save_walk_position(next_cursor)  # only once the batch was handled
        swept = await self._archive.sweep_expired(now) if self._archive and wrapped else 0
        trimmed = await self._trim_episodes(now)
        # Counting every tenant's index is one query per tenant: every tenth tick is enough.
        grown = await self._store.grow_indexes() if self.ticks % GROW_EVERY_TICKS == 0 else []
        self.ticks += 1
        return TickReport(len(found), promoted, evicted, swept, wrapped, trimmed, len(grown))

    async def _trim_episodes(self, now: float) -> int:
        """Episode retention: drop entries older than the retention from each tenant's stream,
        then the index documents of every entry the stream no longer holds (whether it left by
        age or by the length cap), so search never returns what a list cannot."""
        if self._episodes is None:
            return 0
        log_, index = self._episodes
        trimmed = 0
        for tenant in await log_.tenants():
            if self._episode_retention_s is not None:
                cutoff_ms = int((now - self._episode_retention_s) * 1000)
                removed, first = await log_.trim_before(tenant, f"{max(cutoff_ms, 0)}-0")
                trimmed += removed
            else:
                _, first = await log_.trim_before(tenant, "0-0")
            await index.prune(tenant, first)
        return trimmed

    async def full_pass(self, now: float | None = None) -> TickReport:
        """Tick from the first memory until the walk wraps (tests and operators)."""
        await self._store.save_walk_position(0)
        scanned = promoted = evicted = swept = trimmed = 0
        while True:
            report = await self.tick(now)
            scanned += report.scanned
            promoted += report.promoted
            evicted += report.evicted
            swept += report.swept
            trimmed += report.episodes_trimmed
            if report.wrapped:
                return TickReport(scanned, promoted, evicted, swept, True, trimmed)

    async def _promote(self, tenant: Tenant, memory_id: str, seen: float, now: float) -> int:
        loaded = await self._store.get_many(tenant, [memory_id])
        if memory_id not in loaded or loaded[memory_id].update_time != seen:
            return 0
        memory = loaded[memory_id]
        promoted = replace(memory, tier=Tier.LONG_TERM, update_time=now, expire_time=None)
        return int(await self._store.retier(tenant, promoted, fingerprint(memory), None, seen))

    async def _evict(self, tenant: Tenant, memories: list[Memory]) -> int:
        """Evict memories whose current version the archive confirmed holding."""
        assert self._archive is not None
        archived = await self._archive.update_times(tenant.name, [m.id for m in memories])
        evicted = 0
        for memory in memories:
            if archived.get(memory.id) != memory.update_time:
                continue  # not archived yet (or an older version): keep it hot for now
            evicted += int(await self._store.evict(tenant, memory, fingerprint(memory)))
        return evicted

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every interval while holding the per-interval lease."""
        # Held for one interval and never released: at most one tick per interval across replicas.
        while not stop.is_set():
            try:
                if await self._lease.hold():
                    report = await self.tick()
                    if report.promoted or report.evicted or report.swept or report.indexes_to_hnsw:
                        log.info("maintenance: %s", report)
            except Exception as error:  # no failure may stop future ticks
                if backend_failed(error):
                    log.warning("maintenance tick failed: %s", error)
                else:  # a bug: logged in full
                    log.exception("maintenance tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval_s)
