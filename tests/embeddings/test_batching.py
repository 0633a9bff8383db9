"""The micro-batcher returns exactly what the embedder returns, coalescing concurrent callers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest

from aether_embeddings.batching import MicroBatcher
from aether_embeddings.pack import ModelPack
from aether_embeddings.runtime import Embedder, EmptyTextError

TEXTS = [f"memory number {i}: the user mentioned topic {i % 7}" for i in range(64)]


async def test_concurrent_callers_get_the_vectors_of_a_direct_call(fp32_embedder: Embedder) -> None:
    direct = fp32_embedder.embed(TEXTS)
    async with MicroBatcher(fp32_embedder, max_batch=16, cache_size=0) as batcher:
        results = await asyncio.gather(*(batcher.embed(t) for t in TEXTS))
        stats = batcher.stats
    np.testing.assert_allclose(np.stack(results), direct, atol=1e-5)
    assert stats.embedded == len(TEXTS)
    # 64 concurrent callers with batches of at most 16 need at least 4 and far fewer than 64 runs.
    assert 4 <= stats.batches < len(TEXTS) // 2


async def test_repeated_text_is_served_from_the_cache(fp32_embedder: Embedder) -> None:
    async with MicroBatcher(fp32_embedder) as batcher:
        first = await batcher.embed("the same text twice")
        second = await batcher.embed("the same text twice")
        assert batcher.stats.cache_hits == 1 and batcher.stats.embedded == 1
    assert first is second
    assert not first.flags.writeable


async def test_blank_text_is_rejected_before_queueing(fp32_embedder: Embedder) -> None:
    async with MicroBatcher(fp32_embedder) as batcher:
        with pytest.raises(EmptyTextError):
            await batcher.embed("  \n\t ")
        with pytest.raises(EmptyTextError) as info:
            await batcher.embed_many(["fine", ""])
        assert info.value.index == 1
        assert batcher.stats.embedded == 0


async def test_query_and_document_modes_are_cached_apart(fp32_embedder: Embedder) -> None:
    async with MicroBatcher(fp32_embedder) as batcher:
        await batcher.embed("what is my favourite colour", "query")
        await batcher.embed("what is my favourite colour", "document")
        assert batcher.stats.embedded == 2


def test_cli_embeds_stdin_lines_as_json_arrays(fp32_embedder: Embedder) -> None:
    lines = ["first line", "second line with more words"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aether_embeddings",
            "embed",
            "--pack",
            str(fp32_embedder.pack.root),
        ],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    vectors = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    np.testing.assert_allclose(np.array(vectors), fp32_embedder.embed(lines), atol=1e-6)


def test_cli_reports_an_empty_line_and_fails(fp32_embedder: Embedder) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aether_embeddings",
            "embed",
            "--pack",
            str(fp32_embedder.pack.root),
        ],
        input="ok\n\n",
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "line 2 is empty" in result.stderr


def test_embedder_without_spinning_threads_gives_the_same_vectors(
    fp32_pack: ModelPack, fp32_embedder: Embedder
) -> None:
    quiet = Embedder(fp32_pack, spin=False)
    options = quiet._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_allclose(quiet.embed(TEXTS[:8]), fp32_embedder.embed(TEXTS[:8]), atol=1e-6)
