"""The one place user values become RediSearch query syntax.

RedisVL's tag escaper misses the backtick (found by property tests: a tag "x`y" matched nothing),
so tag clauses are built here, escaping every ASCII character that is not a letter or digit.
Non-ASCII characters are never syntax and pass through. Numbers go through RedisVL's `Num`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from redisvl.query import TextQuery
from redisvl.query.filter import FilterExpression

# Tag fields split values at their separator (',' by default). Validation forbids control
# characters in every client value, so this one can never occur inside a value.
TAG_SEPARATOR = "\x1f"
SINGLE_VALUE = {"separator": TAG_SEPARATOR, "case_sensitive": True}

_SYNTAX = re.compile(r"([\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])")
_WORD = re.compile(r"\w+")
# A query term: a word with a letter or digit in it. A lone "_" is RediSearch query syntax (a
# syntax error as a term; found by the fuzz test, and the only one among all 49,701 word
# characters of the BMP), and words of underscores alone carry no topic.
_TERM = re.compile(r"\w*[^\W_]\w*")
MAX_KEYWORD_TERMS = 64


def escape_tag(value: str) -> str:
    return _SYNTAX.sub(r"\\\1", value)


def tag_in(field: str, values: str | Sequence[str]) -> FilterExpression:
    """`field` equals the value, or any of the values (exact, case as the field is declared)."""
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise ValueError("tag_in needs at least one value")
    return FilterExpression("@" + field + ":{" + "|".join(escape_tag(v) for v in items) + "}")


# English function words that carry no topic in a query. RediSearch's own stopword list (applied
# at indexing) lacks interrogatives, auxiliaries and pronouns, so "When did Caroline go ...?"
# matched every turn containing "did". Besides the usual list: every modal auxiliary, and the
# hedges a question about what someone would do carries ("What might John ...", "Would she
# likely ..."), which matched turns for "might" alone. Not "may": it is also a month.
QUERY_STOPWORDS = frozenset(
    [
        "might",
        "must",
        "shall",
        "ought",
        "likely",
        "probably",
        "perhaps",
        "possibly",
        "maybe",
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
    ]
)


def keyword_terms(text: str) -> list[str]:
    """The words of user text, the only form in which it reaches a RediSearch text query.

    RediSearch splits indexed content at punctuation and spaces, so matching needs nothing else;
    dropping every non-word character leaves no query syntax (`|`, `@`, `{`, `*`, `-`, quotes)
    for RedisVL's whitespace tokenizer to pass through. Words without a letter or digit ("_") are
    dropped too. Function words are dropped unless nothing else is left. Unique, in order, at
    most 64.
    """
    words = [w for w in dict.fromkeys(_WORD.findall(text)) if _TERM.fullmatch(w)]
    content = [w for w in words if w.casefold() not in QUERY_STOPWORDS]
    return (content or words)[:MAX_KEYWORD_TERMS]


class KeywordQuery(TextQuery):  # type: ignore[misc]  # RedisVL's TextQuery is untyped
    """BM25 over `fields` for word terms, pre-filtered inside the index, scored over every term.

    RediSearch scores a union nested under an intersection by the first of its terms that
    matches, so `(@content:(a | b)) @tenant:{t}` (RedisVL's form) ranks as if most query terms
    were not there: on LoCoMo, BM25 recall@10 fell from 0.636 unfiltered to 0.525 filtered.
    This query puts the union on top, each term intersected with the filter, and gets every
    term's BM25 contribution back (0.626 with the filter, bench/results/locomo.md).
    Terms must come from `keyword_terms` (words with a letter or digit: no query syntax).
    """

    def __init__(self, terms: Sequence[str], fields: Sequence[str], **kwargs: object) -> None:
        if not terms or any(not _TERM.fullmatch(t) for t in terms):
            raise ValueError("keyword terms must be words with a letter or digit")
        if not fields or any(not _WORD.fullmatch(f) for f in fields):
            raise ValueError("fields must be field names")
        self._keyword_terms = [t.lower() for t in terms]
        # Several text fields score as one document (term frequencies and length summed).
        self._keyword_fields = "|".join(fields)
        super().__init__(text=" ".join(terms), text_field_name=fields[0], stopwords=None, **kwargs)

    def _build_query_string(self) -> str:
        flt = str(self._filter_expression) if self._filter_expression is not None else "*"
        scope = "" if flt == "*" else " " + flt
        return " | ".join(
            f"(@{self._keyword_fields}:{term}{scope})" for term in self._keyword_terms
        )
