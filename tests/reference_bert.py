"""An independent BERT and MPNet sentence encoder in plain numpy, used only to check the
exported packs.

Written from the equations of Devlin et al. (2018), Vaswani et al. (2017), Song et al. (2020,
MPNet: relative position buckets as in Raffel et al. 2020) and the sentence-transformers pooling
definition; it shares no code with `aether_embeddings`. Everything runs in float64 so the
reference itself adds no rounding worth measuring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

_erf = np.frompyfunc(math.erf, 1, 1)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class ReferenceEncoder:
    def __init__(self, snapshot: Path, *, pooling: str, max_tokens: int) -> None:
        self.config = json.loads((snapshot / "config.json").read_text())
        self.w = {
            k: v.astype(np.float64)
            for k, v in load_file(str(snapshot / "model.safetensors")).items()
            if v.dtype != np.int64
        }
        self.tokenizer = Tokenizer.from_file(str(snapshot / "tokenizer.json"))
        self.tokenizer.no_padding()
        # Longer texts: windows of max_tokens sharing 32 tokens, as the packs' runtime cuts them.
        self.tokenizer.enable_truncation(max_length=max_tokens, stride=min(32, max_tokens // 4))
        self.pooling = pooling

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def encode_one(self, text: str) -> np.ndarray:
        """A text's vector; one longer than max_tokens is the token-weighted mean of its
        windows' vectors, normalized (the service's contract for long content)."""
        encoding = self.tokenizer.encode(text)
        windows = [encoding.ids] + [o.ids for o in encoding.overflowing]
        vectors = [self.encode_ids(np.array(ids)) for ids in windows]
        if len(vectors) == 1:
            return vectors[0]
        mean = sum(len(ids) * v for ids, v in zip(windows, vectors, strict=True))
        return mean / np.linalg.norm(mean)

    def _relative_bias(self, length: int) -> np.ndarray:
        """MPNet's [heads, length, length] attention bias: each (i, j) distance j - i falls in
        a bucket (sign, then exact below 8, then log-spaced to 128) with a learned value per
        head."""
        buckets = self.config["relative_attention_num_buckets"] // 2
        exact = buckets // 2
        table = self.w["encoder.relative_attention_bias.weight"]
        out = np.zeros((table.shape[1], length, length))
        for i in range(length):
            for j in range(length):
                n = i - j
                bucket = buckets if n < 0 else 0
                n = abs(n)
                if n < exact:
                    bucket += n
                else:
                    far = exact + int(
                        math.log(n / exact) / math.log(128 / exact) * (buckets - exact)
                    )
                    bucket += min(far, buckets - 1)
                out[:, i, j] = table[bucket]
        return out

    def encode_ids(self, ids: np.ndarray) -> np.ndarray:
        c, w = self.config, self.w
        h, n_heads = c["hidden_size"], c["num_attention_heads"]
        d = h // n_heads
        eps = c["layer_norm_eps"]
        mpnet = c["model_type"] == "mpnet"
        if mpnet:  # positions after the padding index, no token types
            start = c["pad_token_id"] + 1
            x = (
                w["embeddings.word_embeddings.weight"][ids]
                + w["embeddings.position_embeddings.weight"][start : start + len(ids)]
            )
            bias = self._relative_bias(len(ids))
            names = ("attention.attn.q", "attention.attn.k", "attention.attn.v")
            out_name, norm_name = "attention.attn.o", "attention.LayerNorm"
        else:
            x = (
                w["embeddings.word_embeddings.weight"][ids]
                + w["embeddings.position_embeddings.weight"][: len(ids)]
                + w["embeddings.token_type_embeddings.weight"][0]
            )
            bias = np.zeros((n_heads, len(ids), len(ids)))
            names = ("attention.self.query", "attention.self.key", "attention.self.value")
            out_name, norm_name = "attention.output.dense", "attention.output.LayerNorm"
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            heads = []
            q, k, v = (self._linear(x, f"{p}.{name}") for name in names)
            for head in range(n_heads):
                s = slice(head * d, (head + 1) * d)
                scores = q[:, s] @ k[:, s].T / math.sqrt(d) + bias[head]
                heads.append(_softmax(scores) @ v[:, s])
            attn = self._linear(np.concatenate(heads, axis=1), f"{p}.{out_name}")
            x = _layer_norm(attn + x, w[f"{p}.{norm_name}.weight"], w[f"{p}.{norm_name}.bias"], eps)
            ffn = self._linear(
                _gelu(self._linear(x, f"{p}.intermediate.dense")), f"{p}.output.dense"
            )
            x = _layer_norm(
                ffn + x, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"], eps
            )
        pooled = x[0] if self.pooling == "cls" else x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)
