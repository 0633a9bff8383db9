"""request_id -> the response first sent for it, so retried writes return the same answer."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from ...domain.errors import RequestIdReused
from .keys import TenantKeys

_FINGERPRINT_BYTES = 32


class RequestLog:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._ttl = ttl_s

    async def recall(
        self, keys: TenantKeys, method: str, request_id: str, fingerprint: bytes
    ) -> bytes | None:
        """The stored response for a repeat of the same request; RequestIdReused if it differs."""
        stored = await self._client.get(keys.request(method, request_id))
        if stored is None:
            return None
        if stored[:_FINGERPRINT_BYTES] != fingerprint:
            raise RequestIdReused(request_id)
        return bytes(stored[_FINGERPRINT_BYTES:])

    async def remember(
        self, keys: TenantKeys, method: str, request_id: str, fingerprint: bytes, response: bytes
    ) -> bytes:
        """Keep `response` unless a concurrent twin stored first; returns the one kept."""
        key = keys.request(method, request_id)
        if await self._client.set(key, fingerprint + response, nx=True, ex=self._ttl):
            return response
        return await self.recall(keys, method, request_id, fingerprint) or response
