"""The operator's `status` view, against the running test service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from aether_memory.app import Running

from .conftest import Client
from .test_episode_service import episode, record
from .test_memory_service import store


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
    assert status["memories_by_tier"]["long_term"] >= 1
    assert status["last_minute"]["memories_stored"] >= 1
    assert status["last_minute"]["episodes_recorded"] >= 5
    assert status["archive_outbox"] == {"entries": 0, "oldest_age_s": 0.0}  # no archive here
    assert status["episode_index_lag"] >= 0
