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
from ..domain.tenant import Tenant

M = TypeVar("M", bound=Message)
MAX_REQUEST_ID = 36


class RequestLog(Protocol):
    async def claim(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes
    ) -> bytes | None: ...

    async def remember(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes, response: bytes
    ) -> None: ...

    async def release(
        self, tenant: Tenant, method: str, request_id: str, fingerprint: bytes
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
        tenant: Tenant,
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
        stored = await self._log.claim(tenant, method, request_id, claim)
        if stored is not None:
            return response_type.FromString(stored)
        return await self.run_claimed(tenant, method, request_id, claim, compute)

    async def run_claimed(
        self,
        tenant: Tenant,
        method: str,
        request_id: str,
        claim: bytes,
        compute: Callable[[], Awaitable[M]],
    ) -> M:
        """Compute the response of a claimed request_id and keep it, or give the claim back."""
        try:
            response = await compute()
        except BaseException:
            await asyncio.shield(self._log.release(tenant, method, request_id, claim))
            raise
        # Shielded: a caller gone now must not leave the claim pending (its retry would wait).
        await asyncio.shield(
            self._log.remember(tenant, method, request_id, claim, response.SerializeToString())
        )
        return response

    async def each(
        self,
        tenant: Tenant,
        method: str,
        items: Sequence[tuple[str, Message, str, Callable[[], Awaitable[M]]]],
        response_type: type[M],
    ) -> list[M]:
        """A batch of writes, each (request_id, request, field, compute) at most once per its
        request_id, in order. Every id is claimed before any item runs (`_claim_all`), so a
        reused one refuses the batch before anything is written; when an item fails or the
        call is cancelled, the items not yet run give their claims back."""
        replies = await self._claim_all(
            tenant,
            method,
            [(rid, request, field) for rid, request, field, _ in items],
            response_type,
        )
        responses: list[M] = []
        try:
            for (request_id, request, _, compute), reply in zip(items, replies, strict=True):
                if isinstance(reply, response_type):
                    responses.append(reply)  # this request_id's first response
                elif isinstance(reply, bytes):  # claimed here: run it, keep its response
                    responses.append(
                        await self.run_claimed(tenant, method, request_id, reply, compute)
                    )
                else:  # no request_id, or one earlier in this batch: it answers itself
                    responses.append(
                        await self.once(tenant, method, request, request_id, response_type, compute)
                    )
        except BaseException:
            for (request_id, *_), reply in list(zip(items, replies, strict=True))[
                len(responses) + 1 :
            ]:
                if isinstance(reply, bytes):
                    await asyncio.shield(self._log.release(tenant, method, request_id, reply))
            raise
        return responses

    async def _claim_all(
        self,
        tenant: Tenant,
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
                stored = await self._log.claim(tenant, method, request_id, claim)
                if stored is None:
                    claimed[request_id] = claim
                    replies.append(claim)
                else:
                    replies.append(response_type.FromString(stored))
        except BaseException:
            for request_id, claim in claimed.items():
                await asyncio.shield(self._log.release(tenant, method, request_id, claim))
            raise
        return replies
