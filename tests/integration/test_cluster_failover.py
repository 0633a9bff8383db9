"""A primary of the Redis Cluster fails over to its replica while agents write: nothing that was
acknowledged is lost, the service keeps answering (UNAVAILABLE while a slot has no primary,
never INTERNAL), and the promoted replica serves the tenant's searches from its own copy of the
tenant's indexes.

First, with AETHER_REDIS_CLUSTER_SEARCH_REPLICAS, a service's searches run on the replicas of
the tenants' primaries; with AETHER_REDIS_WAIT_REPLICAS=1, a write is answered only once a
replica holds it. Then two ways a primary goes: a manual `CLUSTER FAILOVER` on its
replica (the replica catches up, then takes over), and the primary killed (the replica is
elected once the others see the primary gone, after the node timeout of 2 s). The cluster has
3 primaries with a replica each; the service runs with one index per tenant and the archive on.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
import pytest_asyncio
import redis.exceptions
from aether.memory.v1 import memory_service_pb2
from redis.cluster import key_slot

from aether_memory.app import Running, serve
from aether_memory.domain.tenant import Tenant
from aether_memory.stores.redis.keys import keys_of
from tests.support.cluster import (
    LocalCluster,
    Node,
    archived_service,
    local_cluster,
    searches_run,
)
from tests.support.waiting import until

from .conftest import Client, failure, new_client
from .test_episode_service import episode, list_all, record
from .test_memory_service import search, store

S = memory_service_pb2
CALL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("failover"), primaries=3, replicas=1) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    async with archived_service(cluster, tmp_path_factory.mktemp("failover-service")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def searching_replicas(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = cluster.service_settings(
        tmp_path_factory.mktemp("replica-searches"), redis_cluster_search_replicas=True
    )
    async with serve(settings) as running:
        yield running


async def test_searches_run_on_the_replicas_once_they_hold_the_tenant(
    searching_replicas: Running, cluster: LocalCluster
) -> None:
    """Runs first: the failovers below swap primaries and replicas. A search the replica
    cannot answer yet (the tenant's index or memory not replicated: a loaded machine lags)
    goes to the primary, by design; so the searches counted here start once every replica
    holds its tenant's index and memory."""
    tenants = cluster.spread_tenants(3, "rs")
    async with grpc.aio.insecure_channel(searching_replicas.address) as channel:
        clients = [new_client(channel, t) for t in tenants]
        stored = {
            c.tenant: await store(c, f"{c.tenant} keeps the key under the pot.") for c in clients
        }
        for tenant, memory in stored.items():
            keys = keys_of(Tenant(tenant))
            primary = serving(cluster, key_slot(keys.memory("").encode()))
            replica = redis.Redis(
                port=replica_of(cluster, primary).port, single_connection_client=True
            )
            replica.execute_command("READONLY")
            index = f"aether-memories:{{{tenant}}}"

            def holds(
                replica: redis.Redis = replica,
                key: str = keys.memory(memory.id),
                index: str = index,
            ) -> bool:
                try:
                    return (
                        bool(replica.exists(key)) and int(replica.ft(index).info()["num_docs"]) == 1
                    )
                except redis.exceptions.ResponseError:  # the index is not there yet
                    return False

            await until(holds, f"{tenant}'s replica holds its index and memory")
            replica.close()
        before = {n.port: searches_run(n) for n in cluster.primaries + cluster.replicas}
        for c in clients:
            assert await search(c, "where is the key") == [
                f"{c.tenant} keeps the key under the pot."
            ]
    on_replicas = {n.port: searches_run(n) - before[n.port] for n in cluster.replicas}
    on_primaries = sum(searches_run(n) - before[n.port] for n in cluster.primaries)
    assert on_primaries == 0
    # Every replica served its own primary's tenant: a keyword and a vector query at least.
    assert all(count >= 2 for count in on_replicas.values()), on_replicas


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def waiting_for_replicas(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    settings = cluster.service_settings(
        tmp_path_factory.mktemp("replica-wait"), redis_wait_replicas=1, redis_wait_timeout_ms=300
    )
    async with serve(settings) as running:
        yield running


async def test_a_write_is_answered_once_a_replica_holds_it_and_refused_when_none_does(
    waiting_for_replicas: Running, cluster: LocalCluster
) -> None:
    """Runs before the failovers. With AETHER_REDIS_WAIT_REPLICAS=1 the replica holds a memory
    when its store is answered; with the replica stopped, a store and an episode are refused
    as NOT_REPLICATED (UNAVAILABLE), and the same store goes through once it is back."""
    tenant = cluster.spread_tenants(3, "wait")[0]
    keys = keys_of(Tenant(tenant))
    primary = serving(cluster, key_slot(keys.memory("").encode()))
    replica = replica_of(cluster, primary)
    reader = redis.Redis(port=replica.port, single_connection_client=True)
    reader.execute_command("READONLY")
    async with grpc.aio.insecure_channel(waiting_for_replicas.address) as channel:
        client = new_client(channel, tenant)
        first = await store(client, "The first note, held by the replica when answered.")
        assert reader.exists(keys.memory(first.id))
        replica.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await store(client, "The second note, written while the replica sleeps.")
            acks = await record(client, [episode("while-asleep")])
        finally:
            replica.process.send_signal(signal.SIGCONT)
        answer = failure(refused.value)
        assert (answer.code, answer.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_REPLICATED")
        assert acks[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        second = await store(client, "The second note, written while the replica sleeps.")
        assert reader.exists(keys.memory(second.id))
        listed = await client.memory.ListMemories(
            S.ListMemoriesRequest(agent_id="agent-1"), metadata=client.md
        )
        assert sorted(m.content for m in listed.memories) == [
            "The first note, held by the replica when answered.",
            "The second note, written while the replica sleeps.",
        ]
    reader.close()


def serving(cluster: LocalCluster, slot: int) -> int:
    """The port of the node that serves `slot` now, as any live node tells it."""
    for node in cluster.primaries + cluster.replicas:
        if node.process.poll() is not None:
            continue
        try:
            reply = node.client().execute_command("CLUSTER", "SLOTS")
        except redis.exceptions.RedisError:  # a node that is going away
            continue
        for start, end, primary, *_ in reply:
            if start <= slot <= end:
                return int(primary[1])
    raise LookupError(f"no live node serves slot {slot}")


def wait_served_by(cluster: LocalCluster, slot: int, port: int, within_s: float) -> None:
    """Wait until the node on `port` serves `slot` (no node may, while an election runs)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if serving(cluster, slot) == port:
                return
        except LookupError:
            pass
        assert time.monotonic() < deadline, f"node {port} did not take slot {slot} over"
        time.sleep(0.05)


def replica_of(cluster: LocalCluster, port: int) -> Node:
    for node in cluster.replicas + cluster.primaries:
        info = node.client().info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
            return node
    raise LookupError(f"no replica follows {port}")


@dataclass
class Writer:
    """Stores memories and records episodes for one tenant until stopped, retrying a call
    that failed with the same content (both are idempotent: content dedup, event ids)."""

    client: Client
    memories: dict[str, str] = field(default_factory=dict)  # acknowledged id -> content
    episodes: list[str] = field(default_factory=list)  # acknowledged event ids
    refused: list[grpc.StatusCode] = field(default_factory=list)
    slowest_s: float = 0.0  # the longest store and record that went through

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            content = f"{self.client.tenant} wrote note number {n} during the failover"
            started = time.monotonic()
            try:
                memory = await asyncio.wait_for(store(self.client, content), CALL_TIMEOUT_S)
                acks = await asyncio.wait_for(
                    record(self.client, [episode(f"ev-{n}")]), CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                self.refused.append(error.code())
                await asyncio.sleep(0.05)
                continue
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            self.memories[memory.id] = content
            if acks and acks[0].WhichOneof("result") == "written":
                self.episodes.append(f"ev-{n}")
            else:
                self.refused.append(grpc.StatusCode.UNAVAILABLE)
                continue
            n += 1


async def writes_through(
    running: Running, cluster: LocalCluster, tenants: list[str], fail_over: object
) -> list[Writer]:
    """Writers on every tenant; `fail_over()` mid-stream; more writes once the slot is
    served again; then every acknowledged write must be there."""
    async with grpc.aio.insecure_channel(running.address) as channel:
        writers = [Writer(new_client(channel, t)) for t in tenants]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in writers]
        await until(lambda: all(len(w.memories) >= 5 for w in writers), "writes before")
        counts = [len(w.memories) for w in writers]
        await asyncio.to_thread(fail_over)  # type: ignore[arg-type]
        await until(
            lambda: all(len(w.memories) >= c + 5 for w, c in zip(writers, counts, strict=True)),
            "writes after the failover",
            within_s=60,
        )
        stop.set()
        await asyncio.gather(*tasks)

        for w in writers:
            assert set(w.refused) <= {grpc.StatusCode.UNAVAILABLE}, w.refused
            listed = await w.client.memory.ListMemories(
                S.ListMemoriesRequest(agent_id="agent-1", page_size=1000), metadata=w.client.md
            )
            assert {m.id: m.content for m in listed.memories} == w.memories
            last = w.memories[next(reversed(w.memories))]
            assert (await search(w.client, last))[0] == last
            assert [e.event_id for e in await list_all(w.client)] == w.episodes
    return writers


async def test_a_manual_failover_loses_nothing_and_the_replica_serves_searches(
    service: Running, cluster: LocalCluster
) -> None:
    tenants = cluster.spread_tenants(3, "fo")
    slot = key_slot(keys_of(Tenant(tenants[0])).memory("").encode())
    old = serving(cluster, slot)
    replica = replica_of(cluster, old)

    def fail_over() -> None:
        replica.client().execute_command("CLUSTER", "FAILOVER")
        wait_served_by(cluster, slot, replica.port, within_s=30)

    await writes_through(service, cluster, tenants, fail_over)
    assert serving(cluster, slot) == replica.port


async def test_a_killed_primary_loses_nothing_acknowledged_and_calls_answer_unavailable(
    service: Running, cluster: LocalCluster
) -> None:
    tenants = cluster.spread_tenants(3, "kill")
    slot = key_slot(keys_of(Tenant(tenants[0])).memory("").encode())
    old = serving(cluster, slot)
    replica = replica_of(cluster, old)
    victim = next(n for n in cluster.primaries + cluster.replicas if n.port == old)

    def kill() -> None:
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        wait_served_by(cluster, slot, replica.port, within_s=60)

    writers = await writes_through(service, cluster, tenants, kill)
    # The tenant on the killed primary waited for the election (at least the 2 s node
    # timeout): its calls meanwhile were refused as UNAVAILABLE (a retry then went through),
    # never INTERNAL, or rode it out in redis-py's own retries (10, backing off up to 1 s each).
    crossed = writers[0].refused or writers[0].slowest_s >= 1.0
    assert crossed, "no call hit the gap between the kill and the election"
