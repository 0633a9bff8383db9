"""Aether Memory's Python client: `Memory` and `AsyncMemory` (plain dataclasses in and out), and
`AsyncClient` and `Client` over the generated stubs in `aether.memory.v1`."""

from .client import AsyncClient, Client
from .memory import Added, AsyncMemory, Hit, Memory, MemoryRecord

__all__ = ["Added", "AsyncClient", "AsyncMemory", "Client", "Hit", "Memory", "MemoryRecord"]
