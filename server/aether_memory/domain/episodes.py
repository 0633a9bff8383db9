"""Episodes as the log holds them: the serialized episode and the fields it is filtered by.

The body is the episode message itself, serialized once when recorded and handed back as
stored: a log of tool and model calls is written and tailed at thousands of entries a second,
and no other shape is needed to filter or order them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .tenant import Tenant


@dataclass(frozen=True)
class EpisodeEntry:
    """What the log stores for one episode; `body` is the serialized episode."""

    event_id: str
    body: bytes
    agent_id: str
    session_id: str
    type: str
    outcome: str


@dataclass(frozen=True)
class StoredEntry:
    stream_id: str
    body: bytes
    agent_id: str
    session_id: str
    type: str
    outcome: str


@dataclass(frozen=True)
class Appended:
    stream_id: str
    duplicate: bool


@dataclass(frozen=True)
class EpisodeQuery:
    """What SearchEpisodes filters by, and the page it wants."""

    agent_id: str
    session_id: str
    types: tuple[str, ...]
    outcomes: tuple[str, ...]
    start_time: float | None
    end_time: float | None
    offset: int
    limit: int


@dataclass(frozen=True)
class EpisodeHit:
    stream_id: str
    similarity: float


@dataclass(frozen=True)
class Taken:
    """What the indexer took from one tenant's stream: episodes to index, ids of episodes
    retention removed before they were indexed (to acknowledge only), and whether the stream
    may hold more."""

    stream: str
    tenant: Tenant
    entries: list[StoredEntry]
    gone: list[str]
    more: bool


@dataclass(frozen=True)
class EpisodeDoc:
    """What the episode index holds for one episode: the fields searches filter on, and the
    vector of its text."""

    tenant: Tenant
    stream_id: str
    agent_id: str
    session_id: str
    type: str
    outcome: str
    record_time: float
