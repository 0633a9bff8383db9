"""Known BERT and MPNet sentence encoders: how each one pools, normalizes and prefixes queries."""

from __future__ import annotations

from dataclasses import dataclass

from .pack import Pooling


@dataclass(frozen=True)
class EncoderPreset:
    """How a sentence encoder turns token states into one vector, per its model card."""

    pooling: Pooling
    normalize: bool
    max_tokens: int
    query_prefix: str = ""
    document_prefix: str = ""


_BGE_QUERY = "Represent this sentence for searching relevant passages: "

PRESETS: dict[str, EncoderPreset] = {
    "all-minilm-l6-v2": EncoderPreset(pooling="mean", normalize=True, max_tokens=256),
    "all-mpnet-base-v2": EncoderPreset(pooling="mean", normalize=True, max_tokens=384),
    "bge-small-en-v1.5": EncoderPreset("cls", True, 512, query_prefix=_BGE_QUERY),
    "bge-base-en-v1.5": EncoderPreset("cls", True, 512, query_prefix=_BGE_QUERY),
    "bge-large-en-v1.5": EncoderPreset("cls", True, 512, query_prefix=_BGE_QUERY),
    "e5-small-v2": EncoderPreset("mean", True, 512, "query: ", "passage: "),
    "e5-base-v2": EncoderPreset("mean", True, 512, "query: ", "passage: "),
    "e5-large-v2": EncoderPreset("mean", True, 512, "query: ", "passage: "),
}
