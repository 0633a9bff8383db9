"""Exporter paths beyond the bundled default: CLS pooling with a query prefix (the bge recipe)
and onnxruntime's offline graph optimization, checked against the independent reference."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from aether_embeddings.export import export_pack
from aether_embeddings.pack import ModelPack
from aether_embeddings.presets import EncoderPreset
from aether_embeddings.runtime import Embedder
from tests.reference_bert import ReferenceEncoder

TEXTS = ["What is the capital of Portugal?", "x", "Ana works as a nurse in Lisbon, Portugal."]
PREFIX = "Represent this sentence for searching relevant passages: "


@pytest.fixture(scope="module")
def cls_pack(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelPack:
    preset = EncoderPreset(pooling="cls", normalize=True, max_tokens=128, query_prefix=PREFIX)
    return export_pack(
        snapshot, tmp_path_factory.mktemp("cls") / "pack", model_name="minilm-cls", preset=preset
    )


def test_cls_pooling_matches_the_reference(cls_pack: ModelPack, snapshot: Path) -> None:
    reference = ReferenceEncoder(snapshot, pooling="cls", max_tokens=128)
    vectors = Embedder(cls_pack).embed_documents(TEXTS)
    expected = np.stack([reference.encode_one(t) for t in TEXTS])
    assert np.sum(vectors * expected, axis=1).min() >= 0.9999
    assert cls_pack.manifest.pooling == "cls" and cls_pack.manifest.max_tokens == 128


def test_queries_get_the_instruction_prefix_and_documents_do_not(
    cls_pack: ModelPack, snapshot: Path
) -> None:
    reference = ReferenceEncoder(snapshot, pooling="cls", max_tokens=128)
    embedder = Embedder(cls_pack)
    query = embedder.embed_query(TEXTS[0])
    assert float(query @ reference.encode_one(PREFIX + TEXTS[0])) >= 0.9999
    assert float(query @ embedder.embed_documents([TEXTS[0]])[0]) < 0.999


def test_optimized_int8_pack_still_matches(
    snapshot: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aether_embeddings.presets import PRESETS

    caplog.set_level(logging.INFO)
    pack = export_pack(
        snapshot,
        tmp_path / "opt",
        model_name="all-minilm-l6-v2",
        preset=PRESETS["all-minilm-l6-v2"],
        variant="int8",
        optimize=True,
    )
    assert pack.manifest.optimized and pack.manifest.quantization == "int8-block128"
    # The quantizer's line per matrix (285 on a first `make serve`) stays out of the log.
    assert not [r for r in caplog.records if r.name.startswith("onnxruntime")]
    reference = ReferenceEncoder(snapshot, pooling="mean", max_tokens=256)
    vectors = Embedder(pack).embed_documents(TEXTS)
    expected = np.stack([reference.encode_one(t) for t in TEXTS])
    assert np.sum(vectors * expected, axis=1).min() >= 0.99
