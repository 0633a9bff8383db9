"""What the memory use cases and the archiver need of their stores, as protocols: the Redis hot
tier (`stores/redis/memory_store.py`, `stores/redis/outbox.py`, `stores/redis/lease.py`) and
the MongoDB archive (`stores/mongo/archive.py`) implement them. A store raises domain errors or
backend errors that `stores/backend_errors.py` maps."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..domain.memory import Memory, MemoryFilter
from ..domain.outbox import Backlog, OutboxEntry
from ..domain.rerank import Hits
from ..domain.tenant import Tenant


class MemoryStore(Protocol):
    """The hot tier: memories, their dedup keys, links, access stats and the search index."""

    dimension: int
    index_name: str

    async def vector_space(self) -> str | None: ...

    async def record_vector_space(self, space: str) -> None: ...

    async def sample(self, limit: int) -> list[Memory]: ...

    async def find_duplicate(self, tenant: Tenant, fingerprint: str) -> str | None: ...

    async def store(
        self,
        tenant: Tenant,
        memory: Memory,
        fingerprint: str,
        ttl_s: int | None,
        *,
        archive: bool = True,
    ) -> str: ...

    async def retier(
        self,
        tenant: Tenant,
        memory: Memory,
        fingerprint: str,
        ttl_s: int | None,
        expected_update_time: float,
    ) -> bool: ...

    async def replace(
        self,
        tenant: Tenant,
        memory: Memory,
        old_fingerprint: str,
        new_fingerprint: str,
        ttl_s: int | None,
        removed_links: Sequence[str],
        added_links: Sequence[str],
        expected_update_time: float,
    ) -> bool: ...

    async def delete(
        self,
        tenant: Tenant,
        memories: Sequence[tuple[Memory, str]],
        archived_only: Sequence[str] = (),
    ) -> None: ...

    async def get_many(self, tenant: Tenant, ids: Sequence[str]) -> dict[str, Memory]: ...

    async def access_stats(
        self, tenant: Tenant, ids: Sequence[str]
    ) -> dict[str, tuple[int, float]]: ...

    async def page(
        self, tenant: Tenant, flt: MemoryFilter, offset: int, limit: int
    ) -> tuple[list[Memory], bool]: ...

    async def ids_matching(self, tenant: Tenant, flt: MemoryFilter) -> list[str]: ...

    async def count(self, tenant: Tenant, flt: MemoryFilter) -> int: ...

    async def counts(self, tenant: Tenant, filters: Sequence[MemoryFilter]) -> list[int]: ...

    async def vector_search(
        self,
        tenant: Tenant,
        flt: MemoryFilter,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        batches: bool = False,
    ) -> Hits: ...

    async def neighbors(
        self,
        tenant: Tenant,
        flt: MemoryFilter,
        vector: npt.NDArray[np.float32],
        positions: Mapping[str, Sequence[int]],
    ) -> Hits: ...

    async def vectors(
        self, tenant: Tenant, ids: Sequence[str]
    ) -> dict[str, npt.NDArray[np.float32]]: ...

    async def keyword_search(
        self, tenant: Tenant, flt: MemoryFilter, text: str, k: int
    ) -> Hits: ...


class MemoryArchive(Protocol):
    """The cold tier, as the memory use cases read it (writes go through the outbox)."""

    async def get_memory(self, tenant: str, memory_id: str, now: float) -> Memory | None: ...

    async def get_memory_by_key(
        self, tenant: str, agent_id: str, key: str, now: float
    ) -> Memory | None: ...

    async def linked_to(self, tenant: str, memory_id: str) -> list[str]: ...

    async def existing(self, tenant: str, ids: Iterable[str], now: float) -> set[str]: ...

    async def owned(
        self, tenant: str, ids: Iterable[str], agent_id: str, now: float
    ) -> dict[str, list[str]]: ...

    async def memory_ids(self, tenant: str, flt: MemoryFilter) -> list[str]: ...


class Outbox(Protocol):
    """What the hot tier's writes left for the archive: streams of entries (one per tenant),
    each read oldest first, and which of them have entries not yet taken."""

    @property
    def batch(self) -> int: ...

    async def backlog(self) -> Backlog: ...

    async def sweep(self) -> int: ...

    async def due(self, block_ms: int) -> list[str]: ...

    async def requeue(self, stream: str) -> None: ...

    async def read(self, streams: Sequence[str]) -> list[tuple[str, list[OutboxEntry], bool]]: ...

    async def confirm(self, confirmed: dict[str, list[str]]) -> None: ...


class ArchiveWriter(Protocol):
    """The cold tier, as the archiver writes it."""

    async def ensure(self) -> object: ...

    async def apply(self, entries: Sequence[OutboxEntry]) -> int: ...


class JobLease(Protocol):
    """One replica at a time runs a background job while it holds the lease."""

    @property
    def ttl_ms(self) -> int: ...

    async def hold(self) -> bool: ...

    async def release(self) -> None: ...


class Replication(Protocol):
    """Holds a write's answer until replicas have it (stores/redis/replication.py)."""

    async def confirm(self, tenant: Tenant) -> None: ...
