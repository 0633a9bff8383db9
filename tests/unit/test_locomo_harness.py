"""The LoCoMo harness reads the authors' release as it is, quirks included: a figure scored on
conversations nobody here has seen must not lose questions to how their ids are spelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.locomo import DATA, dia_id, evidence_of, read_conversations


def _conversation(evidence: list[str], *, turn_id: str = "D11:26") -> dict[str, Any]:
    return {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ada",
            "speaker_b": "Ben",
            "session_11_date_time": "1:56 pm on 8 May, 2023",
            "session_11": [
                {"speaker": "Ada", "dia_id": turn_id, "text": "The book was The Alchemist."},
                {"speaker": "Ben", "dia_id": "D11:27", "text": "Nice."},
            ],
        },
        "qa": [
            {
                "question": "Which book?",
                "answer": "The Alchemist",
                "evidence": evidence,
                "category": 4,
            },
            {"question": "Unanswerable?", "answer": "", "evidence": ["D11:27"], "category": 5},
        ],
    }


def test_turn_ids_have_one_spelling() -> None:
    assert dia_id("D11:26") == "D11:26"
    assert dia_id("D:11:26") == "D11:26"
    assert dia_id("D011:026") == "D11:26"
    assert dia_id("X7") == "X7"  # not a LoCoMo id: left as written


def test_evidence_items_are_split_and_repaired() -> None:
    assert evidence_of({"evidence": ["D8:6; D9:17", "D1:2,D1:3"]}) == {
        "D8:6",
        "D9:17",
        "D1:2",
        "D1:3",
    }
    assert evidence_of({"evidence": ["D:11:26", "D", "D11:26"]}) == {"D11:26"}
    assert evidence_of({"evidence": ["D"]}) == set()
    assert evidence_of({}) == set()


def test_a_release_file_lists_conversations_by_sample_id(tmp_path: Path) -> None:
    release = tmp_path / "locomo10.json"
    second = _conversation(["D11:26"]) | {"sample_id": "conv-y"}
    release.write_text(json.dumps([_conversation(["D:11:26"]), second]))
    read = read_conversations(release)
    assert [c["name"] for c in read] == ["conv-x", "conv-y"]
    first = read[0]
    assert [q["question"] for q in first["questions"]] == ["Which book?"]  # category 5 left out
    assert evidence_of(first["questions"][0]) == {"D11:26"}
    assert first["unknown_evidence"] == []
    assert [turn["dia_id"] for _, turn, _ in first["turns"]] == ["D11:26", "D11:27"]


def test_a_folder_may_hold_release_files_and_conversation_files(tmp_path: Path) -> None:
    (tmp_path / "a-release.json").write_text(json.dumps([_conversation(["D11:26"])]))
    (tmp_path / "b.json").write_text(json.dumps(_conversation(["D11:27"])))
    assert [c["name"] for c in read_conversations(tmp_path)] == ["conv-x", "b"]


def test_evidence_naming_no_turn_is_reported(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(_conversation(["D11:26", "D12:1"], turn_id="D011:26")))
    (read,) = read_conversations(one)
    assert read["name"] == "one"
    assert read["unknown_evidence"] == ["D12:1"]
    assert read["without_evidence"] == 0


@pytest.mark.skipif(not DATA.is_dir(), reason="the dev conversations sit beside the checkout")
def test_the_dev_conversations_read_whole() -> None:
    read = read_conversations(DATA)
    assert [c["name"] for c in read] == ["26", "30", "41"]
    assert sum(len(c["turns"]) for c in read) == 1451
    assert sum(len(c["questions"]) for c in read) == 383
    assert all(c["unknown_evidence"] == [] for c in read)
