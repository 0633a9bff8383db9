"""Acknowledging a write only once replicas hold it (AETHER_REDIS_WAIT_REPLICAS).

Redis replicates asynchronously: a primary that dies before its last writes reached a replica
takes them with it, and the replica promoted in its place never had them. WAIT blocks until the
replicas acknowledged the writes made on its own connection, but the service's writes go over
many pooled connections (and several scripts and transactions per call). So the service writes
a small marker in the tenant's slot and sends WAIT after it on the same connection: a primary's
replication stream is one ordered log, so once its replicas hold the marker they hold every
write that primary finished before it, the call's own included.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from ...domain.errors import NotReplicated
from ...domain.tenant import Tenant
from .keys import keys_of

MARKER_TTL_MS = 60_000


class ReplicaWait:
    def __init__(self, client: Any, replicas: int, timeout_ms: int) -> None:
        self._client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    async def confirm(self, tenant: Tenant) -> None:
        """Return once `replicas` replicas of the tenant's primary hold every write it finished
        so far; NotReplicated when fewer confirm within the timeout (the writes stay on the
        primary: a retry of an idempotent call is safe)."""
        if self.replicas <= 0:
            return
        marker = keys_of(tenant).replication_marker()
        route: dict[str, Any] = {}
        if isinstance(self._client, RedisCluster):
            route["target_nodes"] = self._client.get_node_from_key(marker)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.set(marker, b"1", px=MARKER_TTL_MS)
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms, **route)
            _, confirmed = await pipe.execute()
        if int(confirmed) < self.replicas:
            raise NotReplicated(int(confirmed), self.replicas, self.timeout_ms)
