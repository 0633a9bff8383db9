"""`aether-memory mcp`: the memory as tools an agent can call, over the Model Context Protocol.

An MCP server (the official `mcp` SDK, v2) that talks to a running Aether Memory service over
gRPC through the Python client's high-level API. The tenant, API key and default agent come
from how the server was started (flags or AETHER_MCP_* variables in the MCP client's
configuration), never from tool arguments: a model cannot reach another tenant by asking.

    aether-memory mcp --target 127.0.0.1:50051 --tenant demo --agent me         # stdio
    aether-memory mcp --transport streamable-http --port 8765                   # loopback HTTP

A call the service refuses comes back as a tool error naming the status and, for bad
arguments, the field (`INVALID_ARGUMENT: memory.content: ...`).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, ParamSpec, TypeVar

import grpc
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from aether_memory_client import AsyncMemory, MemoryRecord

P = ParamSpec("P")
R = TypeVar("R")

INSTRUCTIONS = (
    "Long-term memory for this agent. Search it before answering questions about the user or "
    "past work (search_memory), store durable facts worth keeping (store_memory), forget what "
    "the user asks to forget (forget_memory). Working memory holds a session's messages, with "
    "checkpoints to roll back to. Record notable tool calls and errors as episodes."
)


class ServiceError(ToolError):
    """What the service answered instead of a result; the model sees it as the tool's error."""


def _refused(call: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(call)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await call(*args, **kwargs)
        except grpc.aio.AioRpcError as error:
            raise ServiceError(f"{error.code().name}: {error.details()}") from None

    return wrapper


def _plain(record: MemoryRecord) -> dict[str, Any]:
    out = asdict(record)
    out["created"] = record.created.isoformat() if record.created else None
    return out


def build(target: str, tenant: str | None, api_key: str | None, agent: str) -> MCPServer:
    server: MCPServer = MCPServer("aether-memory", instructions=INSTRUCTIONS)
    memory: AsyncMemory | None = None

    def connected() -> AsyncMemory:
        nonlocal memory  # made in the server's own event loop, at the first call
        if memory is None:
            memory = AsyncMemory(target, tenant=tenant, api_key=api_key, agent=agent)
        return memory

    @server.tool()
    @_refused
    async def search_memory(
        query: str, k: int = 5, tags: list[str] | None = None, min_similarity: float | None = None
    ) -> list[dict[str, Any]]:
        """Search the agent's long-term memories (meaning and keywords, re-ranked); best first.
        `tags` keeps memories with any of them; `min_similarity` (-1..1) leaves out unrelated
        ones."""
        hits = await connected().search(query, k=k, tags=tags or (), min_similarity=min_similarity)
        return [_plain(h) for h in hits]

    @server.tool()
    @_refused
    async def store_memory(
        content: str,
        tags: list[str] | None = None,
        importance: float | None = None,
        session: str | None = None,
    ) -> dict[str, Any]:
        """Store a durable fact (up to 32 KiB of text). The same content again is not stored
        twice (`deduplicated` says so). `importance` is 0..1."""
        added = await connected().add(
            content, tags=tags or (), importance=importance, session=session
        )
        return _plain(added)

    @server.tool()
    @_refused
    async def get_memory(memory_id: str) -> dict[str, Any]:
        """One memory by its id."""
        return _plain(await connected().get(memory_id))

    @server.tool()
    @_refused
    async def forget_memory(memory_ids: list[str]) -> list[str]:
        """Forget memories by id; returns the ids forgotten."""
        return await connected().forget(*memory_ids)

    @server.tool()
    @_refused
    async def append_message(session: str, role: str, content: str) -> list[dict[str, str]]:
        """Add a message to a session's working memory; returns the session's messages."""
        messages = await connected().session(session).append(role, content)
        return [asdict(m) for m in messages]

    @server.tool()
    @_refused
    async def get_session(session: str) -> list[dict[str, str]]:
        """A session's working memory: its messages (none if never written or expired)."""
        return [asdict(m) for m in await connected().session(session).messages()]

    @server.tool()
    @_refused
    async def create_checkpoint(session: str, label: str = "") -> int:
        """Save a session's working memory as it is now; returns the checkpoint number."""
        return await connected().session(session).checkpoint(label)

    @server.tool()
    @_refused
    async def restore_checkpoint(session: str, number: int) -> list[dict[str, str]]:
        """Roll a session back to a checkpoint; returns its messages then."""
        return [asdict(m) for m in await connected().session(session).restore(number)]

    @server.tool()
    @_refused
    async def record_episode(
        name: str,
        kind: str = "tool_call",
        outcome: str | None = None,
        session: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> str:
        """Record an event in the agent's episode log: `kind` is tool_call, llm_call, error,
        checkpoint, ...; `outcome` success, failure, cancelled or pending. Returns its id."""
        try:
            return await connected().record(
                name, kind=kind, outcome=outcome, session=session, payload=payload
            )
        except ValueError:
            raise ServiceError(
                f"INVALID_ARGUMENT: kind or outcome: {kind!r}, {outcome!r}"
            ) from None

    return server


def run(args: argparse.Namespace) -> int:
    server = build(args.target, args.tenant, args.api_key, args.agent)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    return 0
