"""The episode log: one Redis Stream per tenant, appended by a script that dedupes event ids.

An append returns only after Redis ran the script, so an ack built from its result means the
entry is in Redis (and in its AOF within the fsync interval). Each entry holds the serialized
episode plus the few fields subscribers filter on, so filtering never decodes payloads.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from ...domain.episodes import Appended, EpisodeEntry, StoredEntry
from ...domain.errors import CursorExpired
from ...domain.tenant import Tenant
from .due import DueMarks, DueQueue, StreamSet
from .keys import EPISODE_INDEX_DUE, EPISODE_TENANTS, keys_of
from .outbox import OutboxMarks
from .scripts import evalsha_pipelined

TAIL_BLOCK_MS = 1000
# Each tenant's stream is also the episode indexer's queue: its consumer group reads every entry
# once (stores/redis/episode_index.py); the listing doubles as the tenants retention visits.
EPISODE_STREAMS = StreamSet(
    listing=EPISODE_TENANTS,
    due=EPISODE_INDEX_DUE,
    group="aether-episode-indexers",
    stream_of=lambda tenant: keys_of(tenant).episodes(),
)
MAX_GROUP = 64  # appends sent to Redis in one pipeline

# KEYS: the tenant's stream, its archive outbox, then one event-id key per episode; every key
# is the tenant's, so the script needs one slot. ARGV: maxlen, event ttl, tenant, archive
# ("1"/"0"), then 5 values per episode: body, agent, session, type, outcome. Returns {stream id,
# duplicate} per episode. The stream is also the episode indexer's queue (its consumer group).
_APPEND_SCRIPT = """
local out = {}
for i = 3, #KEYS do
  local prior = redis.call('GET', KEYS[i])
  if prior then
    table.insert(out, {prior, 1})
  else
    local a = 5 + (i - 3) * 5
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
      'b', ARGV[a], 'a', ARGV[a + 1], 's', ARGV[a + 2], 't', ARGV[a + 3], 'o', ARGV[a + 4])
    redis.call('SET', KEYS[i], id, 'EX', ARGV[2])
    if ARGV[4] == '1' then
      redis.call('XADD', KEYS[2], '*', 'kind', 'episode', 'op', 'put', 'tenant', ARGV[3],
        'id', id, 'doc', ARGV[a], 'agent', ARGV[a + 1], 'session', ARGV[a + 2],
        'type', ARGV[a + 3], 'outcome', ARGV[a + 4])
    end
    table.insert(out, {id, 0})
  end
