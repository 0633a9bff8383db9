"""`aether-memory cluster-create`, the command the compose file's cluster profile runs to form its
Redis Cluster: by host name, resumable, a no-op on a formed cluster, and refusing nodes that do not
fit its plan without touching them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from aether_memory.cli import main
from aether_memory.cluster_create import SLOTS, Refused, form, plan
from aether_memory.stores.redis.embedded import redis_command
from tests.support.cluster import Node, fresh_nodes
from tests.support.servers import free_port
from tests.support.waiting import until


def slot_map(node: Node) -> list[tuple[int, int, int, list[int]]]:
    """(first, last, primary's port, replicas' ports) for every range, in slot order."""
    rows = node.client().execute_command("CLUSTER", "SLOTS")
    return sorted(
        (int(row[0]), int(row[1]), int(row[2][1]), sorted(int(r[1]) for r in row[3:]))
        for row in rows
    )


def topology(node: Node) -> set[tuple[str, ...]]:
    """CLUSTER NODES without its clocks: id, address, flags, primary, config epoch, slots."""
    lines = node.client().execute_command("CLUSTER", "NODES").decode().splitlines()
    return {(*f[:4], f[6], *f[8:]) for f in (line.split() for line in lines)}


async def test_it_forms_a_cluster_from_host_names_and_a_second_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["p0", "p1", "p2", "r0", "r1", "r2"]
    with fresh_nodes(tmp_path, names) as nodes:
        addresses = [f"localhost:{node.port}" for node in nodes]  # names, not IPs
        assert main(["cluster-create", "--replicas", "1", *addresses]) == 0
        assert "formed: 3 primaries" in capsys.readouterr().out
        ports = [node.port for node in nodes]
        assert slot_map(nodes[0]) == [
            (0, 5460, ports[0], [ports[3]]),
            (5461, 10922, ports[1], [ports[4]]),
            (10923, SLOTS - 1, ports[2], [ports[5]]),
        ]
        for node in nodes:
            assert node.client().cluster("INFO")["cluster_state"] == "ok"
        before = topology(nodes[0])

        assert main(["cluster-create", "--replicas", "1", *addresses]) == 0
        assert "formed already: nothing to do" in capsys.readouterr().out
        assert topology(nodes[0]) == before

        # After a failover the first node is a replica: still a formed cluster, left as it is.
        nodes[3].client().execute_command("CLUSTER", "FAILOVER")
        await until(
            lambda: slot_map(nodes[0])[0][2] == ports[3], "the replica of p0 took over", within_s=30
        )
        assert main(["cluster-create", "--replicas", "1", *addresses]) == 0
        assert "formed already" in capsys.readouterr().out
        assert slot_map(nodes[0])[0] == (0, 5460, ports[3], [ports[0]])


def test_a_run_stopped_half_way_is_finished(tmp_path: Path) -> None:
    with fresh_nodes(tmp_path, ["a", "b"]) as nodes:
        # The first primary got its slots, then the run stopped.
        nodes[0].client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, SLOTS // 2 - 1)
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        assert main(["cluster-create", "--replicas", "0", *addresses]) == 0
        assert slot_map(nodes[1]) == [
            (0, SLOTS // 2 - 1, nodes[0].port, []),
            (SLOTS // 2, SLOTS - 1, nodes[1].port, []),
        ]


def test_nodes_that_do_not_fit_the_plan_are_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fresh_nodes(tmp_path, ["a", "b", "c"]) as nodes:
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        # Three nodes cannot be primaries with one replica each.
        assert main(["cluster-create", "--replicas", "1", *addresses]) == 1
        assert "must be a multiple of 2" in capsys.readouterr().err
        # A node serving other slots than the plan's: a cluster formed otherwise.
        nodes[1].client().execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 99)
        assert main(["cluster-create", "--replicas", "0", *addresses]) == 1
        assert "serves slots 0-99, not 5461-10922" in capsys.readouterr().err
        for node in nodes:  # nothing was met
            assert len(node.client().execute_command("CLUSTER", "NODES").splitlines()) == 1
        # The same node twice.
        with pytest.raises(Refused, match="the same node"):
            form([addresses[0], f"localhost:{nodes[0].port}"], replicas=0, within_s=5)


def test_a_node_without_cluster_mode_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    plain = subprocess.Popen(redis_command(tmp_path, port, "everysec"), stdout=subprocess.DEVNULL)
    try:  # the command waits for it to answer
        assert main(["cluster-create", "--replicas", "0", f"127.0.0.1:{port}"]) == 1
        assert "runs without cluster-enabled yes" in capsys.readouterr().err
    finally:
        plain.terminate()
        plain.wait(10)


def test_the_plan_splits_the_slots_evenly() -> None:
    assert plan(6, 1) == [(0, 5460), (5461, 10922), (10923, 16383)]
    assert plan(1, 0) == [(0, 16383)]
    for bad in [(0, 0), (3, 1), (4, -1)]:
        with pytest.raises(Refused):
            plan(*bad)
