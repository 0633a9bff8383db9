"""The learned re-ranker: a logistic model over what hybrid retrieval already knows of each
candidate, its neighbours in its session, and the dates the query names.

No model runs per candidate: the features are numbers the two searches and one neighbour query
return, so re-ranking about 100 candidates costs half a millisecond of Python and numpy. The
weights are fitted by `python -m bench.locomo --train` (see bench/results/locomo.md for the
leave-one-conversation-out figures) and shipped as data beside the service.

Neighbours: a memory stored into a session takes the next position there (`seq`). A question
often matches the turn that asked ("What did you do last weekend?") while the answer is the turn
after; a memory whose neighbour is a strong hit is pulled up, and a neighbour that neither search
returned joins the candidates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .scoring import Candidate, convex_parts
from .temporal import DateCue, fits_any

FEATURES = (
    "vector",  # cosine min-max scaled over the vector hits; 0 if not one
    "keyword",  # BM25 over the best BM25 of the keyword hits; 0 if not one
    "cosine",  # raw cosine similarity to the query (neighbours and keyword hits included)
    "vector_rank",  # 1 / (1 + (rank - 1) / 5) in the vector hits; 0 if not one
    "keyword_rank",  # the same in the keyword hits
    # The next four are unknown (NaN, scored as the training mean) outside a session.
    "neighbor",  # the best vector + keyword of the memories before and after it
    "neighbor_keyword",  # the best keyword of the same two
    "previous",  # vector + keyword of the memory before it in its session
    "next",  # vector + keyword of the memory after it
    "asks",  # 1 if its content has a question mark: a question is seldom the answer
    "log_words",  # log(1 + words in its content)
    "date_fit",  # 1 if its event time falls in a date the query names (+ 7 days)
    # 1 if the query names who said it ("Name: ..."), 0 if it names another speaker; NaN where
    # it is unknown who said it, or the query names none of the candidates' speakers.
    "speaker_named",
)
_RANK_SCALE = 5.0


@dataclass(frozen=True)
class Facts:
    """What a search hit carries about a memory besides its score."""

    event_time: float = 0.0
    importance: float = 0.0
    session: str = ""
    seq: int | None = None  # its position in its session; None outside one
    words: int | None = None  # None: outside a session, or stored before words were recorded
    asks: bool | None = None
    speaker: str | None = None  # who said it, lower case, from a leading "Name: "; None: unknown


@dataclass(frozen=True)
class Hits:
    """One retrieval method's (id, score) list, best first, plus what re-scoring and re-ranking
    need of each id. The memories themselves are fetched for the page that is returned
    (`get_many`)."""

    scores: list[tuple[str, float]]
    facts: dict[str, Facts]


_SPEAKER = re.compile(r"([A-Z][\w'.-]{0,30}(?: [A-Z][\w'.-]{0,30}){0,2}):\s")
_WORD = re.compile(r"[\w'.-]+")


def speaker_of(content: str) -> str | None:
    """Who said a memory, when its content leads with a name and a colon ("Melanie: ...")."""
    found = _SPEAKER.match(content)
    return found.group(1).lower() if found else None


def query_words(query: str) -> frozenset[str]:
    """The query's words, lower case, possessives dropped ("Melanie's" is "melanie")."""
    words = (w.strip("'.-") for w in _WORD.findall(query.lower()))
    return frozenset(w[:-2] if w.endswith("'s") else w for w in words)


def content_facts(content: str, in_session: bool) -> tuple[int | None, bool]:
    """(words, asks) of a memory's content, recorded when it is written.

    The length is recorded for memories in a session only: in a conversation a short turn
    ("Thanks!") is seldom what a question is about, which the model learned from LoCoMo; a
    fact stored on its own is no less relevant for being short, and its length stays unknown,
    which the model treats as average.
    """
    return (len(content.split()) if in_session else None), "?" in content


