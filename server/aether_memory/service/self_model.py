"""The agent's self-model, DescribeSelf: "what do I know about X?" answered from what the service
holds about an agent: its memories most relevant to the topic, how many it has by tier and type,
how its recent episodes ended, and its current state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aether.memory.v1 import episode_pb2

from ..domain.documents import AgentStateDoc
from ..domain.episodes import StoredEntry
from ..domain.memory import MemoryFilter, MemoryType, Tier
from ..domain.scoring import Weights
from ..domain.tenant import Tenant
from .agent_state import AgentStates
from .memories import MemoryBank, ScoredMemory, SearchRequest

STATS_WINDOW = 1000  # the tenant's most recent episodes the outcomes are counted over
DEFAULT_MEMORIES = 5


class RecentEpisodes(Protocol):
    async def recent(self, tenant: Tenant, count: int) -> list[StoredEntry]: ...


@dataclass(frozen=True)
class EpisodeOutcomes:
    total: int
    succeeded: int
    failed: int
    mean_latency_ns: int | None  # of the episodes that reported one
    window_start_ms: int | None  # record time of the oldest episode counted


@dataclass(frozen=True)
class SelfDescription:
    memories: list[ScoredMemory]
    counts: list[tuple[Tier, MemoryType, int]]
    outcomes: EpisodeOutcomes
    state: AgentStateDoc | None


class SelfModel:
    def __init__(self, bank: MemoryBank, states: AgentStates, episodes: RecentEpisodes) -> None:
        self._bank = bank
        self._states = states
        self._episodes = episodes

    async def describe(
        self,
        tenant: Tenant,
        agent_id: str,
        topic: str,
        max_memories: int,
        *,
        record_access: bool,
    ) -> SelfDescription:
        """An empty topic means "everything": counts, outcomes and state, no memories ranked."""
        memories: list[ScoredMemory] = []
        if topic.strip():
            memories, _ = await self._bank.search(
                tenant,
                SearchRequest(
                    filter=MemoryFilter(agent_id=agent_id),
                    query=topic,
                    query_vector=None,
                    use_vector=True,
                    use_keywords=True,
                    weights=Weights(),
                    offset=0,
                    limit=max_memories or DEFAULT_MEMORIES,
                    record_access=record_access,
                ),
            )
        return SelfDescription(
            memories=memories,
            counts=await self._bank.counts(tenant, agent_id),
            outcomes=await self.outcomes(tenant, agent_id),
            state=await self._states.find(tenant, agent_id),
        )

    async def outcomes(self, tenant: Tenant, agent_id: str) -> EpisodeOutcomes:
        """How the agent's episodes among the tenant's most recent ones ended."""
        mine = [
            e for e in await self._episodes.recent(tenant, STATS_WINDOW) if e.agent_id == agent_id
        ]
        latencies = []
        for entry in mine:
            episode = episode_pb2.Episode.FromString(entry.body)  # the log stores the message
            if episode.HasField("latency"):
                latencies.append(episode.latency.ToNanoseconds())
        return EpisodeOutcomes(
            total=len(mine),
            succeeded=sum(e.outcome == "success" for e in mine),
            failed=sum(e.outcome == "failure" for e in mine),
            mean_latency_ns=sum(latencies) // len(latencies) if latencies else None,
            window_start_ms=int(mine[-1].stream_id.split("-")[0]) if mine else None,
        )
