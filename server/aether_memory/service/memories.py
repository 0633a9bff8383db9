"""Memory use cases: store with dedup, hybrid search, update, forget, summarize, self-model.

Coordinates the embedder and the stores; the rules themselves live in `domain/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cachetools import TTLCache
from ulid import ULID

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.runtime import Mode

from ..domain.errors import (
    Conflict,
    DimensionMismatch,
    NotFound,
    NothingToSummarize,
    StartupError,
)
from ..domain.memory import (
    Memory,
    MemoryFilter,
    MemoryType,
    Tier,
    fingerprint,
    key_fingerprint,
)
from ..domain.rerank import Facts, Hits, LinearModel, features, query_words, rerank
from ..domain.scoring import Candidate, Weights, fuse, rescore
from ..domain.temporal import DateCue, date_cues
from ..domain.tenant import Tenant
from ..settings import Settings
from ..telemetry import instruments, operation
from .access import AccessRecorder
from .ports import MemoryArchive, MemoryStore
from .summarizer import ChatSummarizer, SummarizerError

log = logging.getLogger(__name__)

MAX_SEARCH_DEPTH = 1000
# The best fused hits whose session neighbours join the candidates: as many as the hits of one
# method at the former depth, 25. Deeper lists then cost fewer neighbour lookups.
NEIGHBOR_HITS = 25
UPDATE_ATTEMPTS = 5  # reads and re-applies of an update that raced other writes
KEY_LOCK_STRIPES = 64  # locks that serialize stores under one key within this process
SPACE_SAMPLE = 8  # memories re-embedded to tell which model wrote an unrecorded index
SAME_SPACE_COSINE = 0.95  # fp32 and int8 vectors of one model agree to >= 0.99
# The re-ranker's weights, fitted by `python -m bench.locomo --train`.
# The bundled re-rankers are data of the package, beside its top-level modules.
RERANK_MODEL = Path(__file__).resolve().parents[1] / "rerank_model.json"
MUTABLE_PATHS = frozenset(
    {
        "content",
        "context",
        "tier",
        "type",
        "tags",
        "importance",
        "metadata",
        "related_ids",
        "event_time",
    }
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Stored:
    """What StoreMemory did: the memory now stored, and whether it was already there."""

    memory: Memory
    deduplicated: bool = False  # identical content of the agent, returned instead
    replaced: bool = False  # the memory under the draft's key, which took its values


@dataclass(frozen=True)
class SearchRequest:
    filter: MemoryFilter
    query: str
    query_vector: npt.NDArray[np.float32] | None
    use_vector: bool
    use_keywords: bool
    weights: Weights
    offset: int
    limit: int
    rerank: bool | None = None  # None: the server's setting; only hybrid searches re-rank
    record_access: bool = True  # whether returning a memory counts as reading it
    min_similarity: float | None = None  # None: the server's setting (by default no threshold)


@dataclass
class Retrieved:
    """What a search found before re-scoring: fused candidates (with the session neighbours of
    the hits when re-ranking), and what is known of each."""

    candidates: list[Candidate]
    facts: dict[str, Facts]
    cosines: dict[str, float] = field(default_factory=dict)
    cues: list[DateCue] = field(default_factory=list)
    named: frozenset[str] = frozenset()  # the query's words

    def features(self) -> npt.NDArray[np.float64]:
        """The re-ranker's feature rows, one per candidate (bench.locomo trains on these)."""
        return features(self.candidates, self.cosines, self.facts, self.cues, self.named)


def load_rerank_model(path: Path = RERANK_MODEL) -> LinearModel:
    return LinearModel.from_dict(json.loads(path.read_text(encoding="utf-8")))


def bundled_rerank_model(model_name: str) -> Path:
    """The re-ranker fitted on this encoder's scores (`rerank_model-<model>.json`, written by
    `python -m bench.locomo --train --model <model>`); the default encoder's otherwise."""
    fitted = RERANK_MODEL.with_name(f"rerank_model-{model_name}.json")
    if fitted.exists():
        return fitted
    if model_name != "all-minilm-l6-v2":
        log.warning(
            "no re-ranker fitted for %s: using all-MiniLM-L6-v2's (set AETHER_RERANK_MODEL)",
            model_name,
        )
    return RERANK_MODEL


