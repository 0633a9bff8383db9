"""Sentence-level facts the default model is known for: paraphrases close, unrelated far."""

from __future__ import annotations

import numpy as np

from aether_embeddings.runtime import Embedder

PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("The weather is lovely today.", "It is a beautiful sunny day."),
    ("How do I reset my password?", "I forgot my password and need to change it."),
    (
        "The stock market fell sharply on Monday.",
        "Shares dropped steeply at the start of the week.",
    ),
]
UNRELATED = [
    ("A man is playing a guitar.", "The recipe needs two cups of flour."),
    ("The weather is lovely today.", "Compile the kernel with debugging symbols."),
    ("How do I reset my password?", "Penguins live in the southern hemisphere."),
    ("The stock market fell sharply on Monday.", "My cat likes to sleep on the sofa."),
]


def _similarities(embedder: Embedder, pairs: list[tuple[str, str]]) -> np.ndarray:
    left = embedder.embed([a for a, _ in pairs])
    right = embedder.embed([b for _, b in pairs])
    return np.sum(left * right, axis=1)


def test_paraphrases_score_high_and_unrelated_pairs_low(fp32_embedder: Embedder) -> None:
    close = _similarities(fp32_embedder, PARAPHRASES)
    far = _similarities(fp32_embedder, UNRELATED)
    assert close.min() > 0.5, close
    assert far.max() < 0.2, far
    assert close.min() > far.max() + 0.3


def test_each_paraphrase_is_its_own_nearest_neighbour(fp32_embedder: Embedder) -> None:
    left = fp32_embedder.embed([a for a, _ in PARAPHRASES])
    right = fp32_embedder.embed([b for _, b in PARAPHRASES])
    nearest = np.argmax(left @ right.T, axis=1)
    assert nearest.tolist() == list(range(len(PARAPHRASES)))
