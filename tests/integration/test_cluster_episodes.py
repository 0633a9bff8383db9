"""The episode log, its indexer's queue and the archive outbox on a real Redis Cluster
(3 primaries, redis-py's cluster client): tenants spread over every node, every append script in
its tenant's slot, the deployment-wide due sets and listings wherever their own slots live.

The search indexes are not part of this: with this Search module they are node-local, and the
service's indexes are still one per deployment (docs/architecture.md, "Beyond one Redis").
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import pytest_asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.cluster import key_slot

from aether_memory.domain.episodes import EpisodeDoc, EpisodeEntry
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.episode_index import RedisEpisodeIndex
from aether_memory.stores.redis.episode_log import EPISODE_STREAMS, RedisEpisodeLog
from aether_memory.stores.redis.keys import OUTBOX_DUE, keys_of
from aether_memory.stores.redis.outbox import RedisOutbox
from tests.support.cluster import LocalCluster, local_cluster


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
    tenants = [Tenant(f"c-{uuid.uuid4().hex[:8]}") for _ in range(12)]
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
    docs = [
        EpisodeDoc(t.tenant, e.stream_id, e.agent_id, e.session_id, e.type, e.outcome, 0.0)
        for t in taken
        for e in t.entries
    ]
    await index.write(
        docs,
        np.ones((len(docs), 4), dtype=np.float32),
        {t.stream: [e.stream_id for e in t.entries] for t in taken},
    )
    assert [await index.lag(t) for t in tenants] == [0] * 12
    assert await index.sweep() == 0
    written = [keys_of(d.tenant).episode_doc(d.stream_id) for d in docs]
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
