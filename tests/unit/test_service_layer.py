"""The use-case layer's own rules, with its ports faked: here the store is not what is tested
(the integration tests run these services on the real Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from aether_memory.domain.documents import AgentStateDoc, ToolResultDoc
from aether_memory.domain.errors import NotFound
from aether_memory.domain.tenant import Tenant
from aether_memory.service.agent_state import AgentStates
from aether_memory.service.tool_cache import ToolCache, digest

TENANT = Tenant("unit")


class FakeStates:
    def __init__(self) -> None:
        self.docs: dict[str, AgentStateDoc] = {}

    async def get_agent_state(self, tenant: Tenant, agent_id: str) -> AgentStateDoc | None:
        return self.docs.get(agent_id)

    async def update_agent_state(
        self, tenant: Tenant, agent_id: str, state: dict[str, Any], only_keys: list[str] | None
    ) -> AgentStateDoc:
        doc: AgentStateDoc = {"agent_id": agent_id, "state": state, "revision": 1}
        self.docs[agent_id] = doc
        return doc


class FakeResults:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[ToolResultDoc, float]] = {}

    async def get_tool_result(self, tenant: Tenant, digest: str) -> ToolResultDoc | None:
        found = self.entries.get(digest)
        return found[0] if found else None

    async def put_tool_result(
        self, tenant: Tenant, digest: str, entry: ToolResultDoc, ttl_s: float
    ) -> ToolResultDoc:
        self.entries[digest] = (entry, ttl_s)
        return entry


async def test_an_agent_that_never_wrote_state_is_not_found_but_describes_as_none() -> None:
    states = AgentStates(FakeStates())
    with pytest.raises(NotFound) as caught:
        await states.get(TENANT, "a")
    assert caught.value.reason == "AGENT_STATE_NOT_FOUND" and caught.value.name == "a"
    assert await states.find(TENANT, "a") is None
    await states.update(TENANT, "a", {"mood": "calm"})
    assert (await states.get(TENANT, "a"))["state"] == {"mood": "calm"}


async def test_tool_results_are_keyed_by_canonical_arguments_with_the_default_ttl() -> None:
    results = FakeResults()
    cache = ToolCache(results, default_ttl_s=600)
    await cache.put(TENANT, "weather", {"city": "Lisbon", "units": "metric"}, {"t": 21}, None)
    found = await cache.get(TENANT, "weather", {"units": "metric", "city": "Lisbon"})
    assert found is not None and found["result"] == {"t": 21}
    assert await cache.get(TENANT, "forecast", {"city": "Lisbon", "units": "metric"}) is None
    [(_, ttl)] = results.entries.values()
    assert ttl == 600
    await cache.put(TENANT, "weather", {"city": "Porto"}, {"t": 19}, 5)
    assert results.entries[digest("weather", {"city": "Porto"})][1] == 5
    # A number and the string of it are different arguments: different calls.
    assert digest("x", {"n": 1}) != digest("x", {"n": "1"})
