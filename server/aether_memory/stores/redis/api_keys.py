"""API keys: stored hashed in Redis, each mapping to one tenant and one role.

A key reads `aek_<key id>_<secret>`. Redis holds, under the key id, the SHA-256 of the whole key
(keys are 256-bit random strings, so a fast hash is the right one: there is nothing to brute
force), its tenant, role and name; never the key itself. Revoking deletes the record.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis.asyncio as aioredis

from .keys import TenantKeys, api_key


class Role(IntEnum):
    """Each role can do what the roles below it can."""

    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    role: Role
    name: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    parts = key.split("_", 2)  # the secret itself may hold "_"
    if len(parts) != 3 or parts[0] != "aek" or len(parts[1]) != 16:
        return None
    return parts[1]


class ApiKeys:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client: Any = client

    @staticmethod
    def _index(tenant: str) -> str:
        return TenantKeys(tenant).api_keys()

    async def create(self, tenant: str, role: Role, name: str) -> tuple[str, str]:
        """A new key for `tenant`; returns (key id, key). The key is shown once, never stored."""
        TenantKeys(tenant)  # validates the tenant
        key_id = secrets.token_hex(8)
        key = f"aek_{key_id}_{secrets.token_urlsafe(32)}"
        # Two keys in two cluster slots, so no transaction: listed first, then made valid. A
        # failure between leaves a listed id without a record, which `list` skips and no key
        # can use; the other order could leave a working key no listing shows.
        await self._client.sadd(self._index(tenant), key_id)
        await self._client.hset(
            api_key(key_id),
            mapping={
                "hash": _digest(key),
                "tenant": tenant,
                "role": role.name.lower(),
                "name": name,
                "created": repr(time.time()),
            },
        )
        return key_id, key

    async def revoke(self, key_id: str) -> bool:
        record = await self._client.hgetall(api_key(key_id))
        if not record:
            return False
        # Invalid first, then unlisted (two cluster slots: see `create`).
        await self._client.delete(api_key(key_id))
        await self._client.srem(self._index(record[b"tenant"].decode()), key_id)
        return True

    async def list(self, tenant: str) -> list[Principal]:
        found = []
        for raw in sorted(await self._client.smembers(self._index(tenant))):
            key_id = raw.decode()
            record = await self._client.hgetall(api_key(key_id))
            if record:
                found.append(self._principal(key_id, record))
        return found

    @staticmethod
    def _principal(key_id: str, record: dict[bytes, bytes]) -> Principal:
        return Principal(
            key_id=key_id,
            tenant=record[b"tenant"].decode(),
            role=Role[record[b"role"].decode().upper()],
            name=record.get(b"name", b"").decode(),
        )

    async def authenticate(self, key: str) -> Principal | None:
        """The principal a key stands for, or None for a malformed, unknown or revoked key."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        record = await self._client.hgetall(api_key(key_id))
        if not record or not hmac.compare_digest(record[b"hash"].decode(), _digest(key)):
            return None
        return self._principal(key_id, record)
