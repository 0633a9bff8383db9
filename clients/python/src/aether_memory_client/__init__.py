"""Aether Memory's Python client: `AsyncClient` and `Client` over the generated stubs in
`aether.memory.v1`."""

from .client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
