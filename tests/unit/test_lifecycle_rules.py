"""The promotion and decay rules as plain functions."""

from __future__ import annotations

import pytest

from aether_memory.domain.lifecycle import LifecyclePolicy, should_evict, should_promote, strength
from aether_memory.domain.memory import Memory, Tier

DAY = 24 * 3600.0
POLICY = LifecyclePolicy(decay_half_life_s=30 * DAY, evict_below=0.05)


def memory(**fields: object) -> Memory:
    base: dict[str, object] = {"id": "m", "agent_id": "a", "content": "c", "create_time": 0.0}
    return Memory(**{**base, **fields})  # type: ignore[arg-type]


def test_strength_halves_every_half_life_from_the_last_use() -> None:
    m = memory(importance=0.6, create_time=0.0)
    assert strength(m, 0.0, 30 * DAY) == pytest.approx(0.3)
    assert strength(m, 30 * DAY, 30 * DAY) == pytest.approx(0.15)
    m.last_access_time = 30 * DAY  # a read resets the clock
    assert strength(m, 30 * DAY, 30 * DAY) == pytest.approx(0.3)


def test_access_frequency_holds_a_memory_like_importance_does() -> None:
    never = memory(importance=0.2)
    often = memory(importance=0.2, access_count=100)
    assert strength(often, 0.0, DAY) == pytest.approx(0.6)
    assert strength(often, 0.0, DAY) > strength(never, 0.0, DAY)


@pytest.mark.parametrize(
    ("tier", "accesses", "importance", "expected"),
    [
        (Tier.SHORT_TERM, 3, 0.5, True),
        (Tier.SHORT_TERM, 2, 0.5, False),
        (Tier.WORKING, 0, 0.8, True),
        (Tier.SCRATCHPAD, 10, 1.0, False),  # scratch space is never promoted
        (Tier.LONG_TERM, 10, 1.0, False),
    ],
)
def test_promotion(tier: Tier, accesses: int, importance: float, expected: bool) -> None:
    m = memory(tier=tier, access_count=accesses, importance=importance)
    assert should_promote(m, POLICY) is expected


def test_promotion_by_importance_can_be_disabled() -> None:
    m = memory(tier=Tier.SHORT_TERM, importance=1.0)
    assert not should_promote(m, LifecyclePolicy(promote_importance=None))


def test_only_long_term_and_episodic_memories_decay_out() -> None:
    later = 365 * DAY
    assert should_evict(memory(tier=Tier.LONG_TERM, importance=0.9), later, POLICY)
    assert should_evict(memory(tier=Tier.EPISODIC, importance=0.9), later, POLICY)
    assert not should_evict(memory(tier=Tier.SHORT_TERM, importance=0.0), later, POLICY)
    assert not should_evict(memory(tier=Tier.LONG_TERM, importance=0.9), 10 * DAY, POLICY)
