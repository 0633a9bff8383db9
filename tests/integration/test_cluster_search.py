"""What a Redis Cluster with the Search module shipped here (RediSearch 2.10, no coordinator)
does with search indexes: the facts issue 21's index layout is built on, checked against a real
local cluster (3 primaries, 3 replicas) started from the embedded mode's own binaries.

- FT.CREATE and FT.SEARCH are routed by the slot of the index's name: a node that does not own
  it answers MOVED. An index holds only its own node's keys under its prefix.
- So a tenant's index is named in the tenant's slot (`aether:idx:{tenant}`), and it must be
  created on the node a slot moves to before its keys arrive (ASKING while it imports).
- A slot move keeps the tenant's memories searchable throughout when the keys are first copied
  (MIGRATE COPY while the source still owns the slot) and only then moved: while the source is
  MIGRATING it redirects every search (ASK) to the target, which must already hold them.
- A replica holds its primary's indexes (FT.CREATE is replicated), so searches can read there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster, key_slot

from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.keys import keys_of
from tests.support.cluster import LocalCluster, Node, local_cluster

SCHEMA = ("SCHEMA", "tenant", "TAG", "content", "TEXT")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas=1) as started:
        yield started


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[RedisCluster]:
    nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
    connected = RedisCluster(startup_nodes=nodes)
    yield connected
    connected.close()


def tenant_index(tenant: str) -> str:
    return f"aether:idx:{{{tenant}}}"


def create_index(node: redis.Redis, tenant: str, *, asking: bool = False) -> None:
    pipe = node.pipeline(transaction=False)
    if asking:
        pipe.execute_command("ASKING")
    prefix = keys_of(Tenant(tenant)).memory("")
    pipe.execute_command(
        "FT.CREATE", tenant_index(tenant), "ON", "HASH", "PREFIX", 1, prefix, *SCHEMA
    )
    pipe.execute()


def count(client: redis.Redis | RedisCluster, tenant: str, word: str = "note") -> int:
    reply = client.execute_command("FT.SEARCH", tenant_index(tenant), word, "LIMIT", 0, 0)
    return int(reply[b"total_results"])


def seed(client: RedisCluster, tenant: str, first: int, last: int) -> None:
    keys = keys_of(Tenant(tenant))
    for n in range(first, last):
        client.hset(keys.memory(f"m{n}"), mapping={"tenant": tenant, "content": f"note {n}"})


def wait_for(what: str, condition: object, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {within_s:.0f} s: {what}"
        time.sleep(0.05)


def test_every_node_runs_the_search_json_and_bloom_modules(cluster: LocalCluster) -> None:
    for node in cluster.primaries + cluster.replicas:
        names = {m[b"name"].decode().lower() for m in node.client().module_list()}
        assert {"search", "rejson", "bf"} <= names, (node.port, names)


def test_search_commands_are_routed_by_the_slot_of_the_index_name(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    slot = key_slot(tenant_index("routing").encode())
    owner = cluster.owner(slot)
    other = next(n for n in cluster.primaries if n is not owner)
    moved = f"{slot} 127.0.0.1:{owner.port}"  # MOVED to the owner of the name's slot
    with pytest.raises(redis.exceptions.MovedError, match=moved):
        create_index(other.client(), "routing")
    create_index(owner.client(), "routing")
    with pytest.raises(redis.exceptions.MovedError, match=moved):
        count(other.client(), "routing")

    # The tenant's keys share the index name's slot, so they live where the index does; the
    # index holds its own tenant's memories only, whichever node the others are on.
    assert key_slot(keys_of(Tenant("routing")).memory("m0").encode()) == slot
    seed(client, "routing", 0, 30)
    seed(client, "neighbour", 0, 10)
    wait_for("30 memories indexed", lambda: count(client, "routing") == 30)
    assert count(owner.client(), "routing") == 30


def move_slot(
    cluster: LocalCluster, slot: int, source: Node, target: Node, *, between: object
) -> None:
    """Move `slot` so that its tenants' indexes stay complete: the target imports and gets the
    indexes first, the keys are copied while the source still serves, then moved for good.
    `between()` runs while the source is migrating (after the copy, before the final move)."""
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    tenants = {name.decode() for name in source.client().execute_command("FT._LIST")}
    for index in sorted(tenants):
        if key_slot(index.encode()) == slot:
            create_index(target.client(), index.removeprefix("aether:idx:{")[:-1], asking=True)
    keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000)
    for start in range(0, len(keys), 50):
        source.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "COPY", "REPLACE",
            "KEYS", *keys[start : start + 50],
        )  # fmt: skip
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    between()  # type: ignore[operator]
    while keys := source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 50):
        source.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "REPLACE", "KEYS", *keys
        )
    for node in cluster.primaries:
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)


def test_a_tenant_index_moves_with_its_slot_and_answers_in_full_during_the_move(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    tenant = "acme"
    slot = key_slot(tenant_index(tenant).encode())
    source = cluster.owner(slot)
    target = next(n for n in cluster.primaries if n is not source)
    seed(client, tenant, 0, 200)
    create_index(source.client(), tenant)
    wait_for("200 memories indexed", lambda: count(client, tenant) == 200)

    during: list[int] = []

    def while_migrating() -> None:
        # The source now redirects searches (ASK) to the target, which holds the copies.
        with pytest.raises(redis.exceptions.AskError, match=f"{slot} 127.0.0.1:{target.port}"):
            count(source.client(), tenant)
        during.append(count(client, tenant))  # redis-py follows the ASK
        seed(client, tenant, 200, 210)  # new keys of a migrating slot are written there too
        during.append(count(client, tenant))

    move_slot(cluster, slot, source, target, between=while_migrating)
    assert during == [200, 210]
    assert cluster.owner(slot) is target
    assert count(client, tenant) == 210
    assert count(target.client(), tenant) == 210
    with pytest.raises(redis.exceptions.MovedError, match=f"{slot} 127.0.0.1:{target.port}"):
        count(source.client(), tenant)

    # The target's replica got the index by replication, and its documents: searches may be
    # read there (READONLY), with the replica's replication lag as their staleness.
    index = cluster.primaries.index(target)
    replica = cluster.replicas[index].client()

    def replica_count() -> int:
        pipe = replica.pipeline(transaction=False)
        pipe.execute_command("READONLY")
        pipe.execute_command("FT.SEARCH", tenant_index(tenant), "note", "LIMIT", 0, 0)
        return int(pipe.execute()[1][b"total_results"])

    wait_for("the replica answers with 210", lambda: replica_count() == 210)
