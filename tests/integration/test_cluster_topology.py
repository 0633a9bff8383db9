"""A replica added to a running cluster gets searches without anything failing first: the
service re-reads the topology every AETHER_REDIS_CLUSTER_REFRESH_S (redis-py alone re-reads it
only after a redirection or a connection error)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from aether_memory.app import serve
from tests.support.cluster import LocalCluster, local_cluster, searches_run
from tests.support.waiting import until

from .conftest import new_client
from .test_memory_service import search, store


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("topology"), primaries=1, replicas=1) as started:
        yield started


async def test_a_replica_added_later_gets_searches_after_the_next_refresh(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    settings = cluster.service_settings(
        tmp_path, redis_cluster_search_replicas=True, redis_cluster_refresh_s=0.5
    )
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as channel:
        client = new_client(channel, "topology")
        await store(client, "The spare key is under the blue pot.")
        assert await search(client, "where is the spare key") == [
            "The spare key is under the blue pot."
        ]
        added = cluster.add_replica(cluster.primaries[0])
        index = "aether-memories:{topology}"

        def holds() -> bool:
            reader = redis.Redis(port=added.port, single_connection_client=True)
            try:
                reader.execute_command("READONLY")
                return int(reader.ft(index).info()["num_docs"]) == 1
            except redis.exceptions.ResponseError:  # not loaded yet
                return False
            finally:
                reader.close()

        await until(holds, "the added replica holds the tenant's index", within_s=30)
        before = searches_run(added)

        async def reached() -> bool:
            assert await search(client, "where is the spare key") == [
                "The spare key is under the blue pot."
            ]
            return searches_run(added) > before

        await until(reached, "a search on the added replica", within_s=15, every_s=0.1)
        assert running.workers["topology"].restarts == 0
