"""What the memory and episode stores share about RediSearch: reading FT.SEARCH replies in either
protocol, and the indexes of the `tenant` layout (AETHER_INDEX_LAYOUT), one per tenant.

A tenant's index is named in the tenant's hash tag (`keys.tenant_index`), so on a Redis Cluster
it lives on the node that holds the tenant's keys: FT.CREATE and FT.SEARCH are routed by the
index name's slot. It is created empty (SKIPINITIALSCAN) before the tenant's first document is
written: an index created over existing keys scans the node's whole keyspace (10,000 indexes
over 20,000 memories took 380 s, bench/results/index-layout.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redisvl.exceptions import RedisSearchError
from redisvl.schema import IndexSchema

from ...domain.tenant import Tenant
from .keys import index_tenants, tenant_index

NO_HITS: list[Any] = [0]  # an FT.SEARCH reply with no documents (RESP2's shape)
# A tenant's FLAT index grows its vector store in blocks of this many vectors (RediSearch's
# default, 1,024, costs about 1.4 MB per small tenant: bench/results/index-layout.md).
TENANT_BLOCK_SIZE = 64


def vector_attrs(
    dimension: int, datatype: str, *, flat: bool, hnsw: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A vector field's attributes: cosine distance, and either exact FLAT vectors in a
    tenant's small blocks or an HNSW graph with its `hnsw` parameters."""
    algorithm = (
        {"algorithm": "flat", "block_size": TENANT_BLOCK_SIZE}
        if flat
        else {"algorithm": "hnsw", **(hnsw or {})}
    )
    return {"dims": dimension, "distance_metric": "cosine", "datatype": datatype, **algorithm}


def missing_index(error: BaseException) -> bool:
    """Whether a query failed because its index does not exist (a Redis reply, or redisvl's
    wrapping of it)."""
    text = str(error).lower()
    return isinstance(error, (redis.exceptions.ResponseError, RedisSearchError)) and (
        "no such index" in text or "unknown index" in text
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def documents(reply: Any, scores: bool) -> list[dict[str, str]]:
    """FT.SEARCH's documents as {field: text} with "id" (and "score" WITHSCORES), from a RESP3
    map or a RESP2 array. A document without fields (its hash expired while the query ran) is
    left out: every hit query here asks for fields."""
    docs: list[dict[str, str]] = []
    if isinstance(reply, dict):
        for found in reply.get(b"results", reply.get("results")) or []:
            get = found.get
            fields = get(b"extra_attributes", get("extra_attributes")) or {}
            if not fields:
                continue
            doc = {_text(k): _text(v) for k, v in fields.items()}
            doc["id"] = _text(get(b"id", get("id")))
            if scores:
                doc["score"] = _text(get(b"score", get("score", 0.0)))
            docs.append(doc)
        return docs
    step = 3 if scores else 2
    for i in range(1, len(reply) - step + 2, step):
        flat = reply[i + step - 1]
        if not flat:
            continue
        doc = {_text(flat[j]): _text(flat[j + 1]) for j in range(0, len(flat) - 1, 2)}
        doc["id"] = _text(reply[i])
        if scores:
            doc["score"] = _text(reply[i + 1])
        docs.append(doc)
    return docs


def total(reply: Any) -> int:
    """FT.SEARCH's total: the first element of a RESP2 reply, a field of a RESP3 map."""
    if isinstance(reply, dict):
        return int(reply.get(b"total_results", reply.get("total_results")) or 0)
    return int(reply[0])


def routed(client: Any, index: str, replica: bool = False) -> dict[str, Any]:
    """Where a command on `index` goes. redis-py 8.1's cluster client sends FT.* commands to a
    random node (its command policies assume a Query Engine that coordinates the cluster); with
    this Search module the index lives on the node that owns its name's slot, so the others
    answer MOVED, and every fifth MOVED makes redis-py close all its connections, failing the
    calls that are using them. Sent to that node instead (a stale slot map is still corrected
    by MOVED). With `replica`, to a replica of that node where it has one (the client's
    connections must be READONLY: `read_from_replicas`)."""
    if isinstance(client, RedisCluster):
        node = client.get_node_from_key(index, replica=True) if replica else None
        return {"target_nodes": node or client.get_node_from_key(index)}
    return {}


async def pipelined_totals(client: Any, commands: Sequence[list[Any]]) -> list[int]:
    """The totals of FT.SEARCH commands, in one round trip (per node, on a cluster); 0 for an
    index that does not exist."""
    if not commands:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command, **routed(client, command[1]))
        replies = await pipe.execute(raise_on_error=False)
    totals = []
    for reply in replies:
        if isinstance(reply, Exception):
            if not missing_index(reply):
                raise reply
            reply = NO_HITS
        totals.append(total(reply))
    return totals


