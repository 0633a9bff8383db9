"""Fixtures for the embedder tests: the bundled packs and the raw snapshot they came from."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aether_embeddings.bundled import _bundled_zip, ensure_default_pack
from aether_embeddings.pack import ModelPack
from aether_embeddings.runtime import Embedder


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("minilm-snapshot")
    with zipfile.ZipFile(_bundled_zip()) as archive:
        archive.extractall(root)
    yield root


@pytest.fixture(scope="session")
def fp32_pack() -> ModelPack:
    return ensure_default_pack("fp32")


@pytest.fixture(scope="session")
def int8_pack() -> ModelPack:
    return ensure_default_pack("int8")


@pytest.fixture(scope="session")
def fp32_embedder(fp32_pack: ModelPack) -> Embedder:
    return Embedder(fp32_pack)