@dataclass(frozen=True)
class LinearModel:
    """Standardized features, one weight each, a bias; the logistic of the sum is the score."""

    features: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    bias: float
    about: Mapping[str, Any]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LinearModel:
        features = tuple(raw["features"])
        if features != FEATURES:
            raise ValueError(f"re-ranker features {features} are not this version's {FEATURES}")
        mean, scale, weights = (
            np.asarray(raw[k], dtype=np.float64) for k in ("mean", "scale", "weights")
        )
        if any(a.shape != (len(FEATURES),) for a in (mean, scale, weights)) or np.any(scale <= 0):
            raise ValueError("re-ranker mean, scale and weights need one value per feature")
        return cls(features, mean, scale, weights, float(raw["bias"]), dict(raw.get("about", {})))

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": self.mean.round(6).tolist(),
            "scale": self.scale.round(6).tolist(),
            "weights": self.weights.round(6).tolist(),
            "bias": round(self.bias, 6),
            "about": dict(self.about),
        }

    def probabilities(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """P(relevant) per row; a missing value (NaN) counts as the training mean."""
        z = (x - self.mean) / self.scale
        z = np.where(np.isnan(z), 0.0, z)
        logits = z @ self.weights + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)


def features(
    candidates: Sequence[Candidate],
    cosines: Mapping[str, float],
    facts: Mapping[str, Facts],
    cues: list[DateCue],
    named: frozenset[str] = frozenset(),
) -> npt.NDArray[np.float64]:
    """One row of FEATURES per candidate, in order; `named` are the query's words."""
    vector = convex_parts(
        [(c.memory_id, c.vector_similarity) for c in candidates if c.vector_rank is not None],
        minimum=True,
    )
    keyword = convex_parts(
        [(c.memory_id, c.keyword_score) for c in candidates if c.keyword_rank is not None],
        minimum=False,
    )
    at: dict[tuple[str, int], str] = {}
    for c in candidates:
        fact = facts.get(c.memory_id, Facts())
        if fact.seq is not None:
            at[(fact.session, fact.seq)] = c.memory_id
    # Whether the query names anyone who said a candidate; if not, who said what tells nothing.
    speakers = {c.memory_id: facts.get(c.memory_id, Facts()).speaker for c in candidates}
    naming = any(s is not None and set(s.split()) <= named for s in speakers.values())
    rows = np.zeros((len(candidates), len(FEATURES)))
    for i, c in enumerate(candidates):
        fact = facts.get(c.memory_id, Facts())
        speaker = speakers[c.memory_id]
        around = (math.nan,) * 4  # outside a session a memory has no neighbours: unknown
        if fact.seq is not None:
            before = at.get((fact.session, fact.seq - 1), "")
            after = at.get((fact.session, fact.seq + 1), "")
            both = [vector.get(n, 0.0) + keyword.get(n, 0.0) for n in (before, after) if n]
            around = (
                max(both, default=0.0),
                max((keyword.get(n, 0.0) for n in (before, after) if n), default=0.0),
                vector.get(before, 0.0) + keyword.get(before, 0.0) if before else 0.0,
                vector.get(after, 0.0) + keyword.get(after, 0.0) if after else 0.0,
            )
        rows[i] = (
            vector.get(c.memory_id, 0.0),
            keyword.get(c.memory_id, 0.0),
            cosines.get(c.memory_id, c.vector_similarity),
            _rank(c.vector_rank),
            _rank(c.keyword_rank),
            *around,
            math.nan if fact.asks is None else float(fact.asks),
            math.nan if fact.words is None else math.log1p(fact.words),
            float(bool(cues) and fits_any(cues, fact.event_time)),
            math.nan if speaker is None or not naming else float(set(speaker.split()) <= named),
        )
    return rows


def rerank(
    candidates: Sequence[Candidate],
    model: LinearModel,
    cosines: Mapping[str, float],
    facts: Mapping[str, Facts],
    cues: list[DateCue],
    named: frozenset[str] = frozenset(),
) -> None:
    """Set each candidate's `rerank` (P(relevant)) and `relevance` (that over the best one's)."""
    if not candidates:
        return
    scores = model.probabilities(features(candidates, cosines, facts, cues, named))
    best = float(scores.max())
    for c, p in zip(candidates, scores, strict=True):
        c.rerank = float(p)
        c.relevance = float(p) / best if best > 0 else 0.0
        c.vector_similarity = cosines.get(c.memory_id, c.vector_similarity)


def _rank(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / (1.0 + (rank - 1) / _RANK_SCALE)
