"""Does a richer model class re-rank better than the logistic one? Leave one conversation out.

The service's re-ranker is a logistic model over 13 numbers per candidate (domain/rerank.py).
This bench asks whether the model class, rather than the features, limits recall: it reads the
candidates and their features through the service's own retrieval (`bench.locomo.collect`, at
each candidate depth the protocol chooses from), then, offline, fits on two conversations and
ranks the third's candidates, for:

- `logistic`: the service's model (L2, C=1, standardized; the same fit as `bench.locomo`);
- `logistic + pairs`: the same with every pairwise product of the standardized features (C=0.1);
- `boosted trees`: scikit-learn's HistGradientBoostingClassifier (200 trees of at most 15
  leaves, at least 50 rows a leaf, L2 1.0), learning rates 0.1 and 0.05.

recall@10 here ranks the candidates by the model alone (the service then also re-scores by its
recency and importance weights, which by default change little: the logistic row lands within
0.01 of `bench.locomo`'s leave-one-out figure). Needs the bench extra.

    python -m bench.rerank_models      # writes bench/results/rerank-models.json and .md
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.locomo import (
    CATEGORIES,
    DEPTHS,
    collect,
    evidence_of,
    interval,
    read_conversations,
)
from bench.output import publish

Rows = list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int, int]]
Scorer = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def _standardizer(x: npt.NDArray[np.float64]) -> Callable[[Any], npt.NDArray[np.float64]]:
    mean, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    scale[scale == 0] = 1.0

    def standardize(rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = (rows - mean) / scale
        return np.where(np.isnan(z), 0.0, z)  # unknown is the mean, as the service scores it

    return standardize


def _pairs(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n = z.shape[1]
    products = [z[:, i : i + 1] * z[:, j : j + 1] for i in range(n) for j in range(i + 1, n)]
    return np.hstack([z, *products])


def fit(method: str, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> Scorer:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    standardize = _standardizer(x)
    if method == "logistic":
        linear = LogisticRegression(C=1.0, max_iter=3000).fit(standardize(x), y)
        return lambda rows: linear.decision_function(standardize(rows))
    if method == "logistic + pairs":
        paired = LogisticRegression(C=0.1, max_iter=5000).fit(_pairs(standardize(x)), y)
        return lambda rows: paired.decision_function(_pairs(standardize(rows)))
    rate = float(method.rsplit(" ", 1)[1])
    trees = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=rate,
        max_leaf_nodes=15,
        min_samples_leaf=50,
        l2_regularization=1.0,
        random_state=0,
    ).fit(x, y)
    return lambda rows: trees.predict_proba(rows)[:, 1]


METHODS = ("logistic", "logistic + pairs", "boosted trees, rate 0.1", "boosted trees, rate 0.05")


def leave_one_out(data: dict[str, Rows], method: str) -> list[tuple[float, int]]:
    """(recall@10, category) of every held-out question."""
    out = []
    for held_out in sorted(data):
        training = [r for name in sorted(data) if name != held_out for r in data[name]]
        score = fit(
            method,
            np.vstack([x for x, _, _, _ in training]),
            np.concatenate([y for _, y, _, _ in training]),
        )
        for x, y, evidence, category in data[held_out]:
            top = np.argsort(-score(x), kind="stable")[:10]
            out.append((min(1.0, float(y[top].sum()) / evidence), category))
    return out


async def gather() -> dict[int, dict[str, Rows]]:
    conversations = read_conversations()
    by_depth: dict[int, dict[str, Rows]] = {}
    for depth in DEPTHS:
        rows = await collect(conversations, "int8", depth)
        by_depth[depth] = {
            c["name"]: [
                (x, y, len(evidence_of(q)), q["category"])
                for (x, y), q in zip(rows[c["name"]], c["questions"], strict=True)
            ]
            for c in conversations
        }
    return by_depth


def main() -> None:
    result: dict[str, Any] = {"depths": {}}
    lines = [
        "# Re-ranker model classes, leave one conversation out",
        "",
        "LoCoMo dev (3 conversations, 383 questions), plain client, int8 MiniLM; candidates and "
        "features read through the service's retrieval at each depth, models fitted on two "
        "conversations and scored on the third, every held-out question pooled. recall@10 with "
        "its 95% bootstrap interval. Produced by `python -m bench.rerank_models`.",
        "",
        "| depth | model | recall@10 | " + " | ".join(CATEGORIES.values()) + " |",
        "|---|---|---|" + "---|" * len(CATEGORIES),
    ]
    for depth, data in asyncio.run(gather()).items():
        result["depths"][depth] = {}
        for method in METHODS:
            scored = leave_one_out(data, method)
            recalls = [r for r, _ in scored]
            by_category = {
                name: float(np.mean([r for r, c in scored if c == number]))
                for number, name in CATEGORIES.items()
            }
            low, high = interval(recalls)
            result["depths"][depth][method] = {
                "recall@10": float(np.mean(recalls)),
                "interval": [low, high],
                "by_category": by_category,
            }
            lines.append(
                f"| {depth} | {method} | {np.mean(recalls):.3f} ({low:.2f}-{high:.2f}) | "
                + " | ".join(f"{v:.3f}" for v in by_category.values())
                + " |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    publish("rerank-models", result, text)


if __name__ == "__main__":
    main()