end
return out
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def entry_of(stream_id: bytes | str, fields: dict[bytes, bytes]) -> StoredEntry:
    return StoredEntry(
        stream_id=_text(stream_id),
        body=fields.get(b"b", b""),
        agent_id=_text(fields.get(b"a")),
        session_id=_text(fields.get(b"s")),
        type=_text(fields.get(b"t")),
        outcome=_text(fields.get(b"o")),
    )


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class RedisEpisodeLog:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_len: int,
        event_ttl_s: int = 7 * 24 * 3600,
        archived: bool = False,
        archive_partitions: int = 1,
    ) -> None:
        # redis-py types replies as unions over every decode mode; this adapter decodes itself.
        self._client: Any = client
        self._max_len = max_len
        self._event_ttl = event_ttl_s
        self._archived = archived
        self._append = client.register_script(_APPEND_SCRIPT)
        self._marks = OutboxMarks(client, archive_partitions)
        self._index_marks = DueMarks(client, [EPISODE_STREAMS])
        self._listing = DueQueue(client, EPISODE_STREAMS, per_step=1)
        # Group commit: appends that arrive while one is in flight (from any stream or tenant)
        # wait for it, then go to Redis together in one pipeline of script calls.
        self._waiting: list[
            tuple[Tenant, list[str], list[str | bytes | int], asyncio.Future[Any]]
        ] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, tenant: Tenant, entries: Sequence[EpisodeEntry]) -> list[Appended]:
        """Append atomically; an event id seen before returns its original stream id.

        Returns once Redis ran the script: the entries are then in the stream (and the AOF).
        Concurrent appends share round trips (see `_flush`); each stays one atomic script call.
        """
        keys = keys_of(tenant)
        if not entries:
            return []
        args: list[str | bytes | int] = [
            self._max_len,
            self._event_ttl,
            keys.tenant,
            "1" if self._archived else "0",
        ]
        for e in entries:
            args += [e.body, e.agent_id, e.session_id, e.type, e.outcome]
        script_keys = [keys.episodes(), keys.outbox(), *(keys.event(e.event_id) for e in entries)]
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((tenant, script_keys, args, done))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.create_task(self._flush())
        replies = await done
        return [Appended(_text(stream_id), bool(int(dup))) for stream_id, dup in replies]

    async def _flush(self) -> None:
        """Send waiting appends, up to MAX_GROUP per pipeline, until none wait."""
        try:
            while self._waiting:
                group = self._waiting[:MAX_GROUP]
                del self._waiting[:MAX_GROUP]
                # The indexer (and the archiver) are told which tenants' streams got entries,
                # in the same round trip (after the scripts: an entry is never announced before
                # it exists).
                due = list({t.name: t for t, _, _, _ in group}.values())
                try:
                    # Here, not in `append`: nothing may be awaited between an append's call
                    # and its place in the queue, or a stream's appends could change order.
                    await self._prepare(due)
                    results = await evalsha_pipelined(
                        self._client,
                        self._append,
                        [(script_keys, args) for _, script_keys, args, _ in group],
                        functools.partial(self._mark, tenants=due),
                    )
                except BaseException as error:  # every waiting caller is told, none is left
                    if not isinstance(error, Exception):  # cancelled: so is every waiting append
                        for _, _, _, done in group + self._waiting:
                            done.cancel()
                        raise
                    for _, _, _, done in group:
                        if not done.done():
                            done.set_exception(error)
                    continue
                for (_, _, _, done), result in zip(group, results, strict=True):
                    if done.done():
                        continue
                    if isinstance(result, Exception):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
        finally:
            self._flushing = False

    async def _prepare(self, tenants: list[Tenant]) -> None:
        for tenant in tenants:
            await self._index_marks.prepare(tenant)
            if self._archived:
                await self._marks.prepare(tenant)

    def _mark(self, pipe: Any, tenants: list[Tenant]) -> None:
        self._index_marks.mark_in(pipe, tenants)
        if self._archived:
            self._marks.mark_in(pipe, tenants)

    async def get(self, tenant: Tenant, stream_id: str) -> StoredEntry | None:
        keys = keys_of(tenant)
        found = await self._client.xrange(keys.episodes(), stream_id, stream_id, count=1)
        return entry_of(*found[0]) if found else None

    async def get_many(self, wanted: Sequence[tuple[Tenant, str]]) -> list[StoredEntry | None]:
        """Entries by (tenant, stream id), in one round trip; None where one is gone."""
        if not wanted:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for tenant, stream_id in wanted:
                pipe.xrange(keys_of(tenant).episodes(), stream_id, stream_id, count=1)
            replies = await pipe.execute()
        return [entry_of(*found[0]) if found else None for found in replies]

    async def range(self, tenant: Tenant, start: str, end: str, count: int) -> list[StoredEntry]:
        """Entries with start <= id <= end ("-"/"+" for open ends; "(" prefix for exclusive)."""
        keys = keys_of(tenant)
        found = await self._client.xrange(keys.episodes(), start, end, count=count)
        return [entry_of(stream_id, fields) for stream_id, fields in found]

    async def tenants(self) -> list[Tenant]:
        """Every tenant that has an episode stream."""
        return await self._listing.listed()

    async def trim_before(self, tenant: Tenant, min_id: str) -> tuple[int, str | None]:
        """Remove entries older than `min_id`; (how many, the first id kept or None)."""
        keys = keys_of(tenant)
        removed = await self._client.xtrim(keys.episodes(), minid=min_id, approximate=False)
        first = await self._client.xrange(keys.episodes(), "-", "+", count=1)
        return int(removed), (_text(first[0][0]) if first else None)

    async def last_id(self, tenant: Tenant) -> str:
        keys = keys_of(tenant)
        found = await self._client.xrevrange(keys.episodes(), "+", "-", count=1)
        return _text(found[0][0]) if found else "0-0"

    async def check_cursor(self, tenant: Tenant, cursor: str) -> None:
        """Raise CursorExpired when entries after `cursor` may have been removed.

        Trimming (retention) moves `recorded-first-entry-id`; XDEL moves `max-deleted-entry-id`.
        A cursor before the first retained entry of a stream that lost entries is refused even
        when the removed entries all preceded it: the server cannot tell, and a client that
        restarts deliberately is better than one that silently misses events.
        """
        keys = keys_of(tenant)
        try:
            raw = await self._client.xinfo_stream(keys.episodes())
        except aioredis.ResponseError:
            return  # no stream yet: nothing was ever removed
        info = {_text(k): v for k, v in raw.items()}
        position = stream_id_key(cursor)
        first_entry = info.get("first-entry")
        oldest = _text(first_entry[0]) if first_entry else _text(info.get("last-generated-id"))
        trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        first_kept = _text(info.get("recorded-first-entry-id") or "0-0")
        deleted = _text(info.get("max-deleted-entry-id") or "0-0")
        if (trimmed and position < stream_id_key(first_kept)) or position < stream_id_key(deleted):
            raise CursorExpired(oldest)

    async def read_after(
        self, tenant: Tenant, after: str, count: int, block_ms: int | None
    ) -> list[StoredEntry]:
        """Up to `count` entries after `after`; waits up to `block_ms` for one when none are there.

        Each wait stays well under the client's socket timeout (TAIL_BLOCK_MS).
        """
        keys = keys_of(tenant)
        reply = await self._client.xread({keys.episodes(): after}, count=count, block=block_ms)
        return [
            entry_of(stream_id, fields)
            for _, messages in reply or []
            for stream_id, fields in messages
        ]

    async def recent(self, tenant: Tenant, count: int) -> list[StoredEntry]:
        """The newest `count` entries, newest first."""
        keys = keys_of(tenant)
        found = await self._client.xrevrange(keys.episodes(), "+", "-", count=count)
        return [entry_of(stream_id, fields) for stream_id, fields in found]
