"""An MCP host's side of Aether Memory: spawns `aether-memory mcp` over stdio with the official
SDK's client, lists the memory tools, and uses them as a model would: store a fact, search for
it, checkpoint a session, record the tool call as an episode.

    python clients/python/examples/mcp_agent.py --target 127.0.0.1:50051 --tenant demo --agent me
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def result_of(reply: Any) -> Any:
    text = "".join(getattr(part, "text", "") for part in reply.content)
    if reply.is_error:
        raise RuntimeError(text)
    return json.loads(text)


async def main(args: argparse.Namespace) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "aether_memory", "mcp", "--target", args.target, "--agent", args.agent],
        env={**os.environ, "AETHER_MCP_TENANT": args.tenant},
    )
    async with Client(server) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        print(f"{len(tools)} tools: {', '.join(tools)}")
        stored = result_of(
            await client.call_tool(
                "store_memory",
                {"content": "The user is allergic to peanuts.", "tags": ["health"]},
            )
        )
        found = result_of(
            await client.call_tool("search_memory", {"query": "what must dinner avoid?", "k": 1})
        )
        best = found["results"][0]["memory"]
        print(f"found: {best['content']} (stored as {stored['memory']['id']})")
        messages = [{"role": "user", "content": "Plan dinner for Friday"}]
        await client.call_tool(
            "append_working_memory", {"session_id": "dinner", "messages": messages}
        )
        checkpoint = result_of(
            await client.call_tool("create_checkpoint", {"session_id": "dinner"})
        )
        episode = result_of(
            await client.call_tool(
                "record_episode",
                {"type": "tool_call", "name": "search_memory", "outcome": "success"},
            )
        )
        print(
            f"checkpoint {checkpoint['checkpoint']['number']}, "
            f"episode {episode['episode']['episode_id']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--agent", default="mcp-agent")
    asyncio.run(main(parser.parse_args()))
