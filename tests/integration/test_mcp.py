"""`aether-memory mcp` as an MCP client meets it: spawned over stdio by the official SDK's
client, its tools listed with schemas, called against the live service in the tenant its
configuration names, and bad arguments answered as tool errors that name the field."""

from __future__ import annotations

import json
import os
import sys
import uuid
from typing import Any

import pytest

from aether_memory.app import Running

mcp = pytest.importorskip("mcp")


def text_of(result: Any) -> str:
    return "".join(getattr(part, "text", "") for part in result.content)


def value_of(result: Any) -> Any:
    """A tool's structured result (the SDK wraps what is not an object as {"result": ...})."""
    assert not result.is_error, text_of(result)
    structured = result.structured_content
    return structured["result"] if set(structured) == {"result"} else structured


async def test_the_mcp_server_stores_searches_and_forgets_in_its_configured_tenant(
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
    async with Client(params) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"search_memory", "store_memory", "forget_memory", "record_episode"} <= set(tools)
        assert "query" in json.dumps(tools["search_memory"].input_schema)
        assert "tenant" not in json.dumps([t.input_schema for t in tools.values()])

        stored = await client.call_tool("store_memory", {"content": "I am allergic to peanuts."})
        memory_id = value_of(stored)["id"]
        found = await client.call_tool("search_memory", {"query": "what foods to avoid?", "k": 1})
        assert [hit["id"] for hit in value_of(found)] == [memory_id]  # in this tenant only

        refused = await client.call_tool("store_memory", {"content": "   "})
        assert refused.is_error and "INVALID_ARGUMENT" in text_of(refused)
        assert "content" in text_of(refused)

        await client.call_tool("append_message", {"session": "s", "role": "user", "content": "hi"})
        number = await client.call_tool("create_checkpoint", {"session": "s"})
        assert value_of(number) == 1
        episode = await client.call_tool("record_episode", {"name": "web_search"})
        assert value_of(episode)
        bad_kind = await client.call_tool("record_episode", {"name": "x", "kind": "nap"})
        assert bad_kind.is_error and "kind" in text_of(bad_kind)

        forgotten = await client.call_tool("forget_memory", {"memory_ids": [memory_id]})
        assert value_of(forgotten) == [memory_id]
        gone = await client.call_tool("get_memory", {"memory_id": memory_id})
        assert gone.is_error and "NOT_FOUND" in text_of(gone)
