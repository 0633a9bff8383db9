"""Hybrid retrieval scoring: reciprocal-rank fusion, then weighted re-scoring.

Every number here is a similarity (higher is better); distances never leave the store layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RRF_K = 60


@dataclass(frozen=True)
class Weights:
    relevance: float = 1.0
    recency: float = 0.0
    importance: float = 0.0
    frequency: float = 0.0
    recency_half_life_s: float = 7 * 24 * 3600.0


@dataclass
class Candidate:
    """A memory found by one or both retrieval methods, with its scores so far."""

    memory_id: str
    vector_similarity: float = 0.0
    keyword_score: float = 0.0
    vector_rank: int | None = None
    keyword_rank: int | None = None
    fused: float = 0.0
    relevance: float = 0.0
    recency: float = 0.0
    importance: float = 0.0
    frequency: float = 0.0
    score: float = 0.0


def fuse(
    vector_hits: list[tuple[str, float]],
    keyword_hits: list[tuple[str, float]],
    *,
    rrf_k: int = RRF_K,
    keyword_weight: float = 1.0,
) -> list[Candidate]:
    """Reciprocal-rank fusion of two best-first rankings (either may be empty).

    `relevance` is the fused score scaled to 0..1 by the best score a memory could reach with
    the methods that ran, so a memory ranked first by every method gets 1.0.
    """
    candidates: dict[str, Candidate] = {}
    for rank, (memory_id, similarity) in enumerate(vector_hits, start=1):
        c = candidates.setdefault(memory_id, Candidate(memory_id))
        c.vector_similarity, c.vector_rank = similarity, rank
        c.fused += 1.0 / (rrf_k + rank)
    for rank, (memory_id, score) in enumerate(keyword_hits, start=1):
        c = candidates.setdefault(memory_id, Candidate(memory_id))
        c.keyword_score, c.keyword_rank = score, rank
        c.fused += keyword_weight / (rrf_k + rank)
    reachable = (1.0 if vector_hits else 0.0) + (keyword_weight if keyword_hits else 0.0)
    best = reachable / (rrf_k + 1) if reachable else 1.0
    for c in candidates.values():
        c.relevance = c.fused / best
    return list(candidates.values())


def recency(age_s: float, half_life_s: float) -> float:
    """1.0 for now, halving every half-life; future times count as now."""
    return float(0.5 ** (max(age_s, 0.0) / half_life_s))


def frequency(access_count: int) -> float:
    """0.0 for never accessed, reaching 1.0 at 100 accesses (log scale)."""
    return min(1.0, math.log1p(max(access_count, 0)) / math.log1p(100))


def rescore(
    candidates: list[Candidate],
    weights: Weights,
    *,
    now: float,
    event_times: dict[str, float],
    importances: dict[str, float],
    access_counts: dict[str, int],
) -> list[Candidate]:
    """Weighted sum of normalized relevance, recency, importance and frequency, best first.

    Ties keep fused-rank order, so equal weights never shuffle the retrieval ranking.
    """
    for c in candidates:
        c.recency = recency(now - event_times.get(c.memory_id, now), weights.recency_half_life_s)
        c.importance = importances.get(c.memory_id, 0.0)
        c.frequency = frequency(access_counts.get(c.memory_id, 0))
        c.score = (
            weights.relevance * c.relevance
            + weights.recency * c.recency
            + weights.importance * c.importance
            + weights.frequency * c.frequency
        )
    return sorted(candidates, key=lambda c: (-c.score, -c.fused, c.memory_id))
