"""Three example agents in three languages (Python, TypeScript, Go), each through its own
generated client, against the live service at once: each stores and searches memories, restores
a checkpoint, records a burst of episodes over the bidirectional stream, and must see the other
two agents' bursts arrive on its live subscription. `make test` builds the TypeScript and Go
clients first (`make clients`)."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

from aether_memory.app import Running

ROOT = Path(__file__).resolve().parents[2]
BURST = 40


async def test_three_languages_store_search_stream_and_see_each_other_live(
    service: Running,
) -> None:
    tenant = f"poly-{uuid.uuid4().hex[:8]}"
    since = str(int(time.time() * 1000))
    agents = {
        "py-agent": [sys.executable, str(ROOT / "clients/python/examples/agent.py")],
        "ts-agent": ["node", str(ROOT / "clients/typescript/dist/examples/agent.js")],
        "go-agent": [str(ROOT / "clients/go/bin/agent")],
    }
    processes = {}
    for name, command in agents.items():
        peers = ",".join(a for a in agents if a != name)
        processes[name] = await asyncio.create_subprocess_exec(
            *command,
            *("--target", service.address, "--tenant", tenant, "--agent", name),
            *("--peers", peers, "--burst", str(BURST), "--since-ms", since),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    outputs = {}
    for name, process in processes.items():
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        outputs[name] = (process.returncode, out.decode())
    for name, (code, out) in outputs.items():
        assert code == 0, f"{name} failed:\n{out}"
        assert f"recorded {BURST} episodes" in out, out
        for peer in (a for a in agents if a != name):
            assert peer in out.split("saw", 1)[1], f"{name} did not see {peer}: {out}"
