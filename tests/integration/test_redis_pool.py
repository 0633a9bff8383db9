"""The Redis pool under the health watcher's reconnect: dropping idle connections while calls
take them must never hand a call a connection that is being closed."""

from __future__ import annotations

import asyncio

from aether_memory.app import Running
from aether_memory.stores.redis.pool import connect


async def test_dropping_idle_connections_under_load_fails_no_call(service: Running) -> None:
    client = connect(service.redis_url, decode_responses=False)
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def caller(n: int) -> None:
        while not stop.is_set():
            try:
                await client.set(f"pool-test:{n}", b"x", ex=60)
                assert await client.get(f"pool-test:{n}") == b"x"
            except Exception as error:  # every failure is recorded, none expected
                errors.append(error)
            await asyncio.sleep(0)

    async def dropper() -> None:
        while not stop.is_set():
            await client.connection_pool.disconnect_idle()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(caller(n)) for n in range(32)]
    tasks.append(asyncio.create_task(dropper()))
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*tasks)
    await client.aclose()
    assert errors == [], f"{len(errors)} calls failed, first: {errors[0]!r}"
