"""An agent's own state: a JSON object it reads back whole and changes whole or key by key."""

from __future__ import annotations

from typing import Any, Protocol

from ..domain.documents import AgentStateDoc
from ..domain.errors import NotFound
from ..domain.tenant import Tenant


class AgentStateStore(Protocol):
    async def get_agent_state(self, tenant: Tenant, agent_id: str) -> AgentStateDoc | None: ...

    async def update_agent_state(
        self,
        tenant: Tenant,
        agent_id: str,
        state: dict[str, Any],
        only_keys: list[str] | None,
    ) -> AgentStateDoc: ...


class AgentStates:
    def __init__(self, store: AgentStateStore) -> None:
        self._store = store

    async def find(self, tenant: Tenant, agent_id: str) -> AgentStateDoc | None:
        """The agent's state, or None when it never wrote one."""
        return await self._store.get_agent_state(tenant, agent_id)

    async def get(self, tenant: Tenant, agent_id: str) -> AgentStateDoc:
        """The agent's state; NotFound when it never wrote one."""
        found = await self.find(tenant, agent_id)
        if found is None:
            raise NotFound("aether.memory.v1.AgentState", agent_id, "AGENT_STATE_NOT_FOUND")
        return found

    async def update(
        self,
        tenant: Tenant,
        agent_id: str,
        state: dict[str, Any],
        only_keys: list[str] | None = None,
    ) -> AgentStateDoc:
        """Replace the state, or with `only_keys` set or remove just those keys (a key absent
        from `state` is removed); the revision counts up either way."""
        return await self._store.update_agent_state(tenant, agent_id, state, only_keys)
