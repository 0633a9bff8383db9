"""Aether Memory's Python client: `Memory` and `AsyncMemory` (plain dataclasses in and out), and
`AsyncClient` and `Client` over the generated stubs in `aether.memory.v1`."""

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
]