@dataclass(frozen=True)
class ScoredMemory:
    memory: Memory
    candidate: Candidate


class MemoryBank:
    def __init__(
        self,
        store: MemoryStore,
        embedder: MicroBatcher,
        settings: Settings,
        access: AccessRecorder,
        archive: MemoryArchive | None = None,
        summarizer: ChatSummarizer | None = None,
    ) -> None:
        self._store = store
        self.access = access  # counts reads; its worker (`run`) runs beside the service's others
        self._archive = archive
        self._summarizer = summarizer
        self._model = embedder.embedder.pack.manifest.model_name
        self._embedder = embedder
        self._search_depth = settings.search_depth
        self._rrf_k = settings.rrf_k
        self._fusion = settings.fusion
        self._batches_above = settings.knn_batches_above
        self._agent_sizes: TTLCache[tuple[str, str, str], int] = TTLCache(10_000, 30)
        # Stores under one key queue here rather than race (a replace that races another write
        # reads again, and gives up after UPDATE_ATTEMPTS); other processes' writes still race.
        self._key_locks = [asyncio.Lock() for _ in range(KEY_LOCK_STRIPES)]
        self._keyword_weight = settings.keyword_weight
        self._reranker = load_rerank_model(
            settings.rerank_model or bundled_rerank_model(self._model)
        )
        self._rerank_by_default = settings.rerank == "learned"
        self._min_similarity = settings.search_min_similarity
        self._ttl = {
            Tier.SCRATCHPAD: settings.scratchpad_ttl_s,
            Tier.WORKING: settings.working_ttl_s,
            Tier.SHORT_TERM: settings.short_term_ttl_s,
            Tier.LONG_TERM: None,
            Tier.EPISODIC: None,
        }

    @property
    def dimension(self) -> int:
        return self._store.dimension

    async def claim_vector_space(self, space: str) -> None:
        """Refuse to serve vectors of one model against queries of another.

        The index records the vector space of the pack that writes it. An index from before that
        record is checked by re-embedding a sample of its memories: most must match what this
        pack makes of their content, or the service does not start.
        """
        held = await self._store.vector_space()
        if held == space:
            return
        index = self._store.index_name
        if held is not None:
            raise StartupError(
                f"index {index} holds vectors of {held}, but the model pack makes {space}: "
                "searches would compare vectors of two models. Start with the pack that wrote "
                "them, or set AETHER_INDEX_NAME to a new index and store the memories again"
            )
        sample = [m for m in await self._store.sample(SPACE_SAMPLE) if m.embedding is not None]
        if sample:
            ours = await self._embedder.embed_many([m.content for m in sample])
            agree = [
                float(np.dot(ours[i], m.embedding)) >= SAME_SPACE_COSINE  # type: ignore[arg-type]
                for i, m in enumerate(sample)
            ]
            if sum(agree) * 2 <= len(agree):
                raise StartupError(
                    f"index {index} holds vectors that the model pack {space} does not make "
                    f"({sum(agree)} of {len(agree)} sampled memories agree): start with the "
                    "pack that wrote them, or set AETHER_INDEX_NAME to a new index"
                )
        await self._store.record_vector_space(space)
        log.info("index %s records vector space %s", index, space)

    def _check_vector(self, field: str, vector: npt.NDArray[np.float32]) -> None:
        if vector.shape != (self.dimension,):
            raise DimensionMismatch(field, self.dimension, int(vector.size))

    async def _vector(
        self, text: str, given: npt.NDArray[np.float32] | None, mode: str = "document"
    ) -> npt.NDArray[np.float32]:
        if given is not None:  # finite (checked at the edge)
            wide = given.astype(np.float64)  # 3e38 squared overflows float32
            norm = float(np.linalg.norm(wide))
            return (wide / norm).astype(np.float32) if norm > 0 else given
        return await self.embed_text(text, "query" if mode == "query" else "document")

    async def embed_text(self, text: str, mode: Mode) -> npt.NDArray[np.float32]:
        with operation(
            "aether.embed",
            attributes={
                "aether.embed.model": self._model,
                "aether.embed.mode": mode,
                "aether.embed.chars": len(text),
            },
        ):
            return await self._embedder.embed(text, mode)

    async def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return await self.embed_text(text, "query")

    async def get(self, tenant: Tenant, memory_id: str, *, record_access: bool = True) -> Memory:
        """A memory from the hot tier, or rehydrated from the archive into it."""
        found = await self._read(tenant, [memory_id], count=record_access)
        if memory_id in found:
            return found[memory_id]
        if await self._rehydrate(tenant, memory_id):
            found = await self._read(tenant, [memory_id], count=record_access)
            if memory_id in found:
                return found[memory_id]
        raise NotFound("aether.memory.v1.Memory", memory_id, "MEMORY_NOT_FOUND")

    async def _read(self, tenant: Tenant, ids: list[str], *, count: bool) -> dict[str, Memory]:
        """Memories by id; `count` counts this read, and their access stats include it."""
        found = await self._store.get_many(tenant, ids)
        if count and found:
            now = time.time()
            self.access.record(tenant, found, now)
            for memory in found.values():
                unwritten = self.access.unwritten(tenant, memory.id, memory.last_access_time)
                memory.access_count += unwritten
                memory.last_access_time = now
        return found

    async def _rehydrate(self, tenant: Tenant, memory_id: str) -> bool:
        """Warm the hot tier with an archived memory (its links rebuilt from both sides, minus
        memories that no longer exist); False when the archive does not hold it."""
        if self._archive is None:
            return False
        now = time.time()
        memory = await self._archive.get_memory(tenant.name, memory_id, now)
        if memory is None:
            return False
        linked = set(memory.related_ids) | set(
            await self._archive.linked_to(tenant.name, memory_id)
        )
        linked.discard(memory_id)
        hot = await self._store.get_many(tenant, sorted(linked))
        cold = await self._archive.existing(tenant.name, linked - set(hot), now)
        memory.related_ids = sorted(set(hot) | cold)
        if memory.embedding_model != self._model or memory.embedding is None:
            # Archived under another model (or before the archive recorded which): its vector
            # would not be comparable with this index's, so it is embedded again.
            memory.embedding = await self._vector(memory.content, None)
        ttl = int(memory.expire_time - now) + 1 if memory.expire_time else None
        winner = await self._store.store(tenant, memory, fingerprint(memory), ttl, archive=False)
        return winner == memory_id

    async def store(
        self, tenant: Tenant, draft: Memory, embedding: npt.NDArray[np.float32] | None = None
    ) -> Stored:
        """Store `draft` (its id and times are assigned here). Without a key, identical content
        the agent already holds is returned instead (deduplicated); with one, the memory under
        that key, if any, takes the draft's values (replaced)."""
        if embedding is not None:
            self._check_vector("memory.embedding", embedding)
        if draft.key:
            return await self._put_keyed(tenant, draft, embedding)
        existing = await self._store.find_duplicate(tenant, fingerprint(draft))
        if existing:
            found = await self._read(tenant, [existing], count=True)
            if existing in found:
                instruments().dedup_hits.add(1)
                return Stored(found[existing], deduplicated=True)
        memory = await self._new(draft, embedding)
        winner = await self._store.store(
            tenant, memory, fingerprint(memory), self._ttl[memory.tier]
        )
        if winner != memory.id:  # a concurrent store of the same content won the race
            instruments().dedup_hits.add(1)
            return Stored(await self.get(tenant, winner), deduplicated=True)
        return Stored(memory)

    async def _new(self, draft: Memory, embedding: npt.NDArray[np.float32] | None) -> Memory:
        now = time.time()
        ttl = self._ttl[draft.tier]
        return replace(
            draft,
            id=str(ULID()),
            event_time=draft.event_time or now,
            create_time=now,
            update_time=now,
            expire_time=now + ttl if ttl else None,
            embedding=await self._vector(draft.content, embedding),
        )

    async def _put_keyed(
        self, tenant: Tenant, draft: Memory, embedding: npt.NDArray[np.float32] | None
    ) -> Stored:
        """Create the agent's memory under `draft.key`, or give the existing one its values."""
        stripe = int(fingerprint(draft)[:8], 16) % KEY_LOCK_STRIPES
        async with self._key_locks[stripe]:
            return await self._put_keyed_now(tenant, draft, embedding)

    async def _put_keyed_now(
        self, tenant: Tenant, draft: Memory, embedding: npt.NDArray[np.float32] | None
    ) -> Stored:
        existing = await self._keyed_id(tenant, draft.agent_id, draft.key)
        if existing is not None:
            with contextlib.suppress(NotFound):  # its key outlived it: store it anew
                return await self._replace_keyed(tenant, draft, existing, embedding)
        memory = await self._new(draft, embedding)
        winner = await self._store.store(
            tenant, memory, fingerprint(memory), self._ttl[memory.tier]
        )
        if winner == memory.id:
            return Stored(memory)
        # A concurrent first store of the key won: its memory takes these values.
        return await self._replace_keyed(tenant, draft, winner, embedding)

    async def _replace_keyed(
        self,
        tenant: Tenant,
        draft: Memory,
        memory_id: str,
        embedding: npt.NDArray[np.float32] | None,
    ) -> Stored:
        patch = replace(draft, id=memory_id)
        return Stored(
            await self.update(tenant, patch, set(MUTABLE_PATHS), embedding), replaced=True
        )

    async def _keyed_id(self, tenant: Tenant, agent_id: str, key: str) -> str | None:
        """The id the hot tier holds for the agent's `key`, else that of the archived memory
        under it, rehydrated; None when neither holds one."""
        found = await self._store.find_duplicate(tenant, key_fingerprint(agent_id, key))
        if found or self._archive is None:
            return found
        archived = await self._archive.get_memory_by_key(tenant.name, agent_id, key, time.time())
        if archived is not None and await self._rehydrate(tenant, archived.id):
            return archived.id
        return None

    async def get_by_key(
        self, tenant: Tenant, agent_id: str, key: str, *, record_access: bool = True
    ) -> Memory:
        """The agent's memory stored under `key`."""
        memory_id = await self._keyed_id(tenant, agent_id, key)
        if memory_id is None:
            raise NotFound("aether.memory.v1.Memory", key, "MEMORY_NOT_FOUND")
        return await self.get(tenant, memory_id, record_access=record_access)

    async def page(
        self, tenant: Tenant, flt: MemoryFilter, offset: int, limit: int
    ) -> tuple[list[Memory], bool]:
        return await self._store.page(tenant, flt, offset, limit)

    async def search(
        self, tenant: Tenant, request: SearchRequest
    ) -> tuple[list[ScoredMemory], bool]:
        """A page of memories best first, and whether more results follow."""
        found = await self.retrieve(tenant, request, expand=self._reranks(request))
        stats = {}
        if request.weights.frequency:  # the only score that needs the candidates' access counts
            stored = await self._store.access_stats(tenant, [c.memory_id for c in found.candidates])
            stats = {  # with this server's reads that Redis does not hold yet
                memory_id: (count + self.access.unwritten(tenant, memory_id, last), last)
                for memory_id, (count, last) in stored.items()
            }
        with operation(
            "aether.search.fuse",
            attributes={
                "aether.fuse.candidates": len(found.candidates),
                "aether.fuse.method": self._fusion,
                "aether.fuse.rerank": self._reranks(request),
                "aether.rescore.weights": [
                    request.weights.relevance,
                    request.weights.recency,
                    request.weights.importance,
                    request.weights.frequency,
                ],
            },
        ):
            if self._reranks(request):
                rerank(
                    found.candidates,
                    self._reranker,
                    found.cosines,
                    found.facts,
                    found.cues,
                    found.named,
                )
            ranked = rescore(
                found.candidates,
                request.weights,
                now=time.time(),
                event_times={i: f.event_time for i, f in found.facts.items()},
                importances={i: f.importance for i, f in found.facts.items()},
                access_counts={i: count for i, (count, _) in stats.items()},
            )
        threshold = (
            self._min_similarity if request.min_similarity is None else request.min_similarity
        )
        if threshold is not None:  # keyword matches are related by their words
            ranked = [c for c in ranked if c.keyword_score > 0 or c.vector_similarity >= threshold]
        page = ranked[request.offset : request.offset + request.limit]
        # Only the page is read in full (one round trip), and reading it counts the access.
        memories = await self._read(
            tenant, [c.memory_id for c in page], count=request.record_access
        )
        results = []
        for c in page:
            memory = memories.get(c.memory_id)
            if memory is None:  # forgotten since the search ran
                continue
            memory.related_ids = []  # links are returned by GetMemory, not by search
            results.append(ScoredMemory(memory, c))
        return results, len(ranked) > request.offset + request.limit

    def _reranks(self, request: SearchRequest) -> bool:
        """Re-rank hybrid searches when the request, or else the server's setting, says so."""
        wanted = self._rerank_by_default if request.rerank is None else request.rerank
        return wanted and request.use_vector and request.use_keywords

    async def retrieve(self, tenant: Tenant, request: SearchRequest, *, expand: bool) -> Retrieved:
        """Vector and keyword hits fused; with `expand` (what re-ranking needs), also the hits'
        session neighbours and every candidate's cosine similarity, from one more query."""
        # 50 candidates per method: every leave-one-conversation-out fold on LoCoMo chose 50
        # over 25 on its training conversations (bench/results/locomo.md); 25 more cost ~5 ms.
        depth = min(MAX_SEARCH_DEPTH, max(self._search_depth, request.offset + request.limit + 1))
        # The keyword query needs no embedding: it runs while the query is being embedded.
        keyword = (
            asyncio.ensure_future(
                self._store.keyword_search(tenant, request.filter, request.query, depth)
            )
            if request.use_keywords
            else None
        )
        if keyword is not None:  # its error is re-raised below, or dropped with a failed embed
            keyword.add_done_callback(lambda task: task.cancelled() or task.exception())
        vector = None
        try:
            vector_hits = Hits([], {})
            if request.use_vector:
                if request.query_vector is not None:
                    self._check_vector("query_embedding", request.query_vector)
                vector = await self._vector(request.query, request.query_vector, "query")
                batches = await self._many_memories(tenant, request.filter)
                vector_hits = await self._store.vector_search(
                    tenant, request.filter, vector, depth, batches=batches
                )
            keyword_hits = await keyword if keyword is not None else Hits([], {})
        finally:
            if keyword is not None and not keyword.done():
                keyword.cancel()
        found = Retrieved(
            fuse(
                vector_hits.scores,
                keyword_hits.scores,
                method=self._fusion,
                rrf_k=self._rrf_k,
                keyword_weight=self._keyword_weight,
            ),
            {**keyword_hits.facts, **vector_hits.facts},
        )
        if expand and vector is not None:
            await self._add_neighbors(tenant, request, vector, found, dict(vector_hits.scores))
        return found

    async def _add_neighbors(
        self,
        tenant: Tenant,
        request: SearchRequest,
        vector: npt.NDArray[np.float32],
        found: Retrieved,
        cosines: dict[str, float],
    ) -> None:
        """Add the hits' session neighbours as candidates, and every candidate's cosine: the
        neighbours from one KNN query under the request's filter, the keyword-only hits' from
        their vectors (both round trips at once)."""
        hits = {c.memory_id for c in found.candidates}
        at: dict[str, tuple[str, int]] = {}
        for memory_id in hits:
            fact = found.facts.get(memory_id)
            if fact is not None and fact.seq is not None:
                at[memory_id] = (fact.session, fact.seq)
        held = set(at.values())
        positions: dict[str, set[int]] = {}
        best = sorted(found.candidates, key=lambda c: -c.fused)[:NEIGHBOR_HITS]
        for session, seq in (at[c.memory_id] for c in best if c.memory_id in at):
            for near in (seq - 1, seq + 1):
                if (session, near) not in held and near > 0:
                    positions.setdefault(session, set()).add(near)
        unscored = sorted(hits - set(cosines))
        around, vectors = await asyncio.gather(
            self._store.neighbors(
                tenant, request.filter, vector, {s: sorted(q) for s, q in positions.items()}
            ),
            self._store.vectors(tenant, unscored),
        )
        cosines.update({i: float(np.dot(v, vector)) for i, v in vectors.items()})
        cosines.update(around.scores)
        for memory_id, _ in around.scores:
            if memory_id not in hits:
                found.candidates.append(Candidate(memory_id))
                found.facts[memory_id] = around.facts[memory_id]
        found.cosines = cosines
        found.cues = date_cues(request.query)
        found.named = query_words(request.query)

    async def _many_memories(self, tenant: Tenant, flt: MemoryFilter) -> bool:
        """Whether the KNN filter keeps a large set (the agent's memories, no narrower filter),
        where batched filtering beats RediSearch's brute force. The count is cached briefly."""
        if not self._batches_above:
            return False
        narrower = (flt.tiers, flt.types, flt.tags, flt.start_time, flt.end_time)
        if any(x not in ((), None) for x in narrower) or flt.min_importance is not None:
            return False
        key = (tenant.name, flt.agent_id, flt.session_id)
        count = self._agent_sizes.get(key)
        if count is None:
            count = await self._store.count(tenant, flt)
            self._agent_sizes[key] = count
        return count >= self._batches_above

    async def update(
        self,
        tenant: Tenant,
        patch: Memory,
        paths: set[str],
        embedding: npt.NDArray[np.float32] | None = None,
    ) -> Memory:
        """Apply `paths` of `patch` to the memory as it is when written: a concurrent change
        makes it read again and re-apply, a concurrent forget makes it NOT_FOUND."""
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.get(tenant, patch.id, record_access=False)
            updated = replace(current)
            for path in paths:
                setattr(updated, path, getattr(patch, path))
            if "event_time" in paths and not patch.event_time:
                updated.event_time = current.create_time
            if "content" in paths and updated.content != current.content:
                if embedding is not None:
                    self._check_vector("memory.embedding", embedding)
                updated.embedding = await self._vector(updated.content, embedding)
            else:
                updated.embedding = await self._current_vector(tenant, current)
            now = time.time()
            updated.update_time = now
            ttl = self._ttl[updated.tier]
            if "tier" in paths and updated.tier != current.tier:
                updated.expire_time = now + ttl if ttl else None
            old_links = set(current.related_ids)
            new_links = set(updated.related_ids) - {updated.id}
            updated.related_ids = sorted(new_links)
            if await self._store.replace(
                tenant,
                updated,
                fingerprint(current),
                fingerprint(updated),
                ttl if updated.expire_time else None,
                removed_links=sorted(old_links - new_links),
                added_links=sorted(new_links - old_links),
                expected_update_time=current.update_time,
            ):
                return updated
        raise Conflict("memory", patch.id)

    async def _current_vector(self, tenant: Tenant, memory: Memory) -> npt.NDArray[np.float32]:
        if memory.embedding is not None:
            return memory.embedding
        return await self._vector(memory.content, None)

    async def forget(
        self,
        tenant: Tenant,
        agent_id: str,
        ids: list[str] | None,
        flt: MemoryFilter | None,
        cascade: bool,
    ) -> list[str]:
        """Remove memories from the hot tier and the archive; returns the ids removed."""
        now = time.time()
        if ids is None:
            assert flt is not None
            ids = await self._store.ids_matching(tenant, flt)
            if self._archive is not None:
                ids += await self._archive.memory_ids(tenant.name, flt)
        wanted = list(dict.fromkeys(ids))
        selected, cold = await self._owned(tenant, wanted, agent_id, now)
        if cascade:
            linked = {r for m in selected.values() for r in m.related_ids}
            linked |= {r for links in cold.values() for r in links}
            more, more_cold = await self._owned(
                tenant, sorted(linked - set(selected) - set(cold)), agent_id, now
            )
            selected.update(more)
            cold.update(more_cold)
        await self._store.delete(
            tenant,
            [(m, fingerprint(m)) for m in selected.values()],
            archived_only=sorted(cold),
        )
        return sorted(set(selected) | set(cold))

    async def _owned(
        self, tenant: Tenant, ids: list[str], agent_id: str, now: float
    ) -> tuple[dict[str, Memory], dict[str, list[str]]]:
        """The agent's memories among `ids`: hot ones, and archived-only ones with their links."""
        found = await self._store.get_many(tenant, ids)
        hot = {i: m for i, m in found.items() if m.agent_id == agent_id}
        cold: dict[str, list[str]] = {}
        if self._archive is not None:
            missing = [i for i in ids if i not in found]
            cold = await self._archive.owned(tenant.name, missing, agent_id, now)
        return hot, cold

    async def summarize(
        self, tenant: Tenant, agent_id: str, session_id: str, max_sentences: int
    ) -> tuple[Memory, list[str]]:
        """A summary memory of the session, linked to its sources, which leave working memory.

        From the summarizer endpoint when one is configured; otherwise (or when it fails) the
        extractive summary: the sentences closest to the session's centroid, in order.
        """
        flt = MemoryFilter(agent_id=agent_id, session_id=session_id)
        sources, _ = await self._store.page(tenant, flt, 0, MAX_SEARCH_DEPTH)
        sources = [m for m in sources if m.type != MemoryType.SUMMARY]
        if not sources:
            raise NothingToSummarize(f"session {session_id!r} has no memories to summarize")
        sources.sort(key=lambda m: (m.event_time, m.create_time))
        sentences = [s.strip() for m in sources for s in _SENTENCE.split(m.content) if s.strip()]
        metadata: dict[str, Any] = {"summarized_sentences": len(sentences)}
        summary = ""
        if self._summarizer is not None:
            try:
                summary = await self._summarizer.summarize(
                    [m.content for m in sources], max_sentences
                )
                metadata["method"] = f"endpoint:{self._summarizer.model}"
            except SummarizerError as error:
                log.warning("summarizer endpoint failed, summarizing extractively: %s", error)
                metadata["summarizer_error"] = str(error)[:500]
        if not summary:
            summary = await self._extractive(sentences, max_sentences)
            metadata["method"] = "extractive-centroid"
        draft = Memory(
            id="",
            agent_id=agent_id,
            session_id=session_id,
            content=summary,
            tier=Tier.LONG_TERM,
            type=MemoryType.SUMMARY,
            importance=max(m.importance for m in sources),
            related_ids=[m.id for m in sources],
            metadata=metadata,
        )
        memory = (await self.store(tenant, draft)).memory
        await self._leave_working_memory(tenant, sources)
        return memory, [m.id for m in sources]

    async def _extractive(self, sentences: list[str], max_sentences: int) -> str:
        with operation(
            "aether.embed",
            attributes={"aether.embed.model": self._model, "aether.embed.texts": len(sentences)},
        ):
            vectors = await self._embedder.embed_many(sentences)
        centroid = vectors.mean(axis=0)
        centrality = vectors @ centroid
        chosen = sorted(np.argsort(-centrality)[:max_sentences].tolist())
        return " ".join(sentences[i] for i in chosen)

    async def _leave_working_memory(self, tenant: Tenant, sources: list[Memory]) -> None:
        """Summarized working and scratchpad memories move to short-term (and its TTL): the
        summary now stands for them in the session, and they stay findable until they expire."""
        now = time.time()
        ttl = self._ttl[Tier.SHORT_TERM]
        assert ttl is not None
        for m in sources:
            if m.tier in (Tier.WORKING, Tier.SCRATCHPAD):
                moved = replace(m, tier=Tier.SHORT_TERM, update_time=now, expire_time=now + ttl)
                await self._store.retier(tenant, moved, fingerprint(m), ttl, m.update_time)

    async def counts(self, tenant: Tenant, agent_id: str) -> list[tuple[Tier, MemoryType, int]]:
        """Non-zero memory counts by tier and type, from one round trip of count queries."""
        pairs = [(tier, kind) for tier in Tier for kind in MemoryType]
        filters = [MemoryFilter(agent_id=agent_id, tiers=(t,), types=(k,)) for t, k in pairs]
        counts = await self._store.counts(tenant, filters)
        return [(t, k, n) for (t, k), n in zip(pairs, counts, strict=True) if n]
