"""The request_id log against real Redis: a first claim runs, a twin gets the kept response, an
id reused with another request is refused, and a claim is given back only by its own request
(the release script), so a retry can run."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from aether_memory.app import Running
from aether_memory.domain.errors import RequestIdReused
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.idempotency import PENDING, RequestLog
from aether_memory.stores.redis.keys import keys_of


def fingerprint(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


async def test_claim_remember_replay_refuse_and_release(service: Running) -> None:
    log = RequestLog(service.redis, ttl_s=60)
    tenant = Tenant(f"t-{uuid.uuid4().hex[:10]}")
    keys = keys_of(tenant)
    mine, other = fingerprint("store A"), fingerprint("store B")
    key = keys.request("StoreMemory", "r1")

    assert await log.claim(tenant, "StoreMemory", "r1", mine) is None  # claimed: run it
    assert await service.redis.get(key) == mine + PENDING
    with pytest.raises(RequestIdReused):
        await log.claim(tenant, "StoreMemory", "r1", other)  # another request: refused at once
    await log.release(tenant, "StoreMemory", "r1", other)  # not its claim: nothing happens
    assert await service.redis.get(key) == mine + PENDING

    await log.remember(tenant, "StoreMemory", "r1", mine, b"\x0a\x02ok")
    assert await log.claim(tenant, "StoreMemory", "r1", mine) == b"\x0a\x02ok"  # the replay
    assert 0 < await service.redis.ttl(key) <= 60
    await log.release(tenant, "StoreMemory", "r1", mine)  # a kept response is never released
    assert await log.claim(tenant, "StoreMemory", "r1", mine) == b"\x0a\x02ok"

    assert await log.claim(tenant, "StoreMemory", "r2", mine) is None
    await log.release(tenant, "StoreMemory", "r2", mine)  # the call failed: its claim goes
    assert await service.redis.get(keys.request("StoreMemory", "r2")) is None
    assert await log.claim(tenant, "StoreMemory", "r2", mine) is None  # so a retry runs
