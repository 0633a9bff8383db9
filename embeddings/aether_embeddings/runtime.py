"""The synchronous embedder: a validated pack on one onnxruntime session and a tokenizer.

Empty or whitespace-only text is rejected with `EmptyTextError` rather than embedded: a BERT
encoder maps it to the vector of "[CLS] [SEP]", which matches everything a little and nothing well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from .pack import ModelPack, PackError

Mode = Literal["document", "query"]
Vectors = npt.NDArray[np.float32]


WINDOW_OVERLAP = 32  # tokens shared by consecutive windows of a text longer than the model's


class EmptyTextError(ValueError):
    """A text to embed is empty or whitespace only; `index` says which one."""

    def __init__(self, index: int) -> None:
        super().__init__(f"text {index} is empty or whitespace only")
        self.index = index


def _session_options(threads: int | None, spin: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads busy-wait for the next op by default: a few percent faster when the
    # model has the cores to itself, CPU taken from everything else when it shares them.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


class Embedder:
    """Embeds texts with a model pack. Thread-compatible: one call at a time per instance."""

    def __init__(
        self,
        pack: ModelPack,
        *,
        threads: int | None = None,
        spin: bool = True,
        chunk_size: int = 8,
    ) -> None:
        """`spin=False` stops idle inference threads busy-waiting: use it in a server whose
        event loop and Redis share the cores with the model."""
        self.pack = pack
        manifest = pack.manifest
        try:
            self._session = ort.InferenceSession(
                str(pack.model_path),
                _session_options(threads, spin),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad graphs
            raise PackError(f"{pack.model_path}: onnxruntime cannot load it ({exc})") from exc
        inputs = tuple(i.name for i in self._session.get_inputs())
        if inputs != manifest.input_names:
            raise PackError(
                f"{pack.model_path}: graph inputs {inputs} differ from the manifest's "
                f"{manifest.input_names}"
            )
        outputs = {o.name: o.shape for o in self._session.get_outputs()}
        shape = outputs.get(manifest.output_name)
        if shape is None or shape[-1] != manifest.dimension:
            raise PackError(
                f"{pack.model_path}: output {manifest.output_name!r} has shape {shape}, the "
                f"manifest says dimension {manifest.dimension}"
            )
        try:
            tokenizer = Tokenizer.from_file(str(pack.tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise PackError(f"{pack.tokenizer_path}: cannot be read ({exc})") from exc
        if tokenizer.get_vocab_size() != manifest.vocab_size:
            raise PackError(
                f"{pack.tokenizer_path}: vocabulary of {tokenizer.get_vocab_size()} tokens does "
                f"not match the model's {manifest.vocab_size}"
            )
        # The shipped tokenizer.json may carry its own fixed padding/truncation (MiniLM's pads
        # every text to 128); the manifest's limit and pad-to-longest replace them.
        # A longer text is cut into overlapping windows of the model's length (`windows`).
        tokenizer.enable_truncation(
            max_length=manifest.max_tokens, stride=min(WINDOW_OVERLAP, manifest.max_tokens // 4)
        )
        shipped = tokenizer.padding  # its pad token (MPNet's is <pad> = 1), read before it goes
        tokenizer.no_padding()
        self._pad_id = shipped["pad_id"] if shipped else (tokenizer.token_to_id("[PAD]") or 0)
        self._tokenizer = tokenizer
        self.chunk_size = chunk_size

    @classmethod
    def from_path(cls, path: Path | str, *, threads: int | None = None) -> Embedder:
        return cls(ModelPack.open(path), threads=threads)

    @property
    def dimension(self) -> int:
        return self.pack.manifest.dimension

    @property
    def model_name(self) -> str:
        return self.pack.manifest.model_name

    def prefixed(self, texts: Sequence[str], mode: Mode) -> list[str]:
        """The texts as the model expects them for `mode`, validated."""
        manifest = self.pack.manifest
        prefix = manifest.query_prefix if mode == "query" else manifest.document_prefix
        for index, text in enumerate(texts):
            if not text.strip():
                raise EmptyTextError(index)
        return [prefix + text for text in texts] if prefix else list(texts)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated at the manifest's max tokens, unpadded."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def windows(self, texts: Sequence[str]) -> list[list[list[int]]]:
        """Per text, its token ids in windows of at most the manifest's max tokens, each with the
        model's special tokens, consecutive ones sharing WINDOW_OVERLAP tokens: one window for
        any text the model takes whole."""
        return [
            [e.ids] + [o.ids for o in e.overflowing]
            for e in self._tokenizer.encode_batch(list(texts))
        ]

    def pad(
        self, token_ids: Sequence[Sequence[int]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Token ids and attention mask, padded to the longest sequence."""
        width = max(len(t) for t in token_ids)
        ids = np.full((len(token_ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def encode(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Token ids and attention mask, padded to the longest text and truncated at max tokens."""
        return self.pad(self.tokenize(texts))

    def run_texts(self, texts: Sequence[str]) -> Vectors:
        """Vectors for prepared texts, run in chunks of similar length.

        Padding every text to the longest of a batch wastes most of the work on real text: on
        LoCoMo turns (mean 33 tokens) raw batches of 32 ran at 85 texts/s against 190 at batch 1.
        Sorting by length and cutting chunks of `chunk_size` keeps padding small; the output is in
        input order.

        A text longer than the model's window is embedded whole: each of its windows is run, and
        its vector is their mean weighted by their token counts (normalized again when the pack
        normalizes), so words past the first window count too (diluted by the text's length).
        """
        per_text = self.windows(texts)
        flat = [window for windows in per_text for window in windows]
        order = sorted(range(len(flat)), key=lambda i: len(flat[i]))
        vectors = np.empty((len(flat), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            vectors[chunk] = self.run(*self.pad([flat[i] for i in chunk]))
        if len(flat) == len(per_text):
            return vectors
        pooled = np.empty((len(per_text), self.dimension), dtype=np.float32)
        first = 0
        for row, windows in enumerate(per_text):
            part = vectors[first : first + len(windows)]
            first += len(windows)
            weights = np.array([len(w) for w in windows], dtype=np.float64)
            mean = (part.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
            if self.pack.manifest.normalize and len(windows) > 1:
                mean /= max(float(np.linalg.norm(mean)), 1e-12)
            pooled[row] = mean
        return pooled

    def run(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        """One raw forward pass over already-tokenized input."""
        (vectors,) = self._session.run(
            [self.pack.manifest.output_name], {"input_ids": ids, "attention_mask": mask}
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str], mode: Mode = "document") -> Vectors:
        """Vectors of shape [len(texts), dimension]; L2-normalized when the manifest says so."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.run_texts(self.prefixed(texts, mode))

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts, "document")

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        vectors: npt.NDArray[np.float32] = self.embed([text], "query")[0]
        return vectors
