"""The exported packs compute what an independent numpy BERT computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aether_embeddings.pack import ModelPack
from aether_embeddings.runtime import Embedder
from tests.reference_bert import ReferenceEncoder

TEXTS = [
    "The cat sat on the mat.",
    "x",
    "?",
    "ok",
    "I went hiking with my dog last weekend in the mountains near Boulder.",
    "Émile a mangé une crêpe au jambon à Paris, près de la tour Eiffel.",
    "日本語のテキストも埋め込めるはずです。",
    "Привет, как дела? Сегодня хорошая погода.",
    "مرحبا بالعالم",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT id, name FROM users WHERE email LIKE '%@example.com' ORDER BY id DESC;",
    '@tag:{redis} | -negated *wildcard* "quoted" (parens) ~tilde',
    "🙂🚀🔥 emoji only? 🎉",
    "   leading and trailing whitespace   ",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THE UNCASED TOKENIZER",
    "Caroline went to the LGBTQ support group on 7 May 2023 and felt inspired.",
    "The mitochondria is the powerhouse of the cell.",
    "numbers: 3.14159 2.71828 1.41421 6.02214076e23",
    "a\tb\nc\r\nd",
    "https://example.com/path?query=value&other=1#fragment",
    # Longer than 256 tokens: embedded whole, in windows, exactly as the reference does.
    " ".join(f"Sentence number {i} talks about a different topic entirely." for i in range(80)),
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
]


@pytest.fixture(scope="module")
def reference(snapshot: Path) -> np.ndarray:
    encoder = ReferenceEncoder(snapshot, pooling="mean", max_tokens=256)
    return np.stack([encoder.encode_one(text) for text in TEXTS])


def _cosines(pack: ModelPack, reference: np.ndarray) -> np.ndarray:
    # One padded batch: also proves padding and masking do not leak into the vectors.
    vectors = Embedder(pack).embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    return np.sum(vectors.astype(np.float64) * reference, axis=1)


def test_fp32_pack_matches_independent_reference(
    fp32_pack: ModelPack, reference: np.ndarray
) -> None:
    cosines = _cosines(fp32_pack, reference)
    assert cosines.min() >= 0.9999, dict(zip(TEXTS, cosines.round(6), strict=True))


def test_int8_pack_matches_independent_reference(
    int8_pack: ModelPack, reference: np.ndarray
) -> None:
    cosines = _cosines(int8_pack, reference)
    assert cosines.min() >= 0.99, dict(zip(TEXTS, cosines.round(4), strict=True))


def test_text_past_the_model_window_counts(fp32_embedder: Embedder) -> None:
    """Content is embedded whole: what lies past the first 256 tokens moves the vector, toward
    what it is about (it used to be cut off, silently)."""
    long_text = TEXTS[20]
    ids, _ = fp32_embedder.encode([long_text])
    assert ids.shape[1] == 256  # the model's window: the rest is in further windows
    tail = " My sister adopted a grey kitten named Pepper; the kitten sleeps on the piano."
    head, whole = fp32_embedder.embed([long_text, long_text + tail])
    assert float(head @ whole) < 0.999
    query = fp32_embedder.embed_query("a kitten that sleeps on the piano")
    assert float(query @ whole) > float(query @ head) + 0.02


def test_vectors_are_unit_length(fp32_embedder: Embedder) -> None:
    norms = np.linalg.norm(fp32_embedder.embed(TEXTS[:5]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
