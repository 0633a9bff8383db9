"""`aether-memory mcp` as an MCP client meets it: spawned over stdio by the official SDK's
client, its tools listed with the generated schemas, every tool called against the live service
in the tenant its configuration names, and bad arguments answered as tool errors that name the
argument."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from aether_memory.app import Running
from aether_memory_client import tools

mcp = pytest.importorskip("mcp")
EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"


def text_of(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def value_of(result: Any) -> Any:
    assert not result.is_error, text_of(result)
    assert json.loads(text_of(result)) == result.structured_content
    return result.structured_content


async def test_every_tool_runs_through_an_mcp_session_in_its_configured_tenant(
    service: Running,
) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    tenant = f"mcp-{uuid.uuid4().hex[:8]}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "aether_memory", "mcp", "--target", service.address, "--agent", "me"],
        env={**clean, "AETHER_MCP_TENANT": tenant},
    )
    called: set[str] = set()
    async with Client(params) as client:

        async def call(name: str, arguments: dict[str, Any]) -> Any:
            called.add(name)
            return await client.call_tool(name, arguments)

        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == set(tools.catalog())
        for name, spec in tools.catalog().items():
            assert listed[name].input_schema == spec.input_schema
            assert listed[name].annotations.read_only_hint == spec.read_only
        arguments = {a for t in listed.values() for a in t.input_schema["properties"]}
        assert not arguments & {"tenant", "agent_id", "api_key"}

        stored = value_of(
            await call(
                "store_memory",
                {"content": "I am allergic to peanuts.", "tags": ["health"], "type": "fact"},
            )
        )["memory"]
        assert (stored["agent_id"], stored["type"]) == ("me", "MEMORY_TYPE_FACT")
        found = value_of(await call("search_memory", {"query": "what foods to avoid?", "k": 1}))
        assert [r["memory"]["id"] for r in found["results"]] == [stored["id"]]
        changed = value_of(
            await call("update_memory", {"memory_id": stored["id"], "tags": ["health", "food"]})
        )["memory"]
        assert changed["tags"] == ["health", "food"]
        assert changed["content"] == stored["content"]  # only what was given changes
        assert value_of(await call("get_memory", {"memory_id": stored["id"]}))["memory"]["tags"]

        refused = await call("store_memory", {"content": "   "})
        assert refused.is_error and text_of(refused).startswith("INVALID_ARGUMENT: content:")
        wrong_type = await call("search_memory", {"query": "x", "k": "many"})
        assert wrong_type.is_error and text_of(wrong_type).startswith("INVALID_ARGUMENT: k:")
        other_agent = await call("search_memory", {"query": "x", "agent_id": "someone"})
        assert other_agent.is_error and "agent_id" in text_of(other_agent)

        messages = [{"role": "user", "content": "Book a table"}]
        value_of(await call("append_working_memory", {"session_id": "s", "messages": messages}))
        checkpoint = value_of(await call("create_checkpoint", {"session_id": "s", "label": "a"}))
        number = int(checkpoint["checkpoint"]["number"])
        value_of(
            await call(
                "put_working_memory",
                {"session_id": "s", "messages": [{"role": "user", "content": "changed"}]},
            )
        )
        listed_checkpoints = value_of(await call("list_checkpoints", {"session_id": "s"}))
        assert [int(c["number"]) for c in listed_checkpoints["checkpoints"]] == [number]
        value_of(await call("restore_checkpoint", {"session_id": "s", "number": number}))
        working = value_of(await call("get_working_memory", {"session_id": "s"}))
        assert [m["content"] for m in working["session"]["messages"]] == ["Book a table"]
        missing = await call("restore_checkpoint", {"session_id": "s", "number": number + 5})
        assert missing.is_error and text_of(missing).startswith("NOT_FOUND")

        for line in ("The table for two is booked at Tasca.", "Dinner is at eight on Friday."):
            value_of(await call("store_memory", {"content": line, "session_id": "s"}))
        summary = value_of(await call("summarize_session", {"session_id": "s"}))
        assert summary["summary"]["type"] == "MEMORY_TYPE_SUMMARY"

        cached = {"tool_name": "weather", "arguments": {"city": "Lisbon"}}
        assert value_of(await call("get_cached_tool_result", cached)).get("hit", False) is False
        value_of(await call("cache_tool_result", {**cached, "result": {"c": 21}, "ttl": 60}))
        hit = value_of(await call("get_cached_tool_result", cached))
        assert hit["hit"] and hit["tool_result"]["result"] == {"c": 21}

        episode = value_of(
            await call(
                "record_episode",
                {"type": "tool_call", "name": "web_search", "outcome": "success", "latency": 0.2},
            )
        )["episode"]
        assert (episode["agent_id"], episode["latency"]) == ("me", "0.200s")
        bad_type = await call("record_episode", {"type": "nap"})
        assert bad_type.is_error and text_of(bad_type).startswith("INVALID_ARGUMENT: type:")
        logged = value_of(await call("list_episodes", {"types": ["tool_call"]}))
        assert [e["event_id"] for e in logged["episodes"]] == [episode["event_id"]]
        value_of(await call("search_episodes", {"query": "web search"}))

        described = value_of(await call("describe_self", {"topic": "food"}))
        # "food" fits the dinner booking's summary as well as the allergy: either may lead.
        assert stored["id"] in [m["memory"]["id"] for m in described["memories"][:2]]

        value_of(await call("forget_memory", {"memory_ids": [stored["id"]]}))
        gone = await call("get_memory", {"memory_id": stored["id"]})
        assert gone.is_error and text_of(gone).startswith("NOT_FOUND")
    assert called == set(tools.catalog())  # every tool was run


async def test_the_streamable_http_transport_serves_the_same_tools(service: Running) -> None:
    import socket

    from mcp import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tenant = f"mcp-{uuid.uuid4().hex[:8]}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AETHER_")}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "aether_memory", "mcp", "--target", service.address),
        *("--transport", "streamable-http", "--port", str(port), "--tenant", tenant),
        env=clean,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            assert listed == set(tools.catalog())
            stored = value_of(await client.call_tool("store_memory", {"content": "Ana is a nurse"}))
            found = value_of(await client.call_tool("search_memory", {"query": "Ana's job"}))
            assert found["results"][0]["memory"]["id"] == stored["memory"]["id"]
    finally:
        process.terminate()
        await process.wait()


async def test_the_example_agents_of_each_tool_interface_run(service: Running) -> None:
    """clients/python/examples: the MCP host and the function-calling loop, as users run them."""
    examples = EXAMPLES
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AETHER_", "OPENAI_"))}
    outputs = {}
    for script in ("mcp_agent.py", "tool_loop.py"):
        tenant = f"ex-{uuid.uuid4().hex[:8]}"
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, str(examples / script), "--target", service.address),
            *("--tenant", tenant),
            env=clean,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, out.decode()
        outputs[script] = out.decode()
    assert f"{len(tools.catalog())} tools" in outputs["mcp_agent.py"]
    assert "found: The user is allergic to peanuts." in outputs["mcp_agent.py"]
    loop = outputs["tool_loop.py"].splitlines()
    assert "allergic to peanuts" in loop[1]  # the search found what the first call stored
    assert "INVALID_ARGUMENT: importance" in loop[2]  # the bad call's error names the argument
