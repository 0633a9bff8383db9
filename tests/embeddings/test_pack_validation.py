"""A broken pack fails when it is opened, with a message naming the file, never at first use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aether_embeddings.pack import ModelPack, PackError, file_sha256
from aether_embeddings.runtime import Embedder


@pytest.fixture
def pack_copy(fp32_pack: ModelPack, tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    shutil.copytree(fp32_pack.root, target)
    return target


def _rewrite_manifest(root: Path, **changes: object) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("name", ["manifest.json", "model.onnx", "tokenizer.json"])
def test_missing_file_is_named(pack_copy: Path, name: str) -> None:
    (pack_copy / name).unlink()
    with pytest.raises(PackError, match=name.replace(".", r"\.")):
        ModelPack.open(pack_copy)


def test_corrupt_model_fails_checksum_naming_the_file(pack_copy: Path) -> None:
    with (pack_copy / "model.onnx").open("r+b") as stream:
        stream.seek(4096)
        stream.write(b"\x00" * 64)
    with pytest.raises(PackError, match=r"model\.onnx: sha256"):
        ModelPack.open(pack_copy)


def test_unloadable_graph_is_reported_at_load(pack_copy: Path) -> None:
    (pack_copy / "model.onnx").write_bytes(b"not an onnx graph")
    _rewrite_manifest(pack_copy, model_sha256=file_sha256(pack_copy / "model.onnx"))
    with pytest.raises(PackError, match=r"model\.onnx: onnxruntime cannot load it"):
        Embedder.from_path(pack_copy)


def test_manifest_dimension_that_differs_from_graph_is_rejected(pack_copy: Path) -> None:
    _rewrite_manifest(pack_copy, dimension=768)
    with pytest.raises(PackError, match=r"model\.onnx: output 'embedding' has shape .* 768"):
        Embedder.from_path(pack_copy)


def test_tokenizer_of_another_vocabulary_is_rejected(pack_copy: Path) -> None:
    path = pack_copy / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    for token in list(vocab)[-100:]:
        del vocab[token]
    path.write_text(json.dumps(data))
    _rewrite_manifest(pack_copy, tokenizer_sha256=file_sha256(path))
    with pytest.raises(PackError, match=r"tokenizer\.json: vocabulary of 30422 tokens"):
        Embedder.from_path(pack_copy)


def test_malformed_manifest_is_named(pack_copy: Path) -> None:
    (pack_copy / "manifest.json").write_text("{not json")
    with pytest.raises(PackError, match=r"manifest\.json: not valid JSON"):
        ModelPack.open(pack_copy)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="does not exist"):
        ModelPack.open(tmp_path / "nowhere")
