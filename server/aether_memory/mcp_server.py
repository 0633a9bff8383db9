"""`aether-memory mcp`: the memory as tools an agent can call, over the Model Context Protocol.

An MCP server (the official `mcp` SDK, v2) that talks to a running Aether Memory service over
gRPC. Its tools are the generated catalog (scripts/gen_tools.py: proto/tools.toml and the
protos' comments), run by the Python client's dispatcher, so MCP hosts, OpenAI and Anthropic
tool loops and `Memory(...).tools` all see the same names, schemas and errors. The tenant, API
key and agent come from how the server was started (flags or AETHER_MCP_* variables in the MCP
client's configuration), never from tool arguments: a model cannot reach another tenant or
agent by asking.

    aether-memory mcp --target 127.0.0.1:50051 --tenant demo --agent me         # stdio
    aether-memory mcp --transport streamable-http --port 8765                   # loopback HTTP

A call the service refuses, or arguments the tool's schema refuses, come back as a tool error
naming the status and the argument (`INVALID_ARGUMENT: content: ...`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from aether_memory_client import AsyncMemory, tools

INSTRUCTIONS = (
    "Long-term memory for this agent. Search it before answering questions about the user or "
    "past work (search_memory), store durable facts worth keeping (store_memory), forget what "
    "the user asks to forget (forget_memory). Working memory holds a session's messages, with "
    "checkpoints to roll back to. Record notable tool calls and errors as episodes."
)


def _text(value: Any) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=json.dumps(value, ensure_ascii=False))]


def build(target: str, tenant: str | None, api_key: str | None, agent: str) -> Server[Any]:
    memory: AsyncMemory | None = None

    def connected() -> AsyncMemory:
        nonlocal memory  # made in the server's own event loop, at the first call
        if memory is None:
            memory = AsyncMemory(target, tenant=tenant, api_key=api_key, agent=agent)
        return memory

    listed = [
        types.Tool(
            name=t["name"],
            description=t["description"],
            input_schema=t["inputSchema"],
            annotations=types.ToolAnnotations(read_only_hint=t["annotations"]["readOnlyHint"]),
        )
        for t in tools.mcp_tools()
    ]

    async def list_tools(_ctx: Any, _params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    async def call_tool(_ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            result = await connected().tools.call(params.name, params.arguments or {})
        except tools.ToolCallError as error:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=str(error))], is_error=True
            )
        return types.CallToolResult(content=_text(result), structured_content=result)

    return Server(
        "aether-memory",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def _stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def _http(server: Server[Any], port: int) -> None:
    import uvicorn

    app = server.streamable_http_app(host="127.0.0.1")
    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port)).serve()


def run(args: argparse.Namespace) -> int:
    server = build(args.target, args.tenant, args.api_key, args.agent)
    if args.transport == "stdio":
        anyio.run(_stdio, server)
    else:
        anyio.run(_http, server, args.port)
    return 0