def search_args(index: str, query: Any) -> list[Any]:
    """The FT.SEARCH command of a RedisVL query, its parameters included."""
    args: list[Any] = ["FT.SEARCH", index, *query.get_args()]
    if query.params:
        args += ["PARAMS", 2 * len(query.params)]
        for name, value in query.params.items():
            args += [name, value]
    return args


def create_args(schema: IndexSchema, prefix: str, *, scan: bool) -> list[Any]:
    """FT.CREATE of an index over hashes under `prefix`; without `scan` it starts empty
    (SKIPINITIALSCAN) and holds only documents written after it."""
    args: list[Any] = ["FT.CREATE", schema.index.name, "ON", "HASH", "PREFIX", 1, prefix]
    args += ["SCHEMA"] if scan else ["SKIPINITIALSCAN", "SCHEMA"]
    for field in schema.fields.values():
        args += field.as_redis_field().redis_args()
    return args


def info_field(info: Any, field: str) -> Any:
    """One field of an FT.INFO reply (a RESP3 map or a RESP2 list of pairs), as text."""
    if isinstance(info, dict):
        value = info.get(field.encode(), info.get(field))
    else:
        pairs = dict(zip(info[::2], info[1::2], strict=False))
        value = pairs.get(field.encode(), pairs.get(field))
    return _text(value) if isinstance(value, bytes | str) else value


class TenantIndexes:
    """The indexes of one index name in the `tenant` layout: one per tenant, each made (empty)
    before the tenant's first document, and listed for the deployment-wide counts."""

    def __init__(
        self, client: Any, index_name: str, schema_of: Callable[[str, str], IndexSchema]
    ) -> None:
        """`schema_of(name, prefix)`: a tenant's index schema, given its name and key prefix."""
        if "{" in index_name or "}" in index_name:
            raise ValueError("an index name may not hold '{' or '}' (the tenant's hash tag)")
        self._client = client
        self.index_name = index_name
        self._schema_of = schema_of
        self._ready: set[str] = set()  # tenants whose index this process has made sure of

    def name(self, tenant: Tenant | str) -> str:
        return tenant_index(self.index_name, str(tenant))

    def _create(self, tenant: Tenant | str, prefix: str) -> list[Any]:
        """FT.CREATE of `tenant`'s index over keys under `prefix`, made empty."""
        return create_args(self._schema_of(self.name(tenant), prefix), prefix, scan=False)

    async def ready(self, tenant: Tenant | str, prefix: str) -> None:
        """Make sure `tenant` has its index (over keys under `prefix`). Replicas racing here
        agree: the second FT.CREATE answers that the index exists. Asked first, once per
        process: a tenant moved to HNSW answers by an alias of its name, and FT.CREATE would
        make an empty index that hides the alias."""
        if str(tenant) in self._ready:
            return
        name = self.name(tenant)
        try:
            await self._client.execute_command("FT.INFO", name, **routed(self._client, name))
        except redis.exceptions.ResponseError as missing:
            if not missing_index(missing):
                raise
            try:
                await self._client.execute_command(
                    *self._create(tenant, prefix), **routed(self._client, name)
                )
            except redis.exceptions.ResponseError as error:
                if "already exists" not in str(error).lower():
                    raise
        await self._client.sadd(index_tenants(self.index_name), str(tenant))
        self._ready.add(str(tenant))

    async def create_on(self, node: Any, tenant: Tenant | str, prefix: str) -> None:
        """Create `tenant`'s index on `node` (a client of one cluster node) while that node
        imports the tenant's slot: ASKING lets the node take a command for a slot it does not
        own yet. An index that exists there already is left as it is."""
        async with node.pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.execute_command(*self._create(tenant, prefix))
            _, created = await pipe.execute(raise_on_error=False)
        if isinstance(created, Exception) and "already exists" not in str(created).lower():
            raise created

    async def names(self) -> list[str]:
        """The index of every tenant that has one."""
        return await tenant_index_names(self._client, self.index_name)


async def tenant_index_names(client: Any, index_name: str) -> list[str]:
    """The index of every tenant that has one, of an index name in the `tenant` layout."""
    tenants = await client.smembers(index_tenants(index_name))
    return [tenant_index(index_name, _text(t)) for t in sorted(tenants)]
