"""Domain rules without I/O: fusion, re-scoring, content normalization, page tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aether_memory.domain.errors import InvalidPageToken
from aether_memory.domain.memory import content_fingerprint, normalize_content
from aether_memory.domain.paging import MAX_OFFSET, PageTokens, is_stream_id
from aether_memory.domain.scoring import Weights, frequency, fuse, recency, rescore

ids = st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=20)


scores = st.floats(0, 100, allow_nan=False)


def test_equal_scores_share_the_better_rank() -> None:
    # Two memories with the same words have the same BM25: neither is the better keyword hit.
    found = fuse([("a", 0.9)], [("a", 2.0), ("b", 2.0), ("c", 1.0), ("d", 1.0), ("e", 0.5)])
    ranks = {c.memory_id: c.keyword_rank for c in found}
    assert ranks == {"a": 1, "b": 1, "c": 3, "d": 3, "e": 5}
    rrf = {c.memory_id: c.fused for c in fuse([], [("x", 1.0), ("y", 1.0)], method="rrf")}
    assert rrf["x"] == rrf["y"]


@pytest.mark.parametrize("method", ["convex", "rrf"])
@given(
    v=ids,
    k=ids,
    vs=st.lists(scores, min_size=20, max_size=20),
    ks=st.lists(scores, min_size=20, max_size=20),
)
def test_fused_relevance_is_between_zero_and_one_and_top_in_both_scores_one(
    method: str, v: list[str], k: list[str], vs: list[float], ks: list[float]
) -> None:
    vector = list(zip(v, sorted(vs, reverse=True), strict=False))
    keyword = list(zip(k, sorted(ks, reverse=True), strict=False))
    candidates = fuse(vector, keyword, method=method)
    assert {c.memory_id for c in candidates} == set(v) | set(k)
    assert all(0.0 <= c.relevance <= 1.0 + 1e-12 for c in candidates)
    if v and k and v[0] == k[0]:
        assert max(candidates, key=lambda c: c.fused).relevance == pytest.approx(1.0)


def test_convex_fusion_sums_normalized_scores() -> None:
    # Cosine min-max over the vector hits; BM25 over its best (its least possible is 0).
    candidates = fuse([("a", 0.9), ("b", 0.5)], [("b", 2.0), ("c", 1.0)], keyword_weight=1.0)
    relevance = {c.memory_id: c.relevance for c in candidates}
    assert relevance == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.25})
    gap = fuse([("a", 0.9), ("b", 0.89), ("c", 0.1)], [("c", 1.0), ("b", 0.99)])
    ranked = rescore(gap, Weights(), now=0, event_times={}, importances={}, access_counts={})
    # Ranks alone (RRF) cannot tell b, nearly best in both, from a and c, each best in one.
    assert ranked[0].memory_id == "b"
    with pytest.raises(ValueError):
        fuse([], [], method="borda")


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_a_memory_found_by_both_methods_outranks_one_found_by_one(method: str) -> None:
    vector = [("a", 0.9), ("b", 0.85), ("x", 0.5), ("y", 0.4)]
    candidates = fuse(vector, [("b", 3.0), ("c", 2.0)], method=method)
    ranked = rescore(candidates, Weights(), now=0, event_times={}, importances={}, access_counts={})
    assert ranked[0].memory_id == "b"


@given(
    st.lists(
        st.tuples(st.floats(0, 1), st.integers(0, 10**6), st.floats(0, 1e8)),
        min_size=1,
        max_size=10,
    )
)
def test_zero_extra_weights_keep_the_fused_order(rows: list[tuple[float, int, float]]) -> None:
    vector = [(f"m{i}", 0.0) for i in range(len(rows))]
    candidates = fuse(vector, [])
    ranked = rescore(
        candidates,
        Weights(),
        now=1e8,
        event_times={f"m{i}": r[2] for i, r in enumerate(rows)},
        importances={f"m{i}": r[0] for i, r in enumerate(rows)},
        access_counts={f"m{i}": r[1] for i, r in enumerate(rows)},
    )
    assert [c.memory_id for c in ranked] == [m for m, _ in vector]


@pytest.mark.parametrize("method", ["convex", "rrf"])
def test_importance_weight_lifts_an_important_memory(method: str) -> None:
    vector = [("minor", 0.9), ("major", 0.85), ("x", 0.5), ("y", 0.4), ("z", 0.3)]
    candidates = fuse(vector, [], method=method)
    ranked = rescore(
        candidates,
        Weights(importance=1.0),
        now=0,
        event_times={},
        importances={"minor": 0.1, "major": 1.0, "x": 0.0, "y": 0.0, "z": 0.0},
        access_counts={},
    )
    assert ranked[0].memory_id == "major"


@given(st.floats(0, 1e9), st.floats(1, 1e7))
def test_recency_halves_every_half_life(age: float, half_life: float) -> None:
    assert recency(age + half_life, half_life) == pytest.approx(
        recency(age, half_life) / 2, rel=1e-6, abs=1e-300
    )
    assert recency(-5, half_life) == 1.0


def test_frequency_is_monotone_and_bounded() -> None:
    values = [frequency(n) for n in (0, 1, 10, 100, 10_000)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0


def test_identical_content_after_normalization_has_one_fingerprint() -> None:
    assert normalize_content("  Ana  LIVES\nin Lisbon ") == "ana lives in lisbon"
    assert content_fingerprint("a", "Ａna lives") == content_fingerprint("a", "ana LIVES")
    assert content_fingerprint("a", "x") != content_fingerprint("b", "x")


tokens = PageTokens(b"k" * 32)


STREAM_IDS = st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)).map(
    lambda p: f"{p[0]}-{p[1]}".encode()
)


@given(st.integers(0, MAX_OFFSET), st.one_of(st.just(b""), STREAM_IDS))
def test_page_tokens_round_trip_for_the_same_request(offset: int, position: bytes) -> None:
    fp = tokens.fingerprint("tenant", "List", b"request")
    assert tokens.decode(tokens.encode(fp, offset, position), fp) == (offset, position)


@given(
    st.one_of(
        st.tuples(st.integers(MAX_OFFSET + 1, 2**64 - 1), st.just(b"")),
        st.tuples(st.just(0), st.binary(min_size=1, max_size=40)),
    )
)
def test_sealed_tokens_that_say_what_no_page_is_are_refused(case: tuple[int, bytes]) -> None:
    offset, position = case
    fp = tokens.fingerprint("tenant", "List", b"request")
    if position and is_stream_id(position.decode("latin-1")):
        return  # a real stream id: a page this service could have issued
    with pytest.raises(InvalidPageToken, match="not a token this service issued"):
        tokens.decode(tokens.encode(fp, offset, position), fp)


def test_page_tokens_reject_other_requests_tampering_and_other_keys() -> None:
    fp = tokens.fingerprint("tenant", "List", b"request")
    token = tokens.encode(fp, 10)
    with pytest.raises(InvalidPageToken, match="different fields"):
        tokens.decode(token, tokens.fingerprint("tenant", "List", b"other"))
    with pytest.raises(InvalidPageToken):
        tokens.decode(tokens.encode(tokens.fingerprint("other-tenant", "List", b"request"), 10), fp)
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(InvalidPageToken):
        tokens.decode(tampered, fp)
    with pytest.raises(InvalidPageToken):
        PageTokens(b"x" * 32).decode(
            token, PageTokens(b"x" * 32).fingerprint("tenant", "List", b"request")
        )


def test_every_reason_the_server_sends_is_in_error_reason_proto() -> None:
    """build_status refuses a reason the proto does not list (clients switch on those), and
    the reasons of the access layer and the storage guards are listed."""
    import pytest
    from google.rpc import code_pb2

    from aether_memory.transport.errors import REASONS, build_status

    for reason in ("API_KEY_MISSING", "API_KEY_INVALID", "ROLE_FORBIDDEN", "TENANT_FORBIDDEN"):
        assert reason in REASONS
    assert {"RATE_LIMITED", "TOO_MANY_STREAMS", "STORAGE_FULL", "DEADLINE_EXCEEDED"} <= REASONS
    with pytest.raises(ValueError, match="NOT_A_REASON"):
        build_status(code_pb2.INTERNAL, "x", "NOT_A_REASON")
