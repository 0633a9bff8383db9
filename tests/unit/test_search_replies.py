"""FT.SEARCH replies read by the stores themselves, in both protocols Redis answers with."""

from __future__ import annotations

import redis.exceptions
from redisvl.exceptions import RedisSearchError

from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.keys import keys_of, tenant_tag
from aether_memory.stores.redis.search import documents, missing_index, total, vector_attrs


def test_resp3_maps_become_documents_and_fieldless_ones_are_left_out() -> None:
    reply = {
        b"total_results": 3,
        b"results": [
            {b"id": b"aether:mem:{t}:a", b"extra_attributes": {b"memory_id": b"a"}, b"score": 2.5},
            {b"id": b"aether:mem:{t}:gone", b"extra_attributes": {}, b"score": 1.0},
            {b"id": b"aether:mem:{t}:b", b"extra_attributes": {b"memory_id": b"b"}, b"score": 0.5},
        ],
    }
    docs = documents(reply, scores=True)
    assert [(d["memory_id"], d["score"]) for d in docs] == [("a", "2.5"), ("b", "0.5")]
    assert docs[0]["id"] == "aether:mem:{t}:a"
    assert total(reply) == 3


def test_resp2_arrays_become_documents_with_and_without_scores() -> None:
    plain = [2, b"k1", [b"memory_id", b"a", b"vector_distance", b"0.25"], b"k2", []]
    assert documents(plain, scores=False) == [
        {"memory_id": "a", "vector_distance": "0.25", "id": "k1"}
    ]
    scored = [2, b"k1", b"3.5", [b"memory_id", b"a"], b"k2", b"1.5", [b"memory_id", b"b"]]
    assert [d["score"] for d in documents(scored, scores=True)] == ["3.5", "1.5"]
    assert total(plain) == 2


def test_only_a_missing_index_reads_as_one() -> None:
    assert missing_index(redis.exceptions.ResponseError("aether-memories:{t}: no such index"))
    assert missing_index(redis.exceptions.ResponseError("Unknown index name"))
    assert not missing_index(redis.exceptions.ResponseError("Syntax error at offset 3"))
    assert not missing_index(redis.exceptions.ConnectionError("no such index"))
    # redisvl wraps the reply of FT.INFO on a missing index in its own error
    assert missing_index(RedisSearchError("Error while fetching index info: Unknown index name"))
    assert not missing_index(RedisSearchError("Error while fetching index info: timeout"))


def test_only_a_valid_tenant_tag_names_a_tenant() -> None:
    keys = keys_of(Tenant("acme-1"))
    assert tenant_tag(keys.memory("m1")) == Tenant("acme-1")
    assert tenant_tag("aether:meta:aether-memories") is None  # the deployment's own key
    assert tenant_tag("aether:x:{not a tenant!}") is None
    assert tenant_tag("aether:x:}{") is None


def test_tenant_indexes_hold_exact_vectors_in_small_blocks() -> None:
    flat = vector_attrs(384, "float16", flat=True, hnsw={"m": 16})
    assert (flat["algorithm"], flat["block_size"], flat["dims"]) == ("flat", 64, 384)
    assert "m" not in flat
    hnsw = vector_attrs(384, "float32", flat=False, hnsw={"m": 16})
    assert (hnsw["algorithm"], hnsw["m"], hnsw["distance_metric"]) == ("hnsw", 16, "cosine")
