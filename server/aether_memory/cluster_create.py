"""`aether-memory cluster-create [--replicas N] HOST:PORT...`: form a Redis Cluster from fresh
nodes started with `cluster-enabled yes`, for the compose file's cluster profile and the tests.

`redis-cli --cluster create` does the same, but takes IP addresses only (CLUSTER MEET wants an
IP: redis/redis#11148), so a compose file cannot give it service names. This command resolves
the names, then forms the cluster the same way: the first `len(nodes) / (N + 1)` nodes are the
primaries and share the 16384 slots in equal ranges, each next group of N nodes replicates one
primary in turn.

It can be run again: every step first looks at what the nodes already hold and does only what is
missing, so a run stopped half-way resumes, and a run against a formed cluster (even one whose
primaries failed over since) changes nothing. A node whose slots or primary differ from the plan
(a cluster formed otherwise, or holding data) is refused, never reset.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

SLOTS = 16384


class Refused(Exception):
    """What the command will not do, said to the user."""


@dataclass
class Node:
    address: str  # as given, host:port
    ip: str
    port: int
    client: redis.Redis
    node_id: str = ""
    bus_port: int = 0

    def command(self, *args: str | int) -> Any:
        return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

    def text(self, *args: str) -> str:
        return str(self.command(*args).decode())

    def myself(self) -> list[str]:
        """This node's own line of CLUSTER NODES, split into its fields."""
        for line in self.text("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" in fields[2].split(","):
                return fields
        raise RuntimeError(f"{self.address}: CLUSTER NODES has no line for the node itself")

    def info(self) -> dict[str, str]:
        text = self.text("CLUSTER", "INFO")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def known(self) -> set[str]:
        lines = self.text("CLUSTER", "NODES").splitlines()
        return {line.split()[0] for line in lines if line}


def resolve(address: str) -> tuple[str, int]:
    """host:port to an IP address (IPv4 first) and port; [v6]:port is accepted too."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise Refused(f"{address!r} is not host:port")
    host = host.strip("[]")
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise Refused(f"{address}: cannot resolve {host!r}: {error}") from None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    return str(found[0][4][0]), int(port)


def wait_for(what: str, condition: Callable[[], bool], within_s: float = 30.0) -> None:
    """Poll `condition` (a node refusing the connection counts as not yet) until it holds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if condition():
                return
        except redis.exceptions.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise Refused(f"not within {within_s:.0f} s: {what}")
        time.sleep(0.1)


def plan(count: int, replicas: int) -> list[tuple[int, int]]:
    """The slot range of each primary, for `count` nodes with `replicas` replicas each."""
    if replicas < 0 or count == 0 or count % (replicas + 1):
        raise Refused(
            f"{count} nodes cannot be primaries with {replicas} replicas each: the count must "
            f"be a multiple of {replicas + 1}"
        )
    primaries = count // (replicas + 1)
    # As redis-cli splits them: each range ends at the rounded multiple of SLOTS / primaries.
    ranges, first = [], 0
    for i in range(1, primaries + 1):
        last = int(i * SLOTS / primaries - 1 + 0.5)
        ranges.append((first, last))
        first = last + 1
    return ranges


def formed(nodes: Sequence[Node]) -> bool:
    """Every node knows every other, every slot is served, and the cluster says ok."""
    ids = {node.node_id for node in nodes}
    for node in nodes:
        info = node.info()
        if info.get("cluster_state") != "ok" or int(info["cluster_slots_assigned"]) != SLOTS:
            return False
        if not ids <= node.known():
            return False
    return True


def _slots_of(fields: list[str]) -> list[str]:
    return [f for f in fields[8:] if not f.startswith("[")]  # [..] are slots being moved


def form(
    addresses: Sequence[str],
    replicas: int = 1,
    within_s: float = 60.0,
    say: Callable[[str], None] = print,
) -> list[Node]:
    """Form (or finish forming) the cluster; returns its nodes, primaries first."""
    ranges = plan(len(addresses), replicas)
    nodes: list[Node] = []
    for address in addresses:
        ip, port = resolve(address)
        nodes.append(Node(address, ip, port, redis.Redis(ip, port, socket_timeout=10)))
    for node in nodes:
        wait_for(f"{node.address} answers PING", node.client.ping, within_s)
        if not node.client.info("cluster").get("cluster_enabled"):
            raise Refused(f"{node.address} runs without cluster-enabled yes")
        fields = node.myself()
        node.node_id = fields[0]
        node.bus_port = int(fields[1].split("@")[1].split(",")[0])
    if len({node.node_id for node in nodes}) != len(nodes):
        raise Refused("two of the addresses are the same node")
    if formed(nodes):
        say(f"the cluster of {len(nodes)} nodes is formed already: nothing to do")
        return nodes
    primaries, followers = nodes[: len(ranges)], nodes[len(ranges) :]
    for node, (first, last) in zip(primaries, ranges, strict=True):
        held = _slots_of(node.myself())
        wanted = f"{first}-{last}"
        if not held:
            node.command("CLUSTER", "ADDSLOTSRANGE", first, last)
        elif held != [wanted]:
            raise Refused(
                f"{node.address} serves slots {' '.join(held)}, not {wanted}: a cluster formed "
                "otherwise; nothing was changed on it"
            )
    for node in nodes[1:]:
        if nodes[0].node_id not in node.known():
            node.command("CLUSTER", "MEET", nodes[0].ip, nodes[0].port, nodes[0].bus_port)
    ids = {node.node_id for node in nodes}
    wait_for("every node knows every other", lambda: all(ids <= n.known() for n in nodes), within_s)
    for i, node in enumerate(followers):
        primary = primaries[i // replicas]
        fields = node.myself()
        if fields[3] == primary.node_id:
            continue
        if _slots_of(fields) or fields[3] != "-":
            raise Refused(
                f"{node.address} is not a fresh node (it serves slots or replicates another "
                f"primary), so it cannot replicate {primary.address}; nothing was changed on it"
            )
        node.command("CLUSTER", "REPLICATE", primary.node_id)

    def ready() -> bool:
        if not formed(nodes):
            return False
        if not all(
            n.client.info("replication").get("master_link_status") == "up" for n in followers
        ):
            return False
        # Clients learn replicas from CLUSTER SLOTS, which lists one a little after its sync.
        rows = nodes[0].command("CLUSTER", "SLOTS")
        return all(len(row) - 3 == replicas for row in rows)

    wait_for("the cluster is ok and every replica in sync", ready, within_s)
    say(
        f"formed: {len(primaries)} primaries ("
        + ", ".join(f"{p.address} {a}-{b}" for p, (a, b) in zip(primaries, ranges, strict=True))
        + f"), {len(followers)} replicas"
    )
    return nodes


def run(args: argparse.Namespace) -> int:
    try:
        form(args.nodes, args.replicas, args.wait)
    except Refused as refusal:
        print(f"aether-memory cluster-create: {refusal}", file=sys.stderr)
        return 1
    return 0
