"""The episode log's use cases: record (deduplicated by event id), read back, scan a time range,
tail live from a position, and search by meaning through the episode index.

The servicer builds and reads the entries (an entry's body is the serialized episode message);
this layer is what it calls, over a protocol the Redis log implements, so the transport knows
no store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..domain.episodes import Appended, EpisodeEntry, EpisodeHit, EpisodeQuery, StoredEntry
from ..domain.tenant import Tenant


class EpisodeLog(Protocol):
    async def append(self, tenant: Tenant, entries: Sequence[EpisodeEntry]) -> list[Appended]: ...

    async def get(self, tenant: Tenant, stream_id: str) -> StoredEntry | None: ...

    async def get_many(self, wanted: Sequence[tuple[Tenant, str]]) -> list[StoredEntry | None]: ...

    async def range(
        self, tenant: Tenant, start: str, end: str, count: int
    ) -> list[StoredEntry]: ...

    async def last_id(self, tenant: Tenant) -> str: ...

    async def check_cursor(self, tenant: Tenant, cursor: str) -> None: ...


class Tails(Protocol):
    def tail(self, tenant: Tenant, after: str) -> AsyncIterator[list[StoredEntry]]: ...

    async def aclose(self) -> None: ...


class Index(Protocol):
    async def search(
        self, tenant: Tenant, query: EpisodeQuery, vector: npt.NDArray[np.float32]
    ) -> list[EpisodeHit]: ...

    async def lag(self, tenant: Tenant) -> int: ...


@dataclass(frozen=True)
class Found:
    """A page of search hits with the entries they name (None: trimmed since it was indexed),
    how many hits there were in all, and how many episodes wait to be indexed."""

    page: list[tuple[EpisodeHit, StoredEntry | None]]
    total: int
    lag: int


class Episodes:
    def __init__(
        self,
        log: EpisodeLog,
        tails: Tails,
        index: Index,
        embed_query: Callable[[str], Awaitable[npt.NDArray[np.float32]]],
    ) -> None:
        self._log = log
        self._tails = tails
        self._index = index
        self._embed_query = embed_query

    async def record(self, tenant: Tenant, entries: Sequence[EpisodeEntry]) -> list[Appended]:
        """Append in order; an event id seen before is not written again (`duplicate`, with the
        position of the first)."""
        return await self._log.append(tenant, entries)

    async def recorded(self, tenant: Tenant, stream_id: str) -> StoredEntry | None:
        return await self._log.get(tenant, stream_id)

    async def scan(self, tenant: Tenant, start: str, end: str, limit: int) -> list[StoredEntry]:
        """Entries from `start` to `end` (stream positions, "(" for exclusive), oldest first."""
        return await self._log.range(tenant, start, end, limit)

    async def start_of_tail(self, tenant: Tenant, after: str | None) -> str:
        """The position a subscription starts after: `after` once checked (CursorExpired when
        retention trimmed past it), or the end of the log ("from now")."""
        if after is None:
            return await self._log.last_id(tenant)
        await self._log.check_cursor(tenant, after)
        return after

    def tail(self, tenant: Tenant, after: str) -> AsyncIterator[list[StoredEntry]]:
        """Batches of entries after `after`, in order, forever; an empty batch after an idle
        wait (the subscriber's chance to send a heartbeat)."""
        return self._tails.tail(tenant, after)

    async def lag(self, tenant: Tenant) -> int:
        """The tenant's recorded episodes not yet searchable."""
        return await self._index.lag(tenant)

    async def search(self, tenant: Tenant, text: str, query: EpisodeQuery) -> Found:
        """The episodes nearest `text` under `query`'s filter, the page `query` names."""
        hits = await self._index.search(tenant, query, await self._embed_query(text))
        page = hits[query.offset : query.offset + query.limit]
        entries = await self._log.get_many([(tenant, hit.stream_id) for hit in page])
        lag = await self._index.lag(tenant)
        return Found(list(zip(page, entries, strict=True)), len(hits), lag)

    async def aclose(self) -> None:
        """Stop the shared tail readers (after the server stopped serving)."""
        await self._tails.aclose()
