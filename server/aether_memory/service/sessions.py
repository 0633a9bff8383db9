"""Working memory and checkpoints: a session's messages and state, numbered copies of it, and
restoring one. The rules that must hold under concurrent writers (keep the newest messages, a
revision that counts writes, compare-and-set, at most so many checkpoints) run inside the
store's atomic steps; this layer is what the transport calls, so neither depends on the other."""

from __future__ import annotations

from typing import Protocol

from ..domain.documents import CheckpointDoc, MessageDoc, SessionDoc
from ..stores.redis.keys import TenantKeys


class SessionStore(Protocol):
    async def get_session(self, keys: TenantKeys, session_id: str) -> SessionDoc: ...

    async def put_session(
        self, keys: TenantKeys, session: SessionDoc, expected_revision: int | None
    ) -> SessionDoc: ...

    async def append_session(
        self, keys: TenantKeys, session_id: str, agent_id: str, messages: list[MessageDoc]
    ) -> SessionDoc: ...

    async def create_checkpoint(
        self, keys: TenantKeys, session_id: str, label: str
    ) -> CheckpointDoc: ...

    async def list_checkpoints(
        self, keys: TenantKeys, session_id: str, offset: int, limit: int
    ) -> tuple[list[CheckpointDoc], bool]: ...

    async def restore_checkpoint(
        self, keys: TenantKeys, session_id: str, number: int
    ) -> SessionDoc: ...


class Sessions:
    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def get(self, keys: TenantKeys, session_id: str) -> SessionDoc:
        """The session; NotFound when it never existed or lapsed."""
        return await self._store.get_session(keys, session_id)

    async def put(
        self, keys: TenantKeys, session: SessionDoc, expected_revision: int | None = None
    ) -> SessionDoc:
        """Replace the session (created if absent), unless `expected_revision` is given and is
        not its revision (RevisionMismatch)."""
        return await self._store.put_session(keys, session, expected_revision)

    async def append(
        self, keys: TenantKeys, session_id: str, agent_id: str, messages: list[MessageDoc]
    ) -> SessionDoc:
        """Add messages at the end (the session is created if absent); the session after."""
        return await self._store.append_session(keys, session_id, agent_id, messages)

    async def checkpoint(self, keys: TenantKeys, session_id: str, label: str) -> CheckpointDoc:
        """Save the session as the next numbered checkpoint; NotFound without a session."""
        return await self._store.create_checkpoint(keys, session_id, label)

    async def checkpoints(
        self, keys: TenantKeys, session_id: str, offset: int, limit: int
    ) -> tuple[list[CheckpointDoc], bool]:
        """A page of the session's checkpoints, newest first, without their sessions; and
        whether more follow."""
        return await self._store.list_checkpoints(keys, session_id, offset, limit)

    async def restore(self, keys: TenantKeys, session_id: str, number: int) -> SessionDoc:
        """Make checkpoint `number` the session again (one atomic replacement; the revision
        still counts up); NotFound when that checkpoint is gone."""
        return await self._store.restore_checkpoint(keys, session_id, number)
