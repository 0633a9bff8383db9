"""The lease script against real Redis: one holder at a time, extended only by its holder,
released only by its holder, and free again once it lapses."""

from __future__ import annotations

import uuid

from aether_memory.app import Running
from aether_memory.stores.redis.lease import Lease
from tests.support.waiting import until


async def test_one_holder_at_a_time_until_release_or_lapse(service: Running) -> None:
    key = f"test:lease:{uuid.uuid4().hex}"
    first, second = Lease(service.redis, key, 300), Lease(service.redis, key, 300)
    assert await first.hold()
    assert not await second.hold()  # taken
    assert await first.hold()  # its holder extends it
    await second.release()  # not the holder's: nothing happens
    assert not await second.hold()
    await first.release()
    assert await second.hold()  # free at once after a clean release
    # Its holder stopped renewing: it lapses (300 ms), and then another may take it.
    await until(first.hold, "the lapsed lease is free again", within_s=5)
    assert 0 < await service.redis.pttl(key) <= 300
    await first.release()
