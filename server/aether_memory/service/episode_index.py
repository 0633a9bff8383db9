"""The episode indexer: embeds each recorded episode for SearchEpisodes, off the write path.

It takes episodes from the tenants' streams with new ones (stores/redis/episode_index.py) as one
consumer of their group, so a restart resumes where it stopped and several replicas share the
work; a batch that fails stays pending and is taken again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aether_embeddings.batching import MicroBatcher

from ..domain.episodes import EpisodeDoc, Taken
from ..domain.errors import BackendUnavailable
from ..stores.backend_errors import as_domain
from ..telemetry import instruments, operation

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 2000
SWEEP_S = 10.0  # how often each indexer looks for streams whose mark was lost
FORGET_S = 600.0  # how often it removes the names of stopped indexers from the groups
_numbers = itertools.count()


class IndexQueue(Protocol):
    """The episode index (`stores/redis/episode_index.py`) as its indexer fills it."""

    async def sweep(self) -> int: ...

    async def forget_idle_consumers(self) -> int: ...

    async def due(self, block_ms: int) -> list[str]: ...

    async def requeue(self, *streams: str) -> None: ...

    async def read(self, consumer: str, streams: Sequence[str]) -> list[Taken]: ...

    async def write(
        self,
        docs: Sequence[EpisodeDoc],
        vectors: npt.NDArray[np.float32],
        done: Mapping[str, Sequence[str]],
    ) -> None: ...


class EpisodeIndexer:
    def __init__(self, index: IndexQueue, embedder: MicroBatcher) -> None:
        self._index = index
        self._embedder = embedder
        # The same name after a restart in the same place (a container's pid is stable), so
        # the episodes it had taken are taken again at once rather than after CLAIM_IDLE_MS.
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{next(_numbers)}"

    async def run(self, stop: asyncio.Event) -> None:
        """Index until `stop` is set. Failed batches stay pending and are retried."""
        next_sweep, next_forget = 0.0, time.monotonic() + FORGET_S
        while not stop.is_set():
            streams: list[str] = []
            try:
                if time.monotonic() >= next_sweep:
                    instruments().episode_index_lag.set(await self._index.sweep())
                    next_sweep = time.monotonic() + SWEEP_S
                if time.monotonic() >= next_forget:
                    await self._index.forget_idle_consumers()
                    next_forget = time.monotonic() + FORGET_S
                streams = await self._index.due(block_ms=500)
                if not streams:
                    continue
                taken = await self._index.read(self._consumer, streams)
                count = sum(len(t.entries) for t in taken)
                with operation("aether.episodes.index", attributes={"aether.episodes": count}):
                    await self._index_batch(taken)
                await self._index.requeue(*[t.stream for t in taken if t.more])
            except Exception as exc:  # logged and retried: the episodes stay pending
                if isinstance(as_domain(exc), BackendUnavailable):
                    log.warning("episode indexer: Redis unavailable (%s); retrying", exc)
                else:
                    log.exception("episode indexer batch failed; will retry")
                with contextlib.suppress(Exception):  # else the next sweep finds them
                    await self._index.requeue(*streams)
                await asyncio.sleep(1.0)

    async def _index_batch(self, taken: list[Taken]) -> None:
        from aether.memory.v1 import episode_pb2  # the stored body is a serialized Episode

        docs: list[EpisodeDoc] = []
        texts: list[str] = []
        for t in taken:
            for stored in t.entries:
                episode = episode_pb2.Episode.FromString(stored.body)
                texts.append(episode_text(episode))
                docs.append(
                    EpisodeDoc(
                        tenant=t.tenant,
                        stream_id=stored.stream_id,
                        agent_id=stored.agent_id,
                        session_id=stored.session_id,
                        type=stored.type,
                        outcome=stored.outcome,
                        record_time=episode.record_time.ToNanoseconds() / 1e9,
                    )
                )
        vectors = await self._embedder.embed_many(texts)  # none: an empty (0, dims) array
        done = {t.stream: [e.stream_id for e in t.entries] + t.gone for t in taken}
        await self._index.write(docs, vectors, done)


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
