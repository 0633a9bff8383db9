"""The model pack: a directory with `model.onnx`, `tokenizer.json` and `manifest.json`.

A pack is validated completely when it is opened, so a missing, corrupt or mismatched file fails at
load time with a message that names the file, never at the first request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1

Pooling = Literal["cls", "mean"]


class PackError(Exception):
    """A model pack cannot be used; the message names the offending file."""


@dataclass(frozen=True)
class Manifest:
    """What a pack holds and how its graph must be fed and read."""

    model_name: str
    architecture: str
    pooling: Pooling
    normalize: bool
    max_tokens: int
    dimension: int
    vocab_size: int
    source_weights_sha256: str
    model_sha256: str
    tokenizer_sha256: str
    query_prefix: str = ""
    document_prefix: str = ""
    quantization: Literal["none", "int8-block128"] = "none"
    optimized: bool = False
    format_version: int = FORMAT_VERSION
    input_names: tuple[str, ...] = field(default=("input_ids", "attention_mask"))
    output_name: str = "embedding"

    @property
    def vector_space(self) -> str:
        """What this pack's vectors can be compared with: those of the same weights, pooled the
        same way. The variants of one model (fp32, int8) share it; any other model does not."""
        return f"{self.model_name}/{self.pooling}/{self.source_weights_sha256[:16]}"

    def to_json(self) -> str:
        data = asdict(self)
        data["input_names"] = list(self.input_names)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: Path) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PackError(f"{source}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise PackError(f"{source}: expected a JSON object")
        if data.get("format_version") != FORMAT_VERSION:
            raise PackError(
                f"{source}: format_version {data.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        try:
            data["input_names"] = tuple(data.get("input_names", ()))
            manifest = cls(**data)
        except TypeError as exc:
            raise PackError(f"{source}: {exc}") from exc
        if manifest.pooling not in ("cls", "mean"):
            raise PackError(f"{source}: pooling must be 'cls' or 'mean', not {manifest.pooling!r}")
        if manifest.dimension <= 0 or manifest.max_tokens <= 2:
            raise PackError(f"{source}: dimension and max_tokens must be positive")
        return manifest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPack:
    """A pack on disk whose files exist and match the manifest's checksums."""

    root: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.root / TOKENIZER_FILE

    @classmethod
    def open(cls, root: Path | str, *, verify_checksums: bool = True) -> ModelPack:
        root = Path(root)
        if not root.is_dir():
            raise PackError(f"{root}: model pack directory does not exist")
        manifest_path = root / MANIFEST_FILE
        for name in (MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE):
            if not (root / name).is_file():
                raise PackError(f"{root / name}: missing from the model pack")
        text = manifest_path.read_text(encoding="utf-8")
        manifest = Manifest.from_json(text, source=manifest_path)
        pack = cls(root=root, manifest=manifest)
        if verify_checksums:
            for path, expected in (
                (pack.model_path, manifest.model_sha256),
                (pack.tokenizer_path, manifest.tokenizer_sha256),
            ):
                actual = file_sha256(path)
                if actual != expected:
                    raise PackError(
                        f"{path}: sha256 {actual[:12]}… does not match the manifest's "
                        f"{expected[:12]}… (corrupt or replaced file)"
                    )
        return pack
