"""A lease on one Redis key: the way one replica at a time runs a background job.

The holder is a random token; `hold` takes the lease when it is free and extends it when this
holder has it, in one script, so two replicas can never both believe they hold it. A holder
that dies stops renewing and the lease lapses after its TTL; `release` gives it up at once on a
clean stop. Only its own token can extend or release it.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import redis.asyncio as aioredis

_HOLD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
# Deletes a key only while it holds the given value (a lease's token, a request's pending
# claim): 1 if deleted. KEYS: the key. ARGV: the value.
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, client: aioredis.Redis, key: str, ttl_ms: int) -> None:
        self.key = key
        self.ttl_ms = ttl_ms
        self._token = uuid.uuid4().hex
        self._hold: Any = client.register_script(_HOLD)
        self._release: Any = client.register_script(COMPARE_AND_DELETE)

    async def hold(self) -> bool:
        """Take or extend the lease for its TTL; False while another holder has it."""
        return bool(await self._hold(keys=[self.key], args=[self._token, self.ttl_ms]))

    async def release(self) -> None:
        """Give the lease up if this holder has it (a Redis that is gone lets it lapse)."""
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self._release(keys=[self.key], args=[self._token])
