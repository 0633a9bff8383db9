"""The re-ranker's features and model file, and the dates a query names: pure functions."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from aether_memory.domain.rerank import (
    FEATURES,
    Facts,
    LinearModel,
    features,
    query_words,
    rerank,
    speaker_of,
)
from aether_memory.domain.scoring import Candidate
from aether_memory.domain.temporal import DateCue, date_cues
from aether_memory.service.memories import load_rerank_model


def at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What painting did she show on October 13, 2023?", [(date(2023, 10, 13), 1)]),
        ("What did Gina find on 1 February, 2023?", [(date(2023, 2, 1), 1)]),
        ("the 3rd of June 2023", [(date(2023, 6, 3), 1)]),
        ("What workout did Maria start in December 2023?", [(date(2023, 12, 1), 31)]),
        ("How many times has she gone to the beach in 2023?", [(date(2023, 1, 1), 365)]),
        ("Sept. 2024 and Jan 2025", [(date(2024, 9, 1), 30), (date(2025, 1, 1), 31)]),
    ],
)
def test_written_dates_become_day_spans(text: str, expected: list[tuple[date, int]]) -> None:
    cues = date_cues(text)
    assert [(c.start, (c.end - c.start).days) for c in cues if c.start and c.end] == expected


def test_a_month_alone_needs_a_preposition_and_may_the_verb_is_no_month() -> None:
    assert date_cues("When did Melanie go camping in July?") == [DateCue(month=7)]
    assert date_cues("You may go camping; I may join. March on!") == []
    assert date_cues("What did she do in May?") == [DateCue(month=5)]
    assert date_cues("February 30, 2023") == []  # no such day: no cue, no error
    assert date_cues("last week, yesterday, 2 days ago") == []  # relative: not read


def test_a_span_fits_memories_of_its_days_and_the_week_after() -> None:
    (cue,) = date_cues("on May 3, 2023")
    assert cue.fits(at(2023, 5, 3)) and cue.fits(at(2023, 5, 9))
    assert not cue.fits(at(2023, 5, 2)) and not cue.fits(at(2023, 5, 11))
    (month,) = date_cues("in July")
    assert month.fits(at(2021, 7, 20)) and month.fits(at(2024, 8, 5))
    assert not month.fits(at(2024, 8, 20))


def _candidate(
    memory_id: str, vector: float = 0.0, keyword: float = 0.0, **ranks: int
) -> Candidate:
    c = Candidate(memory_id, vector_similarity=vector, keyword_score=keyword)
    c.vector_rank, c.keyword_rank = ranks.get("v"), ranks.get("k")
    return c


def test_features_read_neighbours_in_the_candidate_set_only() -> None:
    question = _candidate("q", vector=0.8, keyword=4.0, v=1, k=1)
    answer = _candidate("a")  # found by neither search: a neighbour
    other = _candidate("o", vector=0.4, keyword=2.0, v=2, k=2)
    facts = {
        "q": Facts(session="s", seq=4, words=6, asks=True),
        "a": Facts(session="s", seq=5, words=20, asks=False),
        "o": Facts(session="t", seq=5, words=3, asks=False),  # its seq 4 is no candidate
    }
    rows = features([question, answer, other], {"a": 0.3}, facts, [])
    col = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    assert col["vector"].tolist() == [1.0, 0.0, 0.0]  # min-max over the vector hits
    assert col["keyword"].tolist() == [1.0, 0.0, 0.5]  # over the best BM25
    assert col["cosine"].tolist() == [0.8, 0.3, 0.4]
    assert col["previous"].tolist() == [0.0, 2.0, 0.0]
    assert col["next"].tolist() == [0.0, 0.0, 0.0]  # the answer after "q" scored nothing
    assert col["neighbor"].tolist() == [0.0, 2.0, 0.0]
    assert col["asks"].tolist() == [1.0, 0.0, 0.0]
    assert col["log_words"][1] == pytest.approx(math.log1p(20))
    assert col["vector_rank"].tolist() == [1.0, 0.0, pytest.approx(1 / 1.2)]


def test_a_question_before_lifts_its_answer_and_unknown_facts_are_neutral() -> None:
    model = load_rerank_model()
    question = _candidate("q", vector=0.8, keyword=4.0, v=1, k=1)
    other = _candidate("o", vector=0.5, keyword=1.0, v=2, k=2)
    answer = _candidate("a")
    facts = {
        "q": Facts(session="s", seq=1, words=8),
        "o": Facts(session="s", seq=7, words=8),
        "a": Facts(session="s", seq=2, words=8),
    }
    cosines = {"q": 0.8, "o": 0.5, "a": 0.5}
    rerank([question, other, answer], model, cosines, facts, [])
    # Same cosine, same length, no keyword hit: the turn after the best hit beats the other.
    assert answer.rerank > 0 and question.relevance == 1.0
    lone = _candidate("a")
    rerank([question, other, lone], model, cosines, {**facts, "a": Facts(words=8)}, [])  # no seq
    assert answer.rerank > lone.rerank
    # A memory stored before words were recorded scores as if it had the average length.
    unknown = model.probabilities(np.full((1, len(FEATURES)), np.nan))
    assert unknown[0] == pytest.approx(1 / (1 + math.exp(-model.bias)))


@pytest.mark.parametrize(
    ("content", "speaker"),
    [
        ("Melanie: I signed up for a pottery class", "melanie"),
        ("Dr. Ana Ruiz: the scan is clear", "dr. ana ruiz"),
        ("melanie: lower case is no name", None),
        ("I said: this is no speaker", None),
        ("Melanie:no space after the colon", None),
        ("Jon went to Paris: a trip", None),  # more than three words before the colon
    ],
)
def test_a_speaker_is_a_leading_name_and_colon(content: str, speaker: str | None) -> None:
    assert speaker_of(content) == speaker


def test_speaker_named_marks_memories_said_by_whom_the_query_names() -> None:
    found = [_candidate(i, vector=0.5, keyword=1.0, v=1, k=1) for i in ("m", "c", "x")]
    facts = {"m": Facts(speaker="melanie"), "c": Facts(speaker="caroline"), "x": Facts()}
    named = query_words("What activities does Melanie's family enjoy?")
    assert "melanie" in named and "melanie's" not in named
    rows = features(found, {}, facts, [], named)
    column = rows[:, FEATURES.index("speaker_named")]
    assert column[:2].tolist() == [1.0, 0.0] and math.isnan(column[2])  # unknown: neutral
    nobody = features(found, {}, facts, [], query_words("What did they cook?"))
    assert np.isnan(nobody[:, FEATURES.index("speaker_named")]).all()  # tells nothing then
    # Outside a session a memory has no neighbours to speak of: unknown, not "none found".
    around = [FEATURES.index(f) for f in ("neighbor", "neighbor_keyword", "previous", "next")]
    assert np.isnan(rows[:, around]).all()
    # The bundled model lifts what the named person said over what the other one said.
    model = load_rerank_model()
    rerank(found, model, {}, facts, [], named)
    assert found[0].rerank > found[2].rerank > found[1].rerank


def test_the_bundled_model_matches_this_version_and_bad_files_are_refused() -> None:
    model = load_rerank_model()
    assert model.features == FEATURES and model.about["method"].startswith("logistic")
    raw = model.to_dict()
    assert LinearModel.from_dict(raw).to_dict() == raw
    with pytest.raises(ValueError, match="features"):
        LinearModel.from_dict({**raw, "features": raw["features"][::-1]})
    with pytest.raises(ValueError, match="one value per feature"):
        LinearModel.from_dict({**raw, "weights": raw["weights"][:-1]})
