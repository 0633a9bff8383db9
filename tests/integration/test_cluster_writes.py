"""Writes on a real Redis Cluster (3 primaries, redis-py's cluster client), tenants spread over
every node: the episode log, its indexer's queue and the archive outbox (every script in its
tenant's slot, the deployment-wide due sets and listings wherever their own slots live), the
documents (working memory, checkpoints, agent state) with their WATCH/MULTI transactions, the
memory store's writes and reads by id, and API keys.

Searches, with one index per tenant on the node that holds it, run through the service in
test_tenant_indexes.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import pytest_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import key_slot

from aether_memory.domain.episodes import EpisodeEntry
from aether_memory.domain.memory import Memory
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.api_keys import ApiKeys, Role
from aether_memory.stores.redis.documents import DocumentStore
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.episode_log import EPISODE_STREAMS, RedisEpisodeLog
from aether_memory.stores.redis.keys import OUTBOX_DUE, keys_of
from aether_memory.stores.redis.memory_store import RedisMemoryStore
from aether_memory.stores.redis.outbox import RedisOutbox
from tests.support.cluster import LocalCluster, local_cluster

from .test_episode_index_queue import index_all


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster"), primaries=3, replicas=0) as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    connected = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes])
    await connected.initialize()
    yield connected
    await connected.aclose()


async def test_appends_for_tenants_on_every_node_are_marked_indexed_and_archived(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    tenants = [Tenant(t) for t in cluster.spread_tenants(12, "c")]
    owners = {cluster.owner(key_slot(EPISODE_STREAMS.stream_of(t).encode())).port for t in tenants}
    assert len(owners) == 3  # the test means something only if every node holds some

    log = RedisEpisodeLog(client, max_len=1000, archived=True)
    index = RedisEpisodeIndex(client, index_name="unused", dimension=4, batch=10)

    def batch(prefix: str) -> list[EpisodeEntry]:
        return [
            EpisodeEntry(f"{prefix}-{i}", b"", "agent", "", "tool_call", "ok") for i in range(3)
        ]

    first = [await log.append(t, batch("a")) for t in tenants]
    # Appends that share a group commit, then one seen before: its original position comes back.
    await client.script_flush()  # every node forgets the script: it loads itself again
    again = [await log.append(t, batch("a")[2:] + batch("b")) for t in tenants]
    for before, after in zip(first, again, strict=True):
        assert after[0].duplicate and after[0].stream_id == before[2].stream_id
        assert not any(a.duplicate for a in after[1:])

    streams = {EPISODE_STREAMS.stream_of(t) for t in tenants}
    assert await client.zcard(OUTBOX_DUE) >= 12
    assert streams <= set(await index.due(block_ms=0))
    taken = await index.read("indexer", sorted(streams))
    assert sorted(len(t.entries) for t in taken) == [6] * 12
    await index_all(index, taken)
    assert [await index.lag(t) for t in tenants] == [0] * 12
    assert await index.sweep() == 0
    written = [keys_of(t.tenant).episode_doc(e.stream_id) for t in taken for e in t.entries]
    assert sum([await client.exists(key) for key in written]) == 72
    outboxes = [await client.xlen(keys_of(t).outbox()) for t in tenants]
    assert outboxes == [6] * 12  # the archive's entries, one per new episode

    # The archiver's side of the outboxes: what it reads and confirms (MongoDB is not needed
    # to show the Redis half works on a cluster).
    outbox = RedisOutbox(client, batch=50)
    due = await outbox.due(block_ms=0)
    assert {keys_of(t).outbox() for t in tenants} <= set(due)
    found = await outbox.read(due)
    assert sum(len(entries) for _, entries, _ in found) >= 72
    await outbox.confirm({stream: [e.stream_id for e in entries] for stream, entries, _ in found})
    assert [await client.xlen(keys_of(t).outbox()) for t in tenants] == [0] * 12


async def test_working_memory_checkpoints_and_agent_state_run_on_the_cluster(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    """Documents are written under WATCH/MULTI (redis-py's cluster transactions, one slot each)
    and by scripts, with their outbox entries in the same transaction."""
    documents = DocumentStore(
        client,
        working_ttl_s=3600,
        checkpoint_ttl_s=3600,
        max_messages=100,
        max_checkpoints=5,
        max_session_bytes=1 << 20,
        archived=True,
    )
    tenants = [Tenant(t) for t in cluster.spread_tenants(9, "d")]
    owners = {cluster.owner(key_slot(keys_of(t).session("s").encode())).port for t in tenants}
    assert len(owners) == 3
    for t in tenants:
        message = {"role": "user", "content": f"hello from {t.name}", "metadata": {}}
        put = await documents.put_session(
            t, {"session_id": "s", "agent_id": "a", "messages": [message], "state": {}}, None
        )
        assert put["revision"] == 1
        await documents.create_checkpoint(t, "s", "before")
        later = {"role": "user", "content": "later", "metadata": {}}
        appended = await documents.append_session(t, "s", "a", [later])
        assert [m["content"] for m in appended["messages"]] == [message["content"], "later"]
        restored = await documents.restore_checkpoint(t, "s", 1)
        assert [m["content"] for m in restored["messages"]] == [message["content"]]
        state = await documents.update_agent_state(t, "a", {"goal": t.name}, None)
        assert state["revision"] == 1
        assert (await documents.get_agent_state(t, "a")) == state
    # Each tenant's archive entries are in its own outbox: the checkpoint and the agent state.
    assert [await client.xlen(keys_of(t).outbox()) for t in tenants] == [2] * 9


async def test_memories_are_stored_linked_read_and_deleted_on_the_cluster(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    """The memory store's writes: the store script with its outbox mark, links back to related
    memories, reads by id, and the delete transaction (searches: test_tenant_indexes.py)."""
    store = RedisMemoryStore(client, index_name="unused", dimension=4, archived=True)
    tenants = [Tenant(t) for t in cluster.spread_tenants(9, "m")]
    owners = {cluster.owner(key_slot(keys_of(t).memory("x").encode())).port for t in tenants}
    assert len(owners) == 3
    vector = np.ones(4, dtype=np.float32) / 2
    for t in tenants:
        first = Memory(id=f"{t.name}-1", agent_id="a", content="the first", embedding=vector)
        assert await store.store(t, first, "fp-1", None) == first.id
        second = Memory(
            id=f"{t.name}-2",
            agent_id="a",
            content="the second",
            related_ids=[first.id],
            embedding=vector,
        )
        assert await store.store(t, second, "fp-2", None) == second.id
        same = Memory(id=f"{t.name}-3", agent_id="a", content="the first", embedding=vector)
        assert await store.store(t, same, "fp-1", None) == first.id  # deduplicated
        held = await store.get_many(t, [first.id, second.id, same.id])
        assert sorted(held) == [first.id, second.id]
        assert held[first.id].content == "the first"
        assert await client.smembers(keys_of(t).links(first.id)) == {second.id.encode()}
        await store.delete(t, [(held[second.id], "fp-2")])
        assert sorted(await store.get_many(t, [first.id, second.id])) == [first.id]
        assert await client.smembers(keys_of(t).links(first.id)) == set()
    # Two stores and one delete per tenant, each in its own tenant's outbox.
    assert [await client.xlen(keys_of(t).outbox()) for t in tenants] == [3] * 9


async def test_the_maintenance_walk_visits_every_primary(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    """The walk behind maintenance (and re-embedding) goes through each primary's keyspace in
    turn; its cursor is 0 only at the start and once every primary was walked."""
    store = RedisMemoryStore(client, index_name="unused", dimension=4)
    tenants = [Tenant(t) for t in cluster.spread_tenants(9, "w")]
    vector = np.ones(4, dtype=np.float32) / 2
    stored = set()
    for t in tenants:
        for i in range(5):
            memory = Memory(id=f"{t.name}-{i}", agent_id="a", content=f"walk {i}", embedding=vector)
            await store.store(t, memory, f"fp-{i}", None)
            stored.add((t.name, memory.id))
    seen: set[tuple[str, str]] = set()
    cursor, steps = 0, 0
    while True:
        cursor, found = await store.scan(cursor, 7)
        seen |= {(t.name, m.id) for t, m in found}
        steps += 1
        if cursor == 0:
            break
    assert stored <= seen
    assert steps >= 3  # at least one step per primary


async def test_api_keys_are_created_listed_used_and_revoked_on_the_cluster(
    cluster: LocalCluster, client: RedisCluster
) -> None:
    """A key's record (found by its id) and its tenant's listing live in two slots: no
    transaction spans them (a cluster refuses one), and each step leaves no usable key that
    the listing hides."""
    keys = ApiKeys(client)
    made = {
        t: await keys.create(t, Role.WRITE, f"key of {t}") for t in cluster.spread_tenants(3, "k")
    }
    for tenant, (key_id, key) in made.items():
        assert [p.key_id for p in await keys.list(tenant)] == [key_id]
        principal = await keys.authenticate(key)
        assert principal is not None and principal.tenant == tenant
    tenant, (key_id, key) = next(iter(made.items()))
    assert await keys.revoke(key_id)
    assert await keys.authenticate(key) is None and await keys.list(tenant) == []
    assert not await keys.revoke(key_id)
