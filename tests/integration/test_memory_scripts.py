"""Each Lua script of the memory and document stores, held to the contract its comment states,
called directly on the real Redis (with its modules) the service runs on. The scripts' callers
are tested through the API elsewhere; these pin what each script itself promises, case by case,
so a change to one cannot hide behind the code that calls it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis.exceptions

from aether_memory.app import Running
from aether_memory.stores.redis import documents
from aether_memory.stores.redis import memory_store as ms
from aether_memory.stores.redis.keys import TenantKeys
from aether_memory.stores.redis.vector_slots import _PUT_SCRIPT

OUTBOX = "test:outbox:{scripts}"


@pytest.fixture
def keys() -> TenantKeys:
    return TenantKeys(f"lua-{uuid.uuid4().hex[:8]}")


def script(running: Running, text: str) -> Any:
    return running.redis.register_script(text)


async def hash_of(running: Running, key: str) -> dict[str, str]:
    raw = await running.redis.hgetall(key)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def store(
    running: Running,
    keys: TenantKeys,
    memory_id: str,
    fields: dict[str, str],
    *,
    fingerprint: str = "fp",
    links: tuple[str, ...] = (),
    ttl: int = 0,
    session: tuple[str, str] | None = None,
    outbox: dict[str, str] | None = None,
) -> str:
    flat = [x for pair in fields.items() for x in pair]
    args = [memory_id, str(ttl), keys.memory(""), str(len(flat)), str(len(links)), "2048"]
    args += flat + list(links) + [x for pair in (outbox or {}).items() for x in pair]
    script_keys = [keys.memory(memory_id), keys.dedup(fingerprint), keys.links(memory_id), OUTBOX]
    if session:
        script_keys.append(keys.session_tail(*session))
    winner = await script(running, ms._STORE_SCRIPT)(keys=script_keys, args=args)
    return winner.decode() if isinstance(winner, bytes) else str(winner)


async def test_store_writes_the_hash_dedup_key_links_and_outbox_entry(
    service: Running, keys: TenantKeys
) -> None:
    r = service.redis
    await r.delete(OUTBOX)
    winner = await store(
        service,
        keys,
        "m1",
        {"content": "Ana lives in Lisbon", "update_time": "1.0"},
        links=("m0", "m9"),
        ttl=100,
        outbox={"op": "put", "id": "m1"},
    )
    assert winner == "m1"
    assert (await hash_of(service, keys.memory("m1")))["content"] == "Ana lives in Lisbon"
    assert await r.get(keys.dedup("fp")) == b"m1"
    assert await r.smembers(keys.links("m1")) == {b"m0", b"m9"}
    assert 0 < await r.ttl(keys.memory("m1")) <= 100 and 0 < await r.ttl(keys.dedup("fp")) <= 100
    entries = await r.xrange(OUTBOX)
    assert [e[1] for e in entries] == [{b"op": b"put", b"id": b"m1"}]
    await r.delete(OUTBOX)


async def test_store_returns_the_holder_of_identical_content_and_writes_nothing(
    service: Running, keys: TenantKeys
) -> None:
    await store(service, keys, "first", {"content": "same", "update_time": "1.0"})
    winner = await store(
        service, keys, "second", {"content": "same", "update_time": "2.0"}, outbox={"op": "put"}
    )
    assert winner == "first"
    assert not await service.redis.exists(keys.memory("second"))
    assert await service.redis.xlen(OUTBOX) == 0


async def test_store_takes_over_a_dedup_key_whose_memory_is_gone(
    service: Running, keys: TenantKeys
) -> None:
    await service.redis.set(keys.dedup("fp"), "vanished")
    assert await store(service, keys, "m2", {"content": "x", "update_time": "1.0"}) == "m2"
    assert await service.redis.get(keys.dedup("fp")) == b"m2"


async def test_store_into_a_session_takes_the_next_position_and_the_lead(
    service: Running, keys: TenantKeys
) -> None:
    session = ("agent", "s1")
    tail = keys.session_tail(*session)
    await store(
        service,
        keys,
        "t1",
        {"content": "What did you do?"},
        fingerprint="a",
        session=session,
        ttl=50,
    )
    await store(
        service,
        keys,
        "t2",
        {"content": "I went hiking."},
        fingerprint="b",
        session=session,
        ttl=500,
    )
    await store(
        service,
        keys,
        "t3",
        {"content": "Nice!", "context": "given by the caller"},
        fingerprint="c",
        session=session,
        ttl=10,
    )
    t1, t2, t3 = [await hash_of(service, keys.memory(i)) for i in ("t1", "t2", "t3")]
    assert (t1["seq"], t2["seq"], t3["seq"]) == ("1", "2", "3")
    assert "lead" not in t1 and t2["lead"] == "What did you do?"
    assert "lead" not in t3  # a memory with its own context takes no lead
    assert (await hash_of(service, tail))["id"] == "t3"
    # The tail lives as long as the longest-lived memory that set it (500 s, not t3's 10 s).
    assert 10 < await service.redis.ttl(tail) <= 500
    # A memory that never expires makes the tail permanent.
    await store(service, keys, "t4", {"content": "Bye."}, fingerprint="d", session=session)
    assert await service.redis.ttl(tail) == -1


async def test_store_takes_no_lead_past_its_byte_limit(service: Running, keys: TenantKeys) -> None:
    session = ("agent", "s2")
    await store(service, keys, "long", {"content": "x" * 2049}, fingerprint="a", session=session)
    await store(service, keys, "after", {"content": "short"}, fingerprint="b", session=session)
    assert "lead" not in await hash_of(service, keys.memory("after"))


async def test_retier_moves_an_unchanged_memory_and_refuses_a_changed_one(
    service: Running, keys: TenantKeys
) -> None:
    r = service.redis
    await store(service, keys, "m", {"tier": "short_term", "update_time": "1.5"}, ttl=100)
    await r.hset(keys.access("m"), "count", 3)
    retier = script(service, ms._RETIER_SCRIPT)
    script_keys = [keys.memory("m"), keys.dedup("fp"), keys.access("m"), OUTBOX]
    changed = await retier(keys=script_keys, args=["1.4", "long_term", "2.0", "", "0"])
    assert changed == 0 and (await hash_of(service, keys.memory("m")))["tier"] == "short_term"
    done = await retier(keys=script_keys, args=["1.5", "long_term", "2.0", "", "0", "op", "put"])
    fields = await hash_of(service, keys.memory("m"))
    assert done == 1 and (fields["tier"], fields["update_time"]) == ("long_term", "2.0")
    # ttl 0: the memory, its dedup key and its access stats all persist.
    assert [await r.ttl(k) for k in script_keys[:3]] == [-1, -1, -1]
    assert [e[1] for e in await r.xrange(OUTBOX)] == [{b"op": b"put"}]
    await r.delete(OUTBOX)
    await retier(keys=script_keys, args=["2.0", "scratchpad", "3.0", "9.0", "60"])
    assert all(0 < ttl <= 60 for ttl in [await r.ttl(k) for k in script_keys[:3]])


async def test_evict_drops_an_unread_unchanged_memory_and_only_its_own_dedup_key(
    service: Running, keys: TenantKeys
) -> None:
    r = service.redis
    evict = script(service, ms._EVICT_SCRIPT)
    await store(service, keys, "m", {"update_time": "1.0"}, links=("o",))
    await r.hset(keys.access("m"), "count", 2)
    script_keys = [keys.memory("m"), keys.dedup("fp"), keys.links("m"), keys.access("m")]
    assert await evict(keys=script_keys, args=["0.9", "2", "m"]) == 0  # changed since scored
    assert await evict(keys=script_keys, args=["1.0", "1", "m"]) == 0  # read since scored
    assert await r.exists(*script_keys) == 4
    assert await evict(keys=script_keys, args=["1.0", "2", "m"]) == 1
    assert await r.exists(*script_keys) == 0
    # A dedup key that names another memory (same content stored again since) is left alone.
    await store(service, keys, "n", {"update_time": "1.0"}, fingerprint="shared")
    await r.set(keys.dedup("shared"), "someone-else")
    other = [keys.memory("n"), keys.dedup("shared"), keys.links("n"), keys.access("n")]
    assert await evict(keys=other, args=["1.0", "0", "n"]) == 1
    assert await r.get(keys.dedup("shared")) == b"someone-else"


async def test_read_returns_three_replies_per_memory_and_empty_ones_for_the_absent(
    service: Running, keys: TenantKeys
) -> None:
    await store(service, keys, "m", {"content": "hello"}, links=("x",))
    await service.redis.hset(keys.access("m"), mapping={"count": 4, "last": 7.0})
    read = script(service, ms._READ_SCRIPT)
    script_keys = []
    for memory_id in ("m", "absent"):
        script_keys += [keys.memory(memory_id), keys.links(memory_id), keys.access(memory_id)]
    replies = await read(keys=script_keys)
    assert len(replies) == 6
    assert dict(zip(replies[0][::2], replies[0][1::2], strict=True))[b"content"] == b"hello"
    assert replies[1] == [b"x"] and dict(zip(replies[2][::2], replies[2][1::2], strict=True)) == {
        b"count": b"4",
        b"last": b"7.0",
    }
    assert replies[3:] == [[], [], []]


async def test_field_reads_one_field_of_each_hash(service: Running, keys: TenantKeys) -> None:
    await service.redis.hset(keys.memory("a"), "speaker", "ana")
    await service.redis.hset(keys.memory("b"), "content", "no speaker")
    field = script(service, ms._FIELD_SCRIPT)
    replies = await field(keys=[keys.memory(i) for i in ("a", "b", "c")], args=["speaker"])
    assert replies == [b"ana", None, None]


async def test_touch_counts_reads_never_moves_the_last_read_back_and_skips_the_gone(
    service: Running, keys: TenantKeys
) -> None:
    r = service.redis
    touch = script(service, ms._TOUCH_SCRIPT)
    await store(service, keys, "m", {"content": "x"}, ttl=300)
    pairs = [keys.memory("m"), keys.access("m"), keys.memory("gone"), keys.access("gone")]
    await touch(keys=pairs, args=["2", "10.0", "5", "10.0"])
    await touch(keys=pairs, args=["1", "4.0", "1", "4.0"])  # an older read arrives late
    assert await hash_of(service, keys.access("m")) == {"count": "3", "last": "10.0"}
    assert not await r.exists(keys.access("gone"))
    assert 0 < await r.ttl(keys.access("m")) <= 300  # the stats expire with their memory


async def test_vector_put_writes_only_to_an_existing_memory_that_still_matches(
    service: Running, keys: TenantKeys
) -> None:
    put = script(service, _PUT_SCRIPT)
    key = keys.memory("m")
    assert await put(keys=[key], args=["probe", "v1", "", ""]) == 0  # no such memory
    assert not await service.redis.exists(key)
    await service.redis.hset(key, mapping={"content": "x", "update_time": "1.0"})
    assert await put(keys=[key], args=["probe", "v1", "update_time", "0.5"]) == 0
    assert await put(keys=[key], args=["probe", "v2", "update_time", "1.0"]) == 1
    assert (await hash_of(service, key))["probe"] == "v2"


async def test_session_append_creates_trims_counts_and_refuses_past_its_size(
    service: Running, keys: TenantKeys
) -> None:
    """The working-memory append script (stores/redis/documents.py)."""
    append = script(service, documents._APPEND_SESSION)
    key = keys.session("s")

    def message(text: str) -> str:
        return json.dumps({"role": "user", "content": text, "metadata": {}})

    async def call(agent: str, *texts: str, keep: int = 3, max_bytes: int = 10_000) -> Any:
        args = ["s", agent, keep, 60, max_bytes, 111, *(message(t) for t in texts)]
        return json.loads(await append(keys=[key], args=args))

    first = await call("", "a", "b")
    assert (first["agent_id"], first["revision"], first["update_time"]) == ("", 1, 111)
    assert [m["content"] for m in first["messages"]] == ["a", "b"]
    second = await call("agent-1", "c", "d")  # the first agent named is kept
    assert second["agent_id"] == "agent-1" and second["revision"] == 2
    assert [m["content"] for m in second["messages"]] == ["b", "c", "d"]  # the newest 3
    assert (await call("agent-2", "e"))["agent_id"] == "agent-1"
    assert 0 < await service.redis.ttl(key) <= 60
    with pytest.raises(redis.exceptions.ResponseError, match="TOO_LARGE"):
        await call("", "x" * 500, max_bytes=300)
    after = await service.redis.json().get(key)  # type: ignore[misc]
    assert [m["content"] for m in after["messages"]] == ["c", "d", "e"]  # put back as it was
    assert after["revision"] == 3
    # A session that would be too large from its first message is not left behind.
    other = keys.session("t")
    with pytest.raises(redis.exceptions.ResponseError, match="TOO_LARGE"):
        await append(keys=[other], args=["t", "", 3, 60, 100, 1, message("y" * 200)])
    assert not await service.redis.exists(other)
