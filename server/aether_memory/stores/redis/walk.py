"""One SCAN step over the whole keyspace, on a single Redis or across a cluster's primaries.

On a Redis Cluster each primary has its own keyspace and its own SCAN cursor. The walk visits
the primaries one after another (ordered by address), and its cursor carries both numbers:
`node cursor * primaries + node index`. A cursor is still 0 at the start and only 0 again when
the last primary's walk wrapped, so callers keep treating it as a plain SCAN cursor. If the
primaries change between two steps, the walk may visit some keys twice or start a node over,
which a walk that is repeated anyway tolerates.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster


async def scan_step(
    client: Any, cursor: int, match: str, count: int, type_: str
) -> tuple[int, list[bytes]]:
    """(cursor after, names found) for one SCAN step from `cursor` (0: the start)."""
    if not isinstance(client, RedisCluster):
        after, names = await client.scan(cursor, match=match, count=count, _type=type_)
        return int(after), list(names)
    primaries = sorted(client.get_primaries(), key=lambda node: (node.host, node.port))
    index, node_cursor = cursor % len(primaries), cursor // len(primaries)
    reply = await client.execute_command(
        "SCAN", node_cursor, "MATCH", match, "COUNT", count, "TYPE", type_,
        target_nodes=primaries[index],
    )  # fmt: skip
    cursors, names = reply  # redis-py gives the cursor by node, even for one node
    (after,) = cursors.values() if isinstance(cursors, dict) else (cursors,)
    after = int(after)
    if after == 0:  # this primary is done: the next one from its start, or the walk wrapped
        return (index + 1 if index + 1 < len(primaries) else 0), list(names)
    return after * len(primaries) + index, list(names)
