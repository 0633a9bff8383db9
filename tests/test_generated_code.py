"""The checked-in generated code is exactly what the pinned generators make from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "generator",
    [
        "gen_protos.py",  # the Python stubs
        "gen_rpc_kinds.py",  # each client's retry list
        "gen_tools.py",  # the tool catalog and its MCP, OpenAI and Anthropic forms
    ],
)
def test_generated_code_is_in_sync_with_the_protos(generator: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / generator), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"stale; run scripts/generate.sh\n{result.stderr}"


def test_roles_and_retries_follow_the_idempotency_levels() -> None:
    """One declaration in proto/: NO_SIDE_EFFECTS is what a read key may call and what the
    clients retry (the unary ones); everything else needs the write role and is not retried."""
    from aether_memory.stores.redis.api_keys import Role
    from aether_memory.transport.access import READS, required_role
    from aether_memory_client.rpcs import RETRYABLE

    memory, episodes = "/aether.memory.v1.MemoryService/", "/aether.memory.v1.EpisodeService/"
    assert required_role(episodes + "SubscribeEpisodes") is Role.READ
    assert required_role(memory + "DescribeSelf") is Role.READ
    for write in ("AppendWorkingMemory", "CreateCheckpoint", "StoreMemory", "RestoreCheckpoint"):
        assert required_role(memory + write) is Role.WRITE
    retried = {f"/{service}/{method}" for service, method in RETRYABLE}
    assert retried == READS - {episodes + "SubscribeEpisodes"}  # streams are not retried
