"""At most once per request_id (AIP-155): a retry of a write gets the first call's response.

A request_id is claimed before the write runs and replaced by the response after it; a write
that fails or is cancelled gives its claim back so a retry can run. The same id with another
request is refused (RequestIdReused). The claims live in a `RequestLog` port (Redis,
stores/redis/idempotency.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from ..domain.errors import InvalidField, RequestIdReused
from ..stores.redis.keys import TenantKeys

M = TypeVar("M", bound=Message)
MAX_REQUEST_ID = 36


class RequestLog(Protocol):
    async def claim(
        self, keys: TenantKeys, method: str, request_id: str, fingerprint: bytes
    ) -> bytes | None: ...

    async def remember(
        self, keys: TenantKeys, method: str, request_id: str, fingerprint: bytes, response: bytes
    ) -> None: ...

    async def release(
        self, keys: TenantKeys, method: str, request_id: str, fingerprint: bytes
    ) -> None: ...


def fingerprint(request_id: str, request: Message, field: str) -> bytes:
    """The request's identity for its request_id; refuses an id that is not one."""
    if len(request_id) > MAX_REQUEST_ID or not request_id.isascii():
        raise InvalidField.one(field, f"must be at most {MAX_REQUEST_ID} ASCII characters")
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


class Idempotent:
    def __init__(self, log: RequestLog) -> None:
        self._log = log

    async def once(
        self,
        keys: TenantKeys,
        method: str,
        request: Message,
        request_id: str,
        response_type: type[M],
        compute: Callable[[], Awaitable[M]],
    ) -> M:
        """Run `compute` at most once per request_id; without one, just run it."""
        if not request_id:
            return await compute()
        claim = fingerprint(request_id, request, "request_id")
        stored = await self._log.claim(keys, method, request_id, claim)
        if stored is not None:
            return response_type.FromString(stored)
        return await self.run_claimed(keys, method, request_id, claim, compute)

    async def run_claimed(
        self,
        keys: TenantKeys,
        method: str,
        request_id: str,
        claim: bytes,
        compute: Callable[[], Awaitable[M]],
    ) -> M:
        """Compute the response of a claimed request_id and keep it, or give the claim back."""
        try:
            response = await compute()
        except BaseException:
            await asyncio.shield(self._log.release(keys, method, request_id, claim))
            raise
        # Shielded: a caller gone now must not leave the claim pending (its retry would wait).
        await asyncio.shield(
            self._log.remember(keys, method, request_id, claim, response.SerializeToString())
        )
        return response

    async def claim_all(
        self,
        keys: TenantKeys,
        method: str,
        items: Sequence[tuple[str, Message, str]],
        response_type: type[M],
    ) -> list[M | bytes | None]:
        """Claim each (request_id, request, field) of a batch before anything runs: per item
        its stored response, its claim's fingerprint, or None (no request_id). A reused id
        refuses the whole batch and gives back the claims taken; an id twice in the batch is
        one request."""
        replies: list[M | bytes | None] = []
        claimed: dict[str, bytes] = {}
        try:
            for request_id, request, field in items:
                if not request_id:
                    replies.append(None)
                    continue
                claim = fingerprint(request_id, request, field)
                if request_id in claimed:
                    if claimed[request_id] != claim:
                        raise RequestIdReused(request_id)
                    replies.append(None)  # the same request again: it answers itself
                    continue
                stored = await self._log.claim(keys, method, request_id, claim)
                if stored is None:
                    claimed[request_id] = claim
                    replies.append(claim)
                else:
                    replies.append(response_type.FromString(stored))
        except BaseException:
            for request_id, claim in claimed.items():
                await asyncio.shield(self._log.release(keys, method, request_id, claim))
            raise
        return replies

    async def give_back(self, keys: TenantKeys, method: str, request_id: str, claim: bytes) -> None:
        """Release a claim taken by `claim_all` whose item never ran."""
        await asyncio.shield(self._log.release(keys, method, request_id, claim))
