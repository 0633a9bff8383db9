"""A real local Redis Cluster for tests and benchmarks: primaries and replicas on loopback, each
the same `redis-server` with the same Search, JSON and Bloom modules the embedded mode runs.

The slots are split evenly over the primaries; each replica follows one primary. Nodes run
without persistence (a test's cluster lives for the test).
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.cluster import key_slot

from aether_memory.app import Running, serve
from aether_memory.cluster_create import form, wait_for
from aether_memory.settings import Settings
from aether_memory.stores.redis.embedded import redis_command

from .servers import FerretDB, free_port


@dataclass
class Node:
    port: int
    bus_port: int
    process: subprocess.Popen[bytes]
    node_id: str = ""

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=30)


@dataclass
class LocalCluster:
    nodes: list[Node]  # as started: the primaries first, then the replicas (stopped at the end)
    primary_count: int
    base: Path = Path(".")  # where each node's directory is made

    @property
    def primaries(self) -> list[Node]:
        return self.nodes[: self.primary_count]

    @property
    def replicas(self) -> list[Node]:
        return self.nodes[self.primary_count :]

    def add_replica(self, primary: Node) -> Node:
        """Start one more node and make it a replica of `primary`; back once it is in sync and
        CLUSTER SLOTS lists it (as clients learn replicas)."""
        node = _start(self.base, f"replica-added-{len(self.replicas)}")
        self.nodes.append(node)  # a replica, stopped with the others
        wait_for(f"port {node.port} answers", node.client().ping)
        node.node_id = node.client().execute_command("CLUSTER", "MYID").decode()
        first = self.primaries[0]
        node.client().execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
        wait_for(
            f"{node.port} knows {primary.port}",
            lambda: primary.node_id.encode() in node.client().execute_command("CLUSTER", "NODES"),
        )
        node.client().execute_command("CLUSTER", "REPLICATE", primary.node_id)
        wait_for(
            f"{node.port} replicates {primary.port} and CLUSTER SLOTS lists it",
            lambda: (
                node.client().info("replication").get("master_link_status") == "up"
                and any(
                    int(listed[1]) == node.port
                    for row in first.client().execute_command("CLUSTER", "SLOTS")
                    for listed in row[3:]
                )
            ),
        )
        return node

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.primaries + self.replicas]

    def service_settings(self, data_dir: Path | None = None, **more: Any) -> Settings:
        """A service on this cluster (one index per tenant, its first node as the URL, no
        maintenance tick during a test)."""
        host, port = self.startup_nodes[0]
        return Settings(
            port=0,
            data_dir=data_dir or Path(".aether/data"),
            redis_url=f"redis://{host}:{port}",
            redis_cluster=True,
            index_layout="tenant",
            maintenance_interval_s=3600,
            grace_s=1.0,
            **more,
        )

    def spread_tenants(self, n: int, prefix: str = "t") -> list[str]:
        """`n` new tenant names (n >= the number of primaries), every primary holding at least
        one: random names leave a node out now and then."""
        assert n >= len(self.primaries)
        while True:
            tenants = [f"{prefix}-{uuid.uuid4().hex[:8]}" for _ in range(n)]
            held = {self.owner(key_slot(("{" + t + "}").encode())).port for t in tenants}
            if len(held) == len(self.primaries):
                return tenants

    def owner(self, slot: int) -> Node:
        """The primary serving `slot` now (asked of the cluster, not assumed)."""
        for start, end, primary, *_ in (
            self.primaries[0].client().execute_command("CLUSTER", "SLOTS")
        ):
            if start <= slot <= end:
                port = int(primary[1])  # a replica after a failover
                return next(n for n in self.primaries + self.replicas if n.port == port)
        raise LookupError(f"no node serves slot {slot}")


def searches_run(node: Node) -> int:
    """How many FT.SEARCH commands a node has run since it started."""
    stats = node.client().info("commandstats")
    return int(stats.get("cmdstat_FT.SEARCH", {}).get("calls", 0))


def _start(base: Path, name: str) -> Node:
    directory = base / name
    directory.mkdir(parents=True)
    port, bus = free_port(), free_port()
    command = [
        *redis_command(directory, port, "everysec"),
        "--appendonly", "no",
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus),
        "--cluster-config-file", str(directory / "nodes.conf"),
        "--cluster-node-timeout", "2000",
    ]  # fmt: skip
    log = (directory / "redis.log").open("wb")
    return Node(port, bus, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))


@contextlib.contextmanager
def fresh_nodes(base: Path, names: list[str]) -> Iterator[list[Node]]:
    """Start one cluster-enabled node per name, none of them in a cluster yet; stop them on
    exit (the nodes a test adds to the list too)."""
    nodes: list[Node] = []
    try:
        for name in names:
            nodes.append(_start(base, name))
        yield nodes
    finally:
        for node in nodes:
            node.process.terminate()
        for node in nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()


@contextlib.contextmanager
def local_cluster(base: Path, primaries: int = 3, replicas: int = 1) -> Iterator[LocalCluster]:
    """Start `primaries` primaries with `replicas` replicas each; stop them all on exit."""
    names = [f"primary-{i}" for i in range(primaries)]
    names += [f"replica-{i}-{r}" for i in range(primaries) for r in range(replicas)]
    with fresh_nodes(base, names) as nodes:
        cluster = LocalCluster(nodes, primaries, base=base)
        # The command the compose file's cluster profile runs: it waits for every node, splits
        # the slots evenly and attaches each replica to its primary.
        formed = form([f"127.0.0.1:{node.port}" for node in nodes], replicas, say=lambda _: None)
        for node, made in zip(nodes, formed, strict=True):
            node.node_id = made.node_id
        yield cluster


@contextlib.asynccontextmanager
async def archived_service(cluster: LocalCluster, base: Path) -> AsyncIterator[Running]:
    """The service on `cluster`, with the archive on (a FerretDB of its own under `base`)."""
    (base / "ferretdb").mkdir(parents=True)
    ferret = FerretDB(base / "ferretdb")
    ferret.start()
    settings = cluster.service_settings(
        base / "service", mongo_url=ferret.url, archive_write_concern="1"
    )
    try:
        async with serve(settings) as running:
            yield running
    finally:
        ferret.remove()
