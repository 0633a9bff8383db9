"""Working memory and checkpoints: a session's messages and state, numbered copies of it, and
restoring one. The rules that must hold under concurrent writers (keep the newest messages, a
revision that counts writes, compare-and-set, at most so many checkpoints) run inside the
store's atomic steps; this layer is what the transport calls, so neither depends on the other."""

from __future__ import annotations

from typing import Protocol

from ..domain.documents import CheckpointDoc, MessageDoc, SessionDoc
from ..domain.tenant import Tenant


class SessionStore(Protocol):
    async def get_session(self, tenant: Tenant, session_id: str) -> SessionDoc: ...

    async def put_session(
        self, tenant: Tenant, session: SessionDoc, expected_revision: int | None
    ) -> SessionDoc: ...

    async def append_session(
        self, tenant: Tenant, session_id: str, agent_id: str, messages: list[MessageDoc]
    ) -> SessionDoc: ...

    async def create_checkpoint(
        self, tenant: Tenant, session_id: str, label: str
    ) -> CheckpointDoc: ...

    async def list_checkpoints(
        self, tenant: Tenant, session_id: str, offset: int, limit: int
    ) -> tuple[list[CheckpointDoc], bool]: ...

    async def restore_checkpoint(
        self, tenant: Tenant, session_id: str, number: int
    ) -> SessionDoc: ...


class Sessions:
    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def get(self, tenant: Tenant, session_id: str) -> SessionDoc:
        """The session; NotFound when it never existed or lapsed."""
        return await self._store.get_session(tenant, session_id)

    async def put(
        self, tenant: Tenant, session: SessionDoc, expected_revision: int | None = None
    ) -> SessionDoc:
        """Replace the session (created if absent), unless `expected_revision` is given and is
        not its revision (RevisionMismatch)."""
        return await self._store.put_session(tenant, session, expected_revision)

    async def append(
        self, tenant: Tenant, session_id: str, agent_id: str, messages: list[MessageDoc]
    ) -> SessionDoc:
        """Add messages at the end (the session is created if absent); the session after."""
        return await self._store.append_session(tenant, session_id, agent_id, messages)

    async def checkpoint(self, tenant: Tenant, session_id: str, label: str) -> CheckpointDoc:
        """Save the session as the next numbered checkpoint; NotFound without a session."""
        return await self._store.create_checkpoint(tenant, session_id, label)

    async def checkpoints(
        self, tenant: Tenant, session_id: str, offset: int, limit: int
    ) -> tuple[list[CheckpointDoc], bool]:
        """A page of the session's checkpoints, newest first, without their sessions; and
        whether more follow."""
        return await self._store.list_checkpoints(tenant, session_id, offset, limit)

    async def restore(self, tenant: Tenant, session_id: str, number: int) -> SessionDoc:
        """Make checkpoint `number` the session again (one atomic replacement; the revision
        still counts up); NotFound when that checkpoint is gone."""
        return await self._store.restore_checkpoint(tenant, session_id, number)
