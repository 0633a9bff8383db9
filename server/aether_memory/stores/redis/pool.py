"""A Redis connection pool that a cancelled call cannot shrink.

gRPC cancels a handler when its caller's deadline passes or the caller cancels, and the
cancellation lands in whatever the handler awaits, Redis calls included. redis-py's asyncio pool
(8.1) awaits between taking a connection and guarding it (metrics, the pool lock), and takes its
lock again to give one back; a cancellation at those points leaves the connection marked in use
for ever. Under callers that give up, the pool then runs out and every call fails with "Too many
connections" (bench/reliability.py, scenario `client_cancel`). Here taking and giving back run to
completion whatever happens to the caller: a connection taken for a call that was cancelled
meanwhile goes straight back.

Its `disconnect(inuse_connections=False)` closes idle connections without the pool lock, so a
call can take one while it is being closed and then write to a socket that is gone
(AttributeError on `None.writelines`, answered INTERNAL). `disconnect_idle` holds the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

# redis-py's default is 100, and it fails a call at once when they are all in use: a burst of
# concurrent searches would answer UNAVAILABLE. Connections cost Redis about 20 KB each.
MAX_CONNECTIONS = 1024


class CancelSafePool(aioredis.ConnectionPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._releasing: set[asyncio.Future[None]] = set()  # kept until done (not collected)

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        taking = asyncio.ensure_future(super().get_connection(*args, **kwargs))  # type: ignore[no-untyped-call]
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(self._give_back)
            raise

    def _give_back(self, taking: asyncio.Future[AbstractConnection]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            releasing = asyncio.ensure_future(self.release(taking.result()))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)

    async def release(self, connection: AbstractConnection) -> None:
        giving = asyncio.ensure_future(super().release(connection))
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(giving)
        if not giving.done():  # we were cancelled: it finishes on its own
            raise asyncio.CancelledError

    async def disconnect_idle(self) -> None:
        """Close every idle connection (each reconnects when next taken), none while a call
        takes it."""
        async with self._lock:
            idle = list(self._available_connections)
            await asyncio.gather(*(c.disconnect() for c in idle), return_exceptions=True)


def connect(url: str, *, cluster: bool = False, **options: Any) -> aioredis.Redis:
    """A client for `url` over a CancelSafePool; with `cluster`, redis-py's cluster client
    (`url` names one node), which keeps a list of connections per node that it takes and gives
    back without awaiting, so a cancellation cannot strand one."""
    options.setdefault("max_connections", MAX_CONNECTIONS)
    if cluster:
        # The service's adapters use only what both clients share.
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_pool(CancelSafePool.from_url(url, **options))


async def refresh_topology(client: Any, every_s: float, stop: asyncio.Event) -> None:
    """Re-read a cluster client's slots and nodes (CLUSTER SLOTS) every `every_s` until `stop`.
    redis-py reads them at start and again only after a redirection or a connection error, so
    a replica added later would get no reads until something failed. A refresh keeps the
    connection pools of the nodes it still lists."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
            return
        await client.nodes_manager.initialize()
