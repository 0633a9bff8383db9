"""User values turned into RediSearch syntax: nothing unescaped survives."""

from __future__ import annotations

import re
import string

from hypothesis import given
from hypothesis import strategies as st

from aether_memory.stores.redis.query import escape_tag, keyword_terms, tag_in


@given(st.text())
def test_every_ascii_punctuation_character_is_escaped(value: str) -> None:
    escaped = escape_tag(value)
    unescaped = re.sub(r"\\.", "", escaped, flags=re.DOTALL)
    assert not any(ch in string.punctuation or (ch.isspace() and ch.isascii()) for ch in unescaped)


@given(st.text())
def test_keyword_terms_hold_only_word_characters(text: str) -> None:
    terms = keyword_terms(text)
    assert len(terms) <= 64 and len(terms) == len(set(terms))
    assert all(re.fullmatch(r"\w+", term) and term.strip("_") for term in terms)


def test_underscore_only_words_are_not_terms() -> None:
    assert keyword_terms("_ __ snake_case _x") == ["snake_case", "_x"]
    assert keyword_terms("_") == []


def test_tag_clause_joins_alternatives_with_escaped_values() -> None:
    assert str(tag_in("tags", ["a|b", "c`d"])) == "@tags:{a\\|b|c\\`d}"
    assert str(tag_in("agent_id", "é x")) == "@agent_id:{é\\ x}"


def test_function_words_modals_and_hedges_are_dropped_but_not_the_month() -> None:
    assert keyword_terms("What might John's degree likely be?") == ["John", "s", "degree"]
    assert keyword_terms("What did Maria do in May 2023?") == ["Maria", "May", "2023"]
    assert keyword_terms("would it be") == ["would", "it", "be"]  # nothing else is left
