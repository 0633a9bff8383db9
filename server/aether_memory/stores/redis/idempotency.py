"""request_id -> the response first sent for it, so retried writes return the same answer.

A call claims its request_id before it does anything: the key holds the request's fingerprint
and a pending mark until the response replaces the mark. A concurrent twin (same id, same
request) waits for that response; a call with the same id and another request is refused at
once, before it writes anything. A call that fails gives its claim back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from ...domain.errors import Conflict, RequestIdReused
from ...domain.tenant import Tenant
from .keys import keys_of
from .lease import COMPARE_AND_DELETE

_FINGERPRINT_BYTES = 32
# No serialized protobuf message starts with a zero byte (field number 0 is invalid), so a
# value whose body starts with one is a claim, never a response.
PENDING = b"\x00pending"
PENDING_TTL_S = 60  # a claim outlives the slowest write; a crashed server's claim then lapses
WAIT_STEP_S = 0.02


class RequestLog:
    def __init__(self, client: aioredis.Redis, ttl_s: int) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._ttl = ttl_s
        # A claim is given back only while it is still this request's pending claim.
        self._release = client.register_script(COMPARE_AND_DELETE)
        self._cleanup: set[asyncio.Future[Any]] = set()  # claims given back after a cancel

    async def claim(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes
    ) -> bytes | None:
        """None: the caller owns the request_id and must `remember` or `release` it. Bytes:
        the response the first call with this request sent. RequestIdReused: the id belongs to
        another request."""
        keys = keys_of(tenant)
        key = keys.request(method, request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PENDING_TTL_S
        while True:
            if await self._claim_once(key, fingerprint):
                return None
            stored = await self._client.get(key)
            if stored is None:  # released or lapsed since: claim it again
                continue
            if stored[:_FINGERPRINT_BYTES] != fingerprint:
                raise RequestIdReused(request_id)
            body = bytes(stored[_FINGERPRINT_BYTES:])
            if body != PENDING:
                return body
            if loop.time() >= deadline:
                raise Conflict("request_id", request_id)
            await asyncio.sleep(WAIT_STEP_S)  # its twin is still computing the response

    async def _claim_once(self, key: str, fingerprint: bytes) -> bool:
        """SET NX of the pending mark. A caller cancelled while it is on its way (a deadline)
        cannot know whether it landed; then it is given back as soon as the reply comes, or a
        retry of the same request would wait for the mark to lapse."""
        attempt = asyncio.ensure_future(
            self._client.set(key, fingerprint + PENDING, nx=True, ex=PENDING_TTL_S)
        )
        try:
            return bool(await asyncio.shield(attempt))
        except asyncio.CancelledError:

            def give_back(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None and done.result():
                    releasing = asyncio.ensure_future(
                        self._release(keys=[key], args=[fingerprint + PENDING])
                    )
                    self._cleanup.add(releasing)
                    releasing.add_done_callback(self._cleanup.discard)

            attempt.add_done_callback(give_back)
            raise

    async def remember(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes, response: bytes
    ) -> None:
        """Replace the caller's claim with the response, kept for the request_id TTL."""
        keys = keys_of(tenant)
        await self._client.set(
            keys.request(method, request_id), fingerprint + response, ex=self._ttl
        )

    async def release(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes
    ) -> None:
        """Give the claim back after a failed call, so a retry can run."""
        keys = keys_of(tenant)
        await self._release(keys=[keys.request(method, request_id)], args=[fingerprint + PENDING])
