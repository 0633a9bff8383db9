"""The operator's commands: `status` against the running test service, `index-layout` on a store
of its own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from aether_memory.app import Running, serve
from aether_memory.domain.errors import StartupError
from aether_memory.settings import Settings

from .conftest import Client, new_client
from .test_episode_service import episode, record
from .test_memory_service import search, store


async def test_status_shows_health_counts_backlogs_and_throughput(
    service: Running, client: Client
) -> None:
    await store(client, "A memory the status view counts.")
    await record(client, [episode(f"st{i}") for i in range(5)])
    run = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "aether_memory", "status", "--target", service.address],
        env={**os.environ, "AETHER_REDIS_URL": service.redis_url},
        capture_output=True,
        text=True,
        check=True,
    )
    status = json.loads(run.stdout)
    assert status["health"] == "SERVING"
    # The test service runs without an archive: its archiver is not listed.
    assert status["workers"] == {
        "maintenance": "SERVING",
        "health": "SERVING",
        "access-recorder": "SERVING",
        "episode-indexer": "SERVING",
    }
    assert status["memories_by_tier"]["long_term"] >= 1
    assert status["last_minute"]["memories_stored"] >= 1
    assert status["last_minute"]["episodes_recorded"] >= 5
    assert status["archive_outbox"] == {"entries": 0, "oldest_age_s": 0.0}  # no archive here
    assert status["episode_index_lag"] >= 0


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    return subprocess.run(
        [sys.executable, "-m", "aether_memory", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def refusals(tmp_path: Path) -> None:
    stale = tmp_path / "data"
    stale.mkdir()
    (stale / "redis.url").write_text("redis://127.0.0.1:9/0\n")  # left by a server that died
    for args in (("status",), ("keys", "list", "--tenant", "t"), ("reembed", "--drop-source")):
        for data_dir in (stale, tmp_path / "never-used"):
            run = cli(*args, AETHER_DATA_DIR=str(data_dir))
            assert run.returncode != 0
            assert "Traceback" not in run.stderr, run.stderr
            assert f"no server runs on {data_dir.resolve()}" in run.stderr
        down = cli(*args, AETHER_REDIS_URL="redis://127.0.0.1:9/0")
        assert down.returncode != 0 and "Traceback" not in down.stderr
        assert "Redis at redis://127.0.0.1:9/0 does not answer" in down.stderr


async def test_status_and_keys_say_in_one_line_when_no_server_runs(
    service: Running, tmp_path: Path
) -> None:
    await asyncio.to_thread(refusals, tmp_path)
    listed = await asyncio.to_thread(  # and with a Redis that answers, they work
        cli, "keys", "list", "--tenant", "t", AETHER_REDIS_URL=service.redis_url
    )
    assert listed.returncode == 0, listed.stderr


def test_the_health_command_loads_no_server_module() -> None:
    """The image's HEALTHCHECK has 3 s: `health` must not import the server, the model
    exporter or onnx (1.4-1.9 s of imports before, under load)."""
    probe = (
        "import sys\n"
        "from aether_memory import cli\n"
        "code = cli.main(['health', '--target', '127.0.0.1:9', '--timeout', '0.5'])\n"
        "heavy = [m for m in ('aether_memory.app', 'aether_embeddings', 'onnx', 'onnxruntime',"
        " 'redis', 'pymongo', 'aether_memory.settings') if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert run.stdout.strip() == "1 []", run.stdout + run.stderr


async def test_search_with_a_mistyped_agent_says_so_and_exits_1(
    service: Running, client: Client
) -> None:
    await store(client, "The CLI finds this memory.", agent="cli-agent")
    where = ("--target", service.address, "--tenant", client.tenant)
    found = await asyncio.to_thread(cli, "search", *where, "--agent", "cli-agent", "finds memory")
    assert found.returncode == 0 and json.loads(found.stdout)["results"], found.stderr
    typo = await asyncio.to_thread(cli, "search", *where, "--agent", "cli-agnet", "finds memory")
    assert typo.returncode == 1
    assert json.loads(typo.stdout) == {"results": [], "nextPageToken": ""}
    assert "no memories of agent 'cli-agnet'" in typo.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("aether-memory ")


async def test_index_layout_moves_an_embedded_store_to_tenant_indexes_while_it_is_stopped(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"

    def settings(**layout: str) -> Settings:
        return Settings(port=0, data_dir=data_dir, redis_url=None, grace_s=1.0, **layout)  # type: ignore[arg-type]

    async with serve(settings()) as running, grpc.aio.insecure_channel(running.address) as ch:
        tenants = [new_client(ch, f"cli-{i}") for i in range(2)]
        for c in tenants:
            await store(c, f"{c.tenant} keeps its bike in the shed.")
        held = await asyncio.to_thread(cli, "index-layout", "tenant", AETHER_DATA_DIR=str(data_dir))
        assert held.returncode != 0 and "stop the service first" in held.stderr

    moved = await asyncio.to_thread(cli, "index-layout", "tenant", AETHER_DATA_DIR=str(data_dir))
    assert moved.returncode == 0, moved.stderr
    assert "into 2 tenants' own indexes" in moved.stdout
    with pytest.raises(StartupError, match="one index per tenant"):
        async with serve(settings()):
            pass
    async with (
        serve(settings(index_layout="tenant")) as running,
        grpc.aio.insecure_channel(running.address) as ch,
    ):
        for tenant in ("cli-0", "cli-1"):
            hits = await search(new_client(ch, tenant), "where is the bike")
            assert hits == [f"{tenant} keeps its bike in the shed."]
