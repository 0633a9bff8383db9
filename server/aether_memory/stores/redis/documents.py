"""JSON documents in Redis: working memory, checkpoints, agent state, and the tool-result cache.

Read-modify-write steps run as optimistic transactions (WATCH/MULTI/EXEC, retried on conflict),
so concurrent writers never lose each other's updates and a restore is one atomic replacement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError, WatchError

from ...domain import outbox
from ...domain.documents import (
    AgentStateDoc,
    CheckpointDoc,
    MessageDoc,
    SessionDoc,
    ToolResultDoc,
)
from ...domain.errors import NotFound, RevisionMismatch, TooLarge
from ...domain.tenant import Tenant
from .keys import keys_of
from .outbox import OutboxMarks

T = TypeVar("T")
Document = dict[str, Any]  # a JSON document as RedisJSON returns it


# KEYS: the session. ARGV: session id, agent id, max messages, TTL (s), max bytes, now (us), then
# each new message as JSON text. Appends, keeps the newest max messages, counts the revision,
# sets the agent if the session had none, renews the TTL; returns the session as JSON text. A
# session longer than max bytes (as JSON) is put back as it was and TOO_LARGE is returned.
_APPEND_SESSION = """
local key = KEYS[1]
local before = redis.call('JSON.GET', key)
if not before then
  redis.call('JSON.SET', key, '$', '{"session_id":' .. cjson.encode(ARGV[1]) ..
    ',"agent_id":' .. cjson.encode(ARGV[2]) .. ',"messages":[],"state":{},"revision":0}')
elseif ARGV[2] ~= '' then
  local agent = cjson.decode(redis.call('JSON.GET', key, '$.agent_id'))[1]
  if agent == nil or agent == '' then
    redis.call('JSON.SET', key, '$.agent_id', cjson.encode(ARGV[2]))
  end
end
local length = redis.call('JSON.ARRAPPEND', key, '$.messages', unpack(ARGV, 7))[1]
local keep = tonumber(ARGV[3])
if length > keep then
  redis.call('JSON.ARRTRIM', key, '$.messages', length - keep, length - 1)
end
redis.call('JSON.NUMINCRBY', key, '$.revision', 1)
redis.call('JSON.SET', key, '$.update_time', ARGV[6])
local after = redis.call('JSON.GET', key)
if string.len(after) > tonumber(ARGV[5]) then
  if before then redis.call('JSON.SET', key, '$', before) else redis.call('DEL', key) end
  return redis.error_reply('TOO_LARGE')
