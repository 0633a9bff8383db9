"""Re-embedding a store with another model while the service serves.

`aether-memory reembed --model M` builds a second index beside the serving one, over the same
memories and episodes, reading vectors from the other slot (stores/redis/vector_slots.py), and
fills that slot with M's vectors while the service keeps answering from the old index with the
old model. Then the service is restarted with `AETHER_MODEL=M AETHER_INDEX_NAME=<new index>`:
at start it fills what the old service wrote since the command's last pass (its `re-embedder`
worker), and marks the index complete. `aether-memory reembed --drop-source` then drops the old
index and the old vectors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import numpy as np
import numpy.typing as npt
import redis.asyncio as aioredis

from ..domain.tenant import Tenant
from ..stores.redis.episode_log import RedisEpisodeLog
from ..stores.redis.keys import EPISODE_DOC_PREFIX, MEMORY_PREFIX, tenant_of
from ..stores.redis.vector_slots import (
    BUILDING,
    COMPLETE,
    FILLED,
    SlotFill,
    reembed_state,
    set_reembed_state,
)
from .episode_index import episode_text

log = logging.getLogger(__name__)

EmbedMany = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]
Progress = Callable[[str, int], None]  # (corpus, hashes walked)
Texts = Callable[[Sequence[bytes]], Awaitable[tuple[list[str | None], list[bytes | None]]]]
SCAN_COUNT = 256


class SlotReader(Protocol):
    """An index's vector slot (stores/redis/vector_slots.py)."""

    @property
    def vector_slot(self) -> str: ...

    async def prepare(self, tenant: Tenant) -> None:
        """Make sure the tenant's index exists before its documents are written (one index
        per tenant: each is created empty, so only a document written after it is in it)."""


class VectorStore(SlotReader, Protocol):
    @property
    def vector_dtype(self) -> type[np.floating[Any]]: ...


@dataclass(frozen=True)
class Corpus:
    """Hashes under one prefix whose vectors one index reads: how to get each one's text (None:
    nothing to embed) and the guard value its vector must still match when written."""

    name: str
    fill: SlotFill
    dtype: type[np.floating[Any]]
    texts: Texts
    prepare: Callable[[Tenant], Awaitable[None]]


@dataclass(frozen=True)
class Filled:
    walked: int
    written: int


class Reembedder:
    """Fills the slots of an index built by `reembed` (memories and episode documents)."""

    def __init__(
        self,
        client: aioredis.Redis,
        embed_many: EmbedMany,
        memories: VectorStore,
        episodes: SlotReader,
        episode_log: RedisEpisodeLog,
    ) -> None:
        """Fills the slots `memories` and `episodes` (the new indexes) read."""
        self._client: Any = client
        self._embed_many = embed_many
        self._log = episode_log
        self.corpora = (
            Corpus(
                "memories",
                SlotFill(client, MEMORY_PREFIX, memories.vector_slot, guard="content"),
                memories.vector_dtype,
                self._memory_texts,
                memories.prepare,
            ),
            Corpus(
                "episodes",
                SlotFill(client, EPISODE_DOC_PREFIX, episodes.vector_slot, guard=None),
                np.float32,
                self._episode_texts,
                episodes.prepare,
            ),
        )

    async def _memory_texts(
        self, names: Sequence[bytes]
    ) -> tuple[list[str | None], list[bytes | None]]:
        contents = await self.corpora[0].fill.fields(names, "content")
        return [c.decode() if c is not None else None for c in contents], contents

    async def _episode_texts(
        self, names: Sequence[bytes]
    ) -> tuple[list[str | None], list[bytes | None]]:
        from aether.memory.v1 import episode_pb2  # the stored body is a serialized Episode

        tenants = await self.corpora[1].fill.fields(names, "tenant")
        known = [(n, t) for n, t in zip(names, tenants, strict=True) if t is not None]
        found = await self._log.get_many(
            [(Tenant(t.decode()), unquote(n.decode().rsplit(":", 1)[1])) for n, t in known]
        )
        bodies = {n: stored.body for (n, _), stored in zip(known, found, strict=True) if stored}
        # An episode trimmed by retention has no text left; its document is pruned.
        texts = [
            episode_text(episode_pb2.Episode.FromString(bodies[n])) if n in bodies else None
            for n in names
        ]
        return texts, [None] * len(names)

    async def fill(self, progress: Progress | None = None) -> Filled:
        """One walk over every memory and episode document, embedding those the slots lack."""
        walked = written = 0
        for corpus in self.corpora:
            cursor = None
            while cursor != 0:
                cursor, seen, lacking = await corpus.fill.lacking(cursor or 0, SCAN_COUNT)
                walked += seen
                written += await self._write(corpus, lacking)
                if progress is not None:
                    progress(corpus.name, seen)
        return Filled(walked, written)

    async def _write(self, corpus: Corpus, names: Sequence[bytes]) -> int:
        if not names:
            return 0
        texts, guards = await corpus.texts(names)
        kept = [i for i, text in enumerate(texts) if text is not None]
        batch = [text for text in texts if text is not None]
        if not batch:
            return 0
        vectors = await self._embed_many(batch)
        await asyncio.gather(
            *(corpus.prepare(t) for t in {tenant_of(names[i].decode()) for i in kept})
        )
        return await corpus.fill.put(
            [names[i] for i in kept],
            [np.asarray(v).astype(corpus.dtype).tobytes() for v in vectors],
            [guards[i] for i in kept],
        )

    async def catch_up(self, index_name: str, stop: asyncio.Event) -> None:
        """The service's `re-embedder` worker: when the index it serves was built by `reembed`
        and is not complete, walk until a walk writes nothing, then mark it complete."""
        source, state = await reembed_state(self._client, index_name)
        if source is not None and state in (BUILDING, FILLED):
            total = 0
            while not stop.is_set():
                filled = await self.fill()
                total += filled.written
                if filled.written == 0:
                    await set_reembed_state(self._client, index_name, source, COMPLETE)
                    log.info(
                        "index %s is complete: %d vectors written since the service started; "
                        "`aether-memory reembed --drop-source` drops %s",
                        index_name,
                        total,
                        source,
                    )
                    break
        await stop.wait()
