"""The episode indexer: embeds each recorded episode for SearchEpisodes, off the write path.

It reads the queue the append script fills (stores/redis/episode_index.py) as one consumer of
a group, so a restart resumes where it stopped and several replicas share the work; a batch
that fails stays pending and is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aether_embeddings.batching import MicroBatcher

from ..domain.episodes import EpisodeDoc, QueuedEpisode, StoredEntry
from ..domain.errors import BackendUnavailable
from ..domain.tenant import Tenant
from ..stores.backend_errors import as_domain
from ..telemetry import instruments, operation

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2000


class IndexQueue(Protocol):
    """The episode index (`stores/redis/episode_index.py`) as its indexer fills it."""

    async def queued(self, consumer: str, count: int, *, backlog: bool) -> list[QueuedEpisode]: ...

    async def write(
        self,
        docs: Sequence[EpisodeDoc],
        vectors: npt.NDArray[np.float32],
        done: Sequence[QueuedEpisode],
    ) -> None: ...

    async def lag(self) -> int: ...


class EntryReader(Protocol):
    async def get_many(self, wanted: Sequence[tuple[Tenant, str]]) -> list[StoredEntry | None]: ...


class EpisodeIndexer:
    def __init__(
        self,
        index: IndexQueue,
        episode_log: EntryReader,
        embedder: MicroBatcher,
        *,
        batch: int,
    ) -> None:
        self._index = index
        self._log = episode_log
        self._embedder = embedder
        self._batch = batch
        self._consumer = f"{socket.gethostname()}-{id(self)}"

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set. Failed batches stay pending and are retried."""
        backlog = True  # first drain this consumer's pending entries (a crash mid-batch)
        while not stop.is_set():
            try:
                queued = await self._index.queued(self._consumer, self._batch, backlog=backlog)
                if backlog and not queued:
                    backlog = False
                    continue
                if queued:
                    with operation(
                        "aether.episodes.index", attributes={"aether.episodes": len(queued)}
                    ):
                        await self._index_batch(queued)
                    instruments().episode_index_lag.set(await self._index.lag())
            except Exception as exc:  # logged and retried: the entries stay pending
                if isinstance(as_domain(exc), BackendUnavailable):
                    log.warning("episode indexer: Redis unavailable (%s); retrying", exc)
                else:
                    log.exception("episode indexer batch failed; will retry")
                backlog = True
                await asyncio.sleep(1.0)

    async def _index_batch(self, queued: list[QueuedEpisode]) -> None:
        from aether.memory.v1 import episode_pb2  # the stored body is a serialized Episode

        found = await self._log.get_many([(q.tenant, q.stream_id) for q in queued])
        docs: list[EpisodeDoc] = []
        texts: list[str] = []
        for q, stored in zip(queued, found, strict=True):
            if stored is None:
                continue  # trimmed by retention before it was indexed
            episode = episode_pb2.Episode.FromString(stored.body)
            texts.append(episode_text(episode))
            docs.append(
                EpisodeDoc(
                    tenant=q.tenant,
                    stream_id=q.stream_id,
                    agent_id=stored.agent_id,
                    session_id=stored.session_id,
                    type=stored.type,
                    outcome=stored.outcome,
                    record_time=episode.record_time.ToNanoseconds() / 1e9,
                )
            )
        vectors = await self._embedder.embed_many(texts)  # none: an empty (0, dims) array
        await self._index.write(docs, vectors, queued)


def episode_text(episode: Any) -> str:
    """What an episode is searched by: its text, else type, name, outcome and payload."""
    if episode.text:
        return str(episode.text)[:MAX_TEXT_CHARS]
    from aether.memory.v1 import episode_pb2
    from google.protobuf import json_format

    parts = [
        episode_pb2.EpisodeType.Name(episode.type).removeprefix("EPISODE_TYPE_").lower(),
        episode.name,
        episode_pb2.EpisodeOutcome.Name(episode.outcome).removeprefix("EPISODE_OUTCOME_").lower(),
        json.dumps(json_format.MessageToDict(episode.payload), ensure_ascii=False),
    ]
    return " ".join(p for p in parts if p and p != "{}")[:MAX_TEXT_CHARS]