end
redis.call('EXPIRE', key, ARGV[4])
return after
"""


def now_us() -> int:
    """Times in documents are integer microseconds: RedisJSON prints about one float in eight
    with one digit fewer than Python wrote, so a float time read back could differ from the one
    a write returned."""
    return time.time_ns() // 1000


def _multi(pipe: Any) -> None:
    pipe.multi()


async def _optimistic(
    client: aioredis.Redis, watch: list[str], step: Callable[[Any], Awaitable[T]]
) -> T:
    """Run `step` under WATCH until EXEC succeeds. `step` reads, then calls _multi(pipe)."""
    while True:
        async with client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(*watch)
                result = await step(pipe)
                await pipe.execute()
                return result
            except WatchError:
                continue


async def _get_json(pipe: Any | aioredis.Redis, key: str) -> Document | None:
    value = await pipe.json().get(key)
    return value if isinstance(value, dict) else None


class DocumentStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        working_ttl_s: int,
        checkpoint_ttl_s: int,
        max_messages: int,
        max_checkpoints: int,
        max_session_bytes: int = 4 * 1024 * 1024 - 64 * 1024,
        archived: bool = False,
        archive_partitions: int = 1,
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._working_ttl = working_ttl_s
        self._checkpoint_ttl = checkpoint_ttl_s
        self._max_messages = max_messages
        self._max_checkpoints = max_checkpoints
        self._max_session_bytes = max_session_bytes  # a session must fit in one response
        self._archived = archived  # checkpoints and agent states then go to the archive outbox
        self._marks = OutboxMarks(client, archive_partitions)
        self._append = client.register_script(_APPEND_SESSION)

    # ---- working memory --------------------------------------------------------------------

    def _check_size(self, doc: SessionDoc) -> None:
        """Refuse, before writing, a session no response could carry (JSON bytes as the size)."""
        if len(json.dumps(doc, separators=(",", ":"))) > self._max_session_bytes:
            raise TooLarge("messages", self._max_session_bytes)

    def _with_expiry(self, doc: SessionDoc, ttl: int) -> SessionDoc:
        doc["expire_time"] = now_us() + ttl * 1_000_000 if ttl > 0 else None
        return doc

    async def get_session(self, tenant: Tenant, session_id: str) -> SessionDoc:
        keys = keys_of(tenant)
        key = keys.session(session_id)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.json().get(key)
            pipe.ttl(key)
            doc, ttl = await pipe.execute()
        if not isinstance(doc, dict):
            raise NotFound("aether.memory.v1.Session", session_id, "SESSION_NOT_FOUND")
        return self._with_expiry(cast(SessionDoc, doc), int(ttl))

    async def put_session(
        self, tenant: Tenant, session: SessionDoc, expected_revision: int | None
    ) -> SessionDoc:
        keys = keys_of(tenant)
        key = keys.session(session["session_id"])

        async def step(pipe: Any) -> SessionDoc:
            current = await _get_json(pipe, key)
            revision = int(current["revision"]) if current else 0
            if expected_revision is not None and expected_revision != revision:
                raise RevisionMismatch(revision)
            doc = session.copy()
            doc["messages"] = doc["messages"][-self._max_messages :]
            doc["revision"], doc["update_time"] = revision + 1, now_us()
            self._check_size(doc)
            _multi(pipe)
            pipe.json().set(key, "$", doc)
            pipe.expire(key, self._working_ttl)
            return doc

        doc = await _optimistic(self._client, [key], step)
        return self._with_expiry(doc, self._working_ttl)

    async def append_session(
        self, tenant: Tenant, session_id: str, agent_id: str, messages: list[MessageDoc]
    ) -> SessionDoc:
        """Append in one script: no read-modify-write of the whole session in Python, whose cost
        grew with its length (bench/results/soak.md: p50 3.7 -> 29 ms at ~480 messages)."""
        keys = keys_of(tenant)
        now = now_us()
        texts = [json.dumps({**m, "create_time": now}, separators=(",", ":")) for m in messages]
        try:
            raw = await self._append(
                keys=[keys.session(session_id)],
                args=[
                    session_id,
                    agent_id,
                    self._max_messages,
                    self._working_ttl,
                    self._max_session_bytes,
                    now,
                    *texts,
                ],
            )
        except ResponseError as error:
            if "TOO_LARGE" in str(error):
                raise TooLarge("messages", self._max_session_bytes) from None
            raise
        return self._with_expiry(json.loads(raw), self._working_ttl)

    # ---- checkpoints ----------------------------------------------------------------------

    async def create_checkpoint(self, tenant: Tenant, session_id: str, label: str) -> CheckpointDoc:
        keys = keys_of(tenant)
        session_key = keys.session(session_id)
        index_key = keys.checkpoint_index(session_id)

        async def step(pipe: Any) -> CheckpointDoc:
            session = await _get_json(pipe, session_key)
            if session is None:
                raise NotFound("aether.memory.v1.Session", session_id, "SESSION_NOT_FOUND")
            newest = await pipe.zrevrange(index_key, 0, 0, withscores=True)
            number = int(newest[0][1]) + 1 if newest else 1
            stale = await pipe.zrange(index_key, 0, -self._max_checkpoints)
            created = now_us()
            checkpoint: CheckpointDoc = {
                "session_id": session_id,
                "number": number,
                "label": label,
                "create_time": created,
                "session": cast(SessionDoc, session),
            }
            _multi(pipe)
            pipe.json().set(keys.checkpoint(session_id, number), "$", checkpoint)
            pipe.expire(keys.checkpoint(session_id, number), self._checkpoint_ttl)
            pipe.zadd(index_key, {str(number): number})
            pipe.expire(index_key, self._checkpoint_ttl)
            for member in stale:  # keep at most max_checkpoints, dropping the oldest
                pipe.delete(keys.checkpoint(session_id, int(member)))
                pipe.zrem(index_key, member)
            if self._archived:
                expire_at = created / 1e6 + self._checkpoint_ttl
                pipe.xadd(
                    keys.outbox(),
                    outbox.document_put(
                        outbox.Kind.CHECKPOINT,
                        keys.tenant,
                        outbox.checkpoint_key(session_id, number),
                        dict(checkpoint),
                        expire_at,
                    ),
                )
                for member in stale:
                    pipe.xadd(
                        keys.outbox(),
                        outbox.document_delete(
                            outbox.Kind.CHECKPOINT,
                            keys.tenant,
                            outbox.checkpoint_key(session_id, int(member)),
                        ),
                    )
            return checkpoint

        async with self._marks.writing(tenant, self._archived):
            return await _optimistic(self._client, [session_key, index_key], step)

    async def list_checkpoints(
        self, tenant: Tenant, session_id: str, offset: int, limit: int
    ) -> tuple[list[CheckpointDoc], bool]:
        keys = keys_of(tenant)
        members = await self._client.zrevrange(
            keys.checkpoint_index(session_id), offset, offset + limit
        )
        numbers = [int(m) for m in members[:limit]]
        if not numbers:
            return [], False
        async with self._client.pipeline(transaction=False) as pipe:
            for number in numbers:
                pipe.json().get(
                    keys.checkpoint(session_id, number), "$.number", "$.label", "$.create_time"
                )
            replies = await pipe.execute()
        found: list[CheckpointDoc] = []
        for reply in replies:
            if isinstance(reply, dict) and reply.get("$.number"):
                found.append(
                    {
                        "session_id": session_id,
                        "number": reply["$.number"][0],
                        "label": reply["$.label"][0],
                        "create_time": reply["$.create_time"][0],
                    }
                )
        return found, len(members) > limit

    async def restore_checkpoint(self, tenant: Tenant, session_id: str, number: int) -> SessionDoc:
        keys = keys_of(tenant)
        session_key = keys.session(session_id)
        checkpoint_key = keys.checkpoint(session_id, number)

        async def step(pipe: Any) -> SessionDoc:
            checkpoint = await _get_json(pipe, checkpoint_key)
            if checkpoint is None:
                raise NotFound(
                    "aether.memory.v1.Checkpoint", f"{session_id}/{number}", "CHECKPOINT_NOT_FOUND"
                )
            current = await _get_json(pipe, session_key)
            doc = cast(SessionDoc, dict(checkpoint["session"]))
            doc["revision"] = (int(current["revision"]) if current else 0) + 1
            doc["update_time"] = now_us()
            _multi(pipe)
            pipe.json().set(session_key, "$", doc)
            pipe.expire(session_key, self._working_ttl)
            return doc

        doc = await _optimistic(self._client, [session_key, checkpoint_key], step)
        return self._with_expiry(doc, self._working_ttl)

    # ---- agent state ------------------------------------------------------------------------

    async def get_agent_state(self, tenant: Tenant, agent_id: str) -> AgentStateDoc | None:
        keys = keys_of(tenant)
        return cast(AgentStateDoc | None, await _get_json(self._client, keys.agent_state(agent_id)))

    async def update_agent_state(
        self,
        tenant: Tenant,
        agent_id: str,
        state: dict[str, Any],
        only_keys: list[str] | None,
    ) -> AgentStateDoc:
        keys = keys_of(tenant)
        key = keys.agent_state(agent_id)

        async def step(pipe: Any) -> AgentStateDoc:
            current = await _get_json(pipe, key) or {
                "agent_id": agent_id,
                "state": {},
                "revision": 0,
            }
            if only_keys is None:
                new_state = dict(state)
            else:
                new_state = dict(current["state"])
                for name in only_keys:
                    if name in state:
                        new_state[name] = state[name]
                    else:
                        new_state.pop(name, None)
            doc: AgentStateDoc = {
                "agent_id": agent_id,
                "state": new_state,
                "revision": int(current["revision"]) + 1,
                "update_time": now_us(),
            }
            _multi(pipe)
            pipe.json().set(key, "$", doc)
            if self._archived:
                pipe.xadd(
                    keys.outbox(),
                    outbox.document_put(
                        outbox.Kind.AGENT_STATE, keys.tenant, agent_id, dict(doc), 0.0
                    ),
                )
            return doc

        async with self._marks.writing(tenant, self._archived):
            return await _optimistic(self._client, [key], step)

    # ---- tool-result cache ------------------------------------------------------------------

    async def get_tool_result(self, tenant: Tenant, digest: str) -> ToolResultDoc | None:
        keys = keys_of(tenant)
        raw = await self._client.get(keys.tool_result(digest))
        return cast(ToolResultDoc, json.loads(raw)) if raw else None

    async def put_tool_result(
        self, tenant: Tenant, digest: str, entry: ToolResultDoc, ttl_s: float
    ) -> ToolResultDoc:
        keys = keys_of(tenant)
        now = now_us()
        entry = {**entry, "create_time": now, "expire_time": now + int(ttl_s * 1_000_000)}
        await self._client.set(
            keys.tool_result(digest),
            json.dumps(entry, separators=(",", ":")),
            px=max(1, int(ttl_s * 1000)),
        )
        return entry
