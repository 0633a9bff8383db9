"""Aether Memory's Python client: `Memory` and `AsyncMemory` (plain dataclasses in and out), and
`AsyncClient` and `Client` over the generated stubs in `aether.memory.v1`; `tools`: the memory
as tools a model can call (MCP, OpenAI and Anthropic schemas, and a dispatcher)."""

from . import tools
from .client import AsyncClient, Client
from .memory import (
    Added,
    AsyncMemory,
    AsyncSession,
    Hit,
    Memory,
    MemoryRecord,
    Message,
    Session,
)

__all__ = [
    "Added",
    "AsyncClient",
    "AsyncMemory",
    "AsyncSession",
    "Client",
    "Hit",
    "Memory",
    "MemoryRecord",
    "Message",
    "Session",
    "tools",
]
