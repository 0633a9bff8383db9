"""Memories as plain values, and the rules that do not depend on storage."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt


class Tier(StrEnum):
    SCRATCHPAD = "scratchpad"
    WORKING = "working"
    SHORT_TERM = "short_term"
    LONG_TERM = "long_term"
    EPISODIC = "episodic"


class MemoryType(StrEnum):
    FACT = "fact"
    PREFERENCE = "preference"
    EVENT = "event"
    PROCEDURE = "procedure"
    SUMMARY = "summary"
    OBSERVATION = "observation"


DEFAULT_IMPORTANCE = 0.5


@dataclass
class Memory:
    """One stored memory. Times are seconds since the epoch (UTC)."""

    id: str
    agent_id: str
    content: str
    session_id: str = ""
    context: str = ""  # situates the content; keyword-indexed, not embedded, not deduped
    key: str = ""  # the client's name for it, unique per agent; a keyed memory is not deduped
    tier: Tier = Tier.LONG_TERM
    type: MemoryType = MemoryType.FACT
    tags: list[str] = field(default_factory=list)
    importance: float = DEFAULT_IMPORTANCE
    metadata: dict[str, Any] = field(default_factory=dict)
    related_ids: list[str] = field(default_factory=list)
    event_time: float = 0.0
    create_time: float = 0.0
    update_time: float = 0.0
    last_access_time: float = 0.0
    access_count: int = 0
    expire_time: float | None = None
    embedding: npt.NDArray[np.float32] | None = None
    # The model whose vector `embedding` is, as the archive recorded it ("": not recorded).
    embedding_model: str = ""


@dataclass(frozen=True)
class MemoryFilter:
    """Every set field must match; empty collections mean "no condition"."""

    agent_id: str
    session_id: str = ""
    tiers: tuple[Tier, ...] = ()
    types: tuple[MemoryType, ...] = ()
    tags: tuple[str, ...] = ()
    start_time: float | None = None
    end_time: float | None = None
    min_importance: float | None = None


_SPACE = re.compile(r"\s+")


def normalize_content(content: str) -> str:
    """The form in which two contents count as identical: NFKC, casefolded, spaces collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", content).casefold()).strip()


def content_fingerprint(agent_id: str, content: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(agent_id.encode())
    digest.update(b"\0")
    digest.update(normalize_content(content).encode())
    return digest.hexdigest()


def key_fingerprint(agent_id: str, key: str) -> str:
    """Names the agent's memory stored under `key`; distinct from every content fingerprint
    (a different personalization of the hash)."""
    digest = hashlib.blake2b(digest_size=16, person=b"memory-key")
    digest.update(agent_id.encode())
    digest.update(b"\0")
    digest.update(key.encode())
    return digest.hexdigest()


def fingerprint(memory: Memory) -> str:
    """What makes `memory` unique for its agent, and names it in the dedup index: its key when
    it has one, else its normalized content."""
    if memory.key:
        return key_fingerprint(memory.agent_id, memory.key)
    return content_fingerprint(memory.agent_id, memory.content)
