"""LangGraph's BaseStore on the service (aether_memory_client.langgraph): the same operations
answered as LangGraph's own InMemoryStore answers them, search by meaning under a namespace
prefix, and a compiled LangGraph graph that keeps memories across threads through it."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.store.base import BaseStore, InvalidNamespaceError, Item
from langgraph.store.memory import InMemoryStore

from aether_memory.app import Running
from aether_memory_client.langgraph import AetherStore

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "langgraph_agent.py"
)

# (namespace, key, value): users' preferences and notes, several depths, one value twice.
ITEMS: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("users", "ana", "prefs"), "diet", {"text": "vegetarian", "level": 3, "tags": ["food"]}),
    (("users", "ana", "prefs"), "theme", {"text": "dark mode", "level": 1}),
    (("users", "ana", "notes"), "n1", {"text": "flies to Lisbon in May", "level": 5}),
    (("users", "bo", "prefs"), "diet", {"text": "vegan", "level": 4, "nested": {"a": 1}}),
    (("users", "bo"), "profile", {"text": "dark mode", "level": 1}),  # same value, other key
    (("teams", "core", "prefs"), "standup", {"text": "9:30 every weekday", "level": 2}),
    (("docs",), "readme", {"text": "how to deploy", "level": 0, "draft": None}),
]


@pytest.fixture
def store(service: Running) -> Iterator[AetherStore]:
    with AetherStore(service.address, tenant=f"lg-{uuid.uuid4().hex[:8]}") as store:
        yield store


def seen(items: list[Any]) -> set[tuple[tuple[str, ...], str, str]]:
    return {(i.namespace, i.key, repr(sorted(i.value.items()))) for i in items}


async def both(
    ours: BaseStore, theirs: BaseStore, method: str, *args: Any, **kwargs: Any
) -> tuple[Any, Any]:
    return (
        await getattr(ours, method)(*args, **kwargs),
        await getattr(theirs, method)(*args, **kwargs),
    )


async def test_every_operation_answers_as_langgraphs_in_memory_store(store: AetherStore) -> None:
    reference = InMemoryStore()
    for namespace, key, value in ITEMS:
        for s in (store, reference):
            await s.aput(namespace, key, value)

    for namespace, key, _ in [*ITEMS, (("users", "ana", "prefs"), "absent", {})]:
        ours, theirs = await both(store, reference, "aget", namespace, key)
        if theirs is None:
            assert ours is None
        else:
            assert (ours.namespace, ours.key, ours.value) == (
                theirs.namespace,
                theirs.key,
                theirs.value,
            )

    # Search without a query: every prefix and filter LangGraph's tests use, as sets (neither
    # store promises an order without a query).
    for prefix, flt in [
        ((), None),
        (("users",), None),
        (("users", "ana"), None),
        (("users", "ana", "prefs"), None),
        (("users", "an"), None),  # a label is matched whole, not as a string prefix
        (("users",), {"text": "dark mode"}),
        (("users",), {"level": {"$gte": 3}}),
        ((), {"level": {"$gt": 1, "$lt": 5}}),
        ((), {"level": {"$ne": 1}}),
        ((), {"tags": ["food"]}),
        ((), {"nested": {"a": 1}}),
        ((), {"missing": None}),
        ((), {"draft": None}),
    ]:
        ours, theirs = await both(store, reference, "asearch", prefix, filter=flt, limit=100)
        assert seen(ours) == seen(theirs), (prefix, flt)
        assert all(i.score is None for i in ours)

    # Paging: limit and offset walk every item once.
    pages = [await store.asearch(("users",), limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert seen([i for p in pages for i in p]) == seen(await reference.asearch(("users",)))

    # Namespaces: prefix and suffix conditions with wildcards, depth, paging.
    for kwargs in [
        {},
        {"prefix": ("users",)},
        {"prefix": ("users", "*", "prefs")},
        {"suffix": ("prefs",)},
        {"prefix": ("users",), "suffix": ("prefs",)},
        {"max_depth": 2},
        {"prefix": ("users",), "max_depth": 2},
        {"limit": 2, "offset": 1},
        {"prefix": ("nobody",)},
    ]:
        ours, theirs = await both(store, reference, "alist_namespaces", **kwargs)
        assert ours == theirs, kwargs

    # Put replaces, delete removes: both stores agree afterwards.
    for s in (store, reference):
        await s.aput(("users", "ana", "prefs"), "diet", {"text": "pescatarian", "level": 2})
        await s.adelete(("users", "bo", "prefs"), "diet")
        await s.adelete(("users", "bo", "prefs"), "never-stored")
    ours, theirs = await both(store, reference, "asearch", (), limit=100)
    assert seen(ours) == seen(theirs) and len(ours) == len(ITEMS) - 1
    # A namespace whose last item is gone is not listed (InMemoryStore still lists it, as an
    # empty dict; LangGraph's PostgresStore lists only namespaces that hold items).
    ours, theirs = await both(store, reference, "alist_namespaces")
    assert ours == [ns for ns in theirs if ns != ("users", "bo", "prefs")]


async def test_a_put_keeps_the_created_time_and_moves_the_updated_one(store: AetherStore) -> None:
    await store.aput(("users", "ana"), "city", {"text": "Lisbon"})
    first = await store.aget(("users", "ana"), "city")
    await store.aput(("users", "ana"), "city", {"text": "Porto"})
    second = await store.aget(("users", "ana"), "city")
    assert type(first) is Item and type(second) is Item  # a get answers an Item, no score
    assert second.value == {"text": "Porto"}
    assert second.created_at == first.created_at and second.updated_at > first.updated_at
    assert second.created_at.tzinfo is not None


async def test_search_ranks_by_meaning_under_a_prefix_and_skips_unindexed_items(
    service: Running,
) -> None:
    with AetherStore(
        service.address, tenant=f"lg-{uuid.uuid4().hex[:8]}", fields=["memory"]
    ) as store:
        ns = ("memories", "ana")
        await store.aput(ns, "m1", {"memory": "Ana is allergic to peanuts.", "source": "chat"})
        await store.aput(ns, "m2", {"memory": "Ana's favourite band is Radiohead."})
        await store.aput(ns, "m3", {"memory": "Ana drives a red bicycle to work."})
        await store.aput(("memories", "bo"), "m1", {"memory": "Bo is allergic to shellfish."})
        await store.aput(ns, "secret", {"memory": "Ana's nut allergy card"}, index=False)

        hits = await store.asearch(ns, query="what food should Ana avoid?", limit=3)
        assert [h.key for h in hits][:1] == ["m1"]
        assert hits[0].value == {"memory": "Ana is allergic to peanuts.", "source": "chat"}
        assert all(h.namespace == ns and h.score is not None for h in hits)
        assert "secret" not in {h.key for h in hits}  # put with index=False: never a hit
        assert (await store.aget(ns, "secret")) is not None  # ... but stored and listed
        assert "secret" in {i.key for i in await store.asearch(ns)}

        music = await store.asearch(("memories",), query="music", filter={"source": "chat"})
        assert [h.key for h in music] == ["m1"]  # the filter applies to ranked hits too


async def test_namespaces_langgraph_refuses_are_refused_before_any_write(
    store: AetherStore,
) -> None:
    for namespace in [("langgraph", "x"), ("a.b",), ("",), ()]:
        with pytest.raises(InvalidNamespaceError):
            await store.aput(namespace, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        await store.aput(tuple(f"l{i}" for i in range(32)), "k", {"v": 1})
    with pytest.raises(NotImplementedError):
        await store.aput(("a",), "k", {"v": 1}, ttl=5)
    assert await store.alist_namespaces() == []


class State(TypedDict):
    user: str
    message: str
    recalled: list[str]


async def remember_and_recall(state: State, *, store: BaseStore) -> dict[str, Any]:
    """A node as LangGraph's docs write one: recall what the store holds for this user, then
    remember the new message."""
    namespace = ("memories", state["user"])
    hits = await store.asearch(namespace, query=state["message"], limit=3)
    await store.aput(namespace, uuid.uuid4().hex, {"text": state["message"]})
    return {"recalled": [h.value["text"] for h in hits]}


async def test_a_compiled_graph_keeps_memories_across_threads(store: AetherStore) -> None:
    builder = StateGraph(State)
    builder.add_node("remember_and_recall", remember_and_recall)
    builder.add_edge(START, "remember_and_recall")
    graph = builder.compile(checkpointer=InMemorySaver(), store=store)

    def thread(name: str) -> Any:
        return {"configurable": {"thread_id": name}}

    first = await graph.ainvoke(
        {"user": "ana", "message": "I am allergic to peanuts", "recalled": []}, thread("t1")
    )
    assert first["recalled"] == []
    await graph.ainvoke(
        {"user": "bo", "message": "I love peanut butter", "recalled": []}, thread("t2")
    )
    later = await graph.ainvoke(
        {"user": "ana", "message": "can I eat satay sauce?", "recalled": []}, thread("t3")
    )
    assert later["recalled"][:1] == ["I am allergic to peanuts"]  # hers, not Bo's
    assert "I love peanut butter" not in later["recalled"]
    assert len(await store.asearch(("memories",), limit=10)) == 3


async def test_the_example_langgraph_agent_runs(service: Running) -> None:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, str(EXAMPLE), "--target", service.address),
        *("--tenant", f"lg-{uuid.uuid4().hex[:8]}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, out.decode()
    lines = out.decode().splitlines()
    assert "recalled: I am allergic to peanuts." in lines
    assert "namespaces: [('users', 'ana', 'memories')]" in lines
