"""Tier transitions: promotion on importance or repeated use, decay out of the hot tier.

Pure rules over a memory's fields; the maintenance task applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import Memory, Tier
from .scoring import frequency

PROMOTABLE = frozenset({Tier.WORKING, Tier.SHORT_TERM})
DECAYING = frozenset({Tier.LONG_TERM, Tier.EPISODIC})


@dataclass(frozen=True)
class LifecyclePolicy:
    promote_accesses: int = 3
    promote_importance: float | None = 0.8
    decay_half_life_s: float = 30 * 24 * 3600.0
    evict_below: float = 0.05


def strength(memory: Memory, now: float, half_life_s: float) -> float:
    """How strongly a memory is held, 0..1: the mean of its importance and its access frequency,
    halving every `half_life_s` since it was last used (read, changed or stored)."""
    last_use = max(memory.last_access_time, memory.update_time, memory.create_time)
    idle = max(0.0, now - last_use)
    held = (memory.importance + frequency(memory.access_count)) / 2
    return float(held * 0.5 ** (idle / half_life_s))


def should_promote(memory: Memory, policy: LifecyclePolicy) -> bool:
    """A working or short-term memory that proved useful moves to long-term."""
    if memory.tier not in PROMOTABLE:
        return False
    if memory.access_count >= policy.promote_accesses:
        return True
    return policy.promote_importance is not None and memory.importance >= policy.promote_importance


def should_evict(memory: Memory, now: float, policy: LifecyclePolicy) -> bool:
    """A long-term or episodic memory whose strength decayed below the threshold leaves the hot
    tier (the caller keeps it only where an archive holds it)."""
    return memory.tier in DECAYING and strength(memory, now, policy.decay_half_life_s) < (
        policy.evict_below
    )
