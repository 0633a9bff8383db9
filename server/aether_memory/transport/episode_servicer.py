"""EpisodeService: recording (unary and the bidirectional stream), tailing, listing, searching."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import grpc
from aether.memory.v1 import (
    episode_pb2,
    episode_service_pb2,
    episode_service_pb2_grpc,
)
from cachetools import LRUCache
from google.protobuf import timestamp_pb2
from grpc_status import rpc_status

from ..domain.episodes import EpisodeEntry, EpisodeQuery, StoredEntry
from ..domain.errors import DomainError, InvalidField, ShuttingDown, TooLarge
from ..domain.paging import PageTokens, is_stream_id
from ..domain.tenant import Tenant
from ..service.episodes import Episodes
from ..service.ports import Replication
from ..settings import Settings
from ..telemetry import current_trace_id, instruments, operation
from . import convert as c
from .errors import mapped, mapped_stream, status_for
from .paging import page_fingerprint, page_start
from .tenancy import call_tenant

MAX_EPISODES_PER_REQUEST = 500
LIVE_RESPONSES = 1000  # recent subscription messages shared by a tenant's subscribers (~2 reads)
MAX_SUBSCRIBE_BATCH = 500
RECORD_WINDOW = 4  # requests of one RecordEpisodes stream appended at once
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TEXT_BYTES = 8192
MAX_SEQ = 18446744073709551615
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
EPISODE_TYPES = frozenset(episode_pb2.EpisodeType.values()) - {0}
EPISODE_OUTCOMES = frozenset(episode_pb2.EpisodeOutcome.values())


def _type_name(value: int) -> str:
    name = episode_pb2.EpisodeType.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("EPISODE_TYPE_").lower()


def _outcome_name(value: int) -> str:
    name = episode_pb2.EpisodeOutcome.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("EPISODE_OUTCOME_").lower()


def _validate_episode(episode: episode_pb2.Episode, prefix: str) -> None:
    v = c.Violations()
    v.identifier(f"{prefix}.event_id", episode.event_id, required=True)
    v.identifier(f"{prefix}.agent_id", episode.agent_id, required=True)
    v.identifier(f"{prefix}.session_id", episode.session_id, required=False)
    if episode.type not in EPISODE_TYPES:
        v.add(f"{prefix}.type", "must be a known EpisodeType other than UNSPECIFIED")
    if episode.outcome not in EPISODE_OUTCOMES:
        v.add(f"{prefix}.outcome", f"unknown enum value {episode.outcome}")
    if len(episode.name.encode()) > 256:
        v.add(f"{prefix}.name", "must be at most 256 bytes")
    if episode.latency.seconds < 0 or episode.latency.nanos < 0:
        v.add(f"{prefix}.latency", "must not be negative")
    if episode.trace_id and not TRACE_ID.match(episode.trace_id):
        v.add(f"{prefix}.trace_id", "must be 32 lowercase hex characters")
    for path, why in c.request_violations(episode, f"{prefix}."):
        v.add(path, why)
    v.raise_if_any()
    c.check_struct_size(f"{prefix}.payload", episode.payload, MAX_PAYLOAD_BYTES)
    if len(episode.text.encode()) > MAX_TEXT_BYTES:
        raise TooLarge(f"{prefix}.text", MAX_TEXT_BYTES)


def _to_entry(
    stored: episode_pb2.Episode, now: timestamp_pb2.Timestamp, trace_id: str
) -> EpisodeEntry:
    """The log entry for a validated episode, which this changes (pass the caller's own copy)."""
    stored.ClearField("episode_id")
    stored.ClearField("cursor")
    stored.record_time.CopyFrom(now)
    if not stored.trace_id:  # the trace of the call that recorded it, when one is sampled
        stored.trace_id = trace_id
    if not stored.HasField("start_time"):
        stored.start_time.CopyFrom(now)
    return EpisodeEntry(
        event_id=stored.event_id,
        body=stored.SerializeToString(),
        agent_id=stored.agent_id,
        session_id=stored.session_id,
        type=_type_name(stored.type),
        outcome=_outcome_name(stored.outcome),
    )


def _from_entry(entry: StoredEntry) -> episode_pb2.Episode:
    episode = episode_pb2.Episode.FromString(entry.body)
    episode.episode_id = entry.stream_id
    episode.cursor = entry.stream_id
    return episode


def _position_before(ts: timestamp_pb2.Timestamp) -> str:
    """The stream position just before the first entry recorded at or after `ts`."""
    ms = ts.ToMilliseconds()
    return f"{ms - 1}-{MAX_SEQ}" if ms > 0 else "0-0"


class EpisodeServicer(episode_service_pb2_grpc.EpisodeServiceServicer):
    def __init__(
        self,
        episodes: Episodes,
        page_tokens: PageTokens,
        settings: Settings,
        replicas: Replication | None = None,
    ) -> None:
        """`replicas`: what each write waits for before it is acknowledged."""
        self._replicas = replicas
        self._episodes = episodes
        self._live: LRUCache[tuple[str, str], episode_service_pb2.SubscribeEpisodesResponse] = (
            LRUCache(maxsize=LIVE_RESPONSES)
        )
        self._tokens = page_tokens
        self._settings = settings
        self._page_bytes = settings.max_message_bytes - 64 * 1024  # a page fits one response
        self.draining = asyncio.Event()

    async def aclose(self) -> None:
        """Stop the shared tail readers (after the server stopped serving)."""
        await self._episodes.aclose()

    def _tenant(self, context: grpc.aio.ServicerContext) -> Tenant:
        return call_tenant(context, self._settings.default_tenant)

    async def confirm_replicated(self, context: grpc.aio.ServicerContext) -> None:
        if self._replicas is not None:
            await self._replicas.confirm(self._tenant(context))

    @mapped
    async def RecordEpisode(
        self, request: episode_service_pb2.RecordEpisodeRequest, context: grpc.aio.ServicerContext
    ) -> episode_service_pb2.RecordEpisodeResponse:
        tenant = self._tenant(context)
        _validate_episode(request.episode, "episode")
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        episode = episode_pb2.Episode()
        episode.CopyFrom(request.episode)
        entry = _to_entry(episode, now, current_trace_id())
        (appended,) = await self._episodes.record(tenant, [entry])
        if appended.duplicate:  # the episode first recorded with this event_id
            stored = await self._episodes.recorded(tenant, appended.stream_id)
            episode = _from_entry(stored) if stored else request.episode
        else:  # what was written: no need to read it back
            episode.episode_id = episode.cursor = appended.stream_id
        return episode_service_pb2.RecordEpisodeResponse(
            episode=episode, duplicate=appended.duplicate
        )

    async def RecordEpisodes(
        self,
        request_iterator: AsyncIterator[episode_service_pb2.RecordEpisodesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[episode_service_pb2.RecordEpisodesResponse]:
        """Up to RECORD_WINDOW requests of a stream are appended at once; acks go in request order.

        Appends start in request order and the log sends them to Redis in that order, so a
        stream's episodes keep the order they were sent in. With RECORD_WINDOW appends in flight
        the stream is not read: that is the backpressure (the HTTP/2 window fills and the
        client's writes wait), and memory held per stream is bounded by RECORD_WINDOW requests.
        Overlapping requests keeps a stream's throughput from being one request per Redis
        round trip (and fsync).
        """
        try:
            tenant = self._tenant(context)
        except DomainError as error:
            await context.abort_with_status(rpc_status.to_status(status_for(error)))
        window = asyncio.Semaphore(RECORD_WINDOW)
        # In request order: a running append, a refusal that ends the stream, or None at the end.
        queue: asyncio.Queue[
            asyncio.Task[episode_service_pb2.RecordEpisodesResponse] | DomainError | None
        ] = asyncio.Queue()

        async def read() -> None:
            options: episode_service_pb2.RecordEpisodesOptions | None = None
            try:
                async for request in request_iterator:
                    refused: DomainError | None = None
                    if request.HasField("options"):
                        if options is not None and options != request.options:
                            refused = InvalidField.one("options", "must not change within a stream")
                        options = request.options
                    if len(request.episodes) > MAX_EPISODES_PER_REQUEST:
                        refused = TooLarge(
                            "episodes", MAX_EPISODES_PER_REQUEST, "episodes per request"
                        )
                    if refused is not None:
                        queue.put_nowait(refused)
                        return
                    await window.acquire()
                    queue.put_nowait(
                        asyncio.create_task(self._record_batch(tenant, request, options))
                    )
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, DomainError):
                    await context.abort_with_status(rpc_status.to_status(status_for(item)))
                    return
                response = await item
                window.release()
                yield response
            await reader  # the client's stream ended, or broke: then this raises its error
        finally:
            reader.cancel()
            while not queue.empty():
                if isinstance(left := queue.get_nowait(), asyncio.Task):
                    left.cancel()

    async def _record_batch(
        self,
        tenant: Tenant,
        request: episode_service_pb2.RecordEpisodesRequest,
        options: episode_service_pb2.RecordEpisodesOptions | None,
    ) -> episode_service_pb2.RecordEpisodesResponse:
        now = timestamp_pb2.Timestamp()
        trace_id = current_trace_id()  # once per request: the same for every episode in it
        now.GetCurrentTime()
        acks: list[episode_pb2.EpisodeAck] = []
        valid: list[tuple[int, EpisodeEntry]] = []
        # The request is this handler's own message: its episodes become the stored ones in
        # place, with no copy.
        for i, episode in enumerate(request.episodes):
            if options is not None:
                episode.agent_id = episode.agent_id or options.default_agent_id
                episode.session_id = episode.session_id or options.default_session_id
            acks.append(episode_pb2.EpisodeAck(event_id=episode.event_id))
            try:
                _validate_episode(episode, f"episodes[{i}]")
            except DomainError as error:
                acks[i].error.CopyFrom(status_for(error))
                continue
            valid.append((i, _to_entry(episode, now, trace_id)))
        if valid:
            try:
                with operation(
                    "aether.episodes.append", attributes={"aether.episodes": len(valid)}
                ) as span:
                    appended = await self._episodes.record(tenant, [entry for _, entry in valid])
                    if self._replicas is not None:  # acknowledged once replicas hold them
                        await self._replicas.confirm(tenant)
                    written = sum(not a.duplicate for a in appended)
                    span.set_attribute("aether.episodes.written", written)
                instruments().episodes_appended.add(written)
            except Exception as error:  # every waiting episode is told, none is acked
                status = status_for(error)
                for i, _ in valid:
                    acks[i].error.CopyFrom(status)
            else:
                for (i, _), result in zip(valid, appended, strict=True):
                    acks[i].written.CopyFrom(
                        episode_pb2.EpisodeWritten(
                            episode_id=result.stream_id,
                            cursor=result.stream_id,
                            duplicate=result.duplicate,
                        )
                    )
        return episode_service_pb2.RecordEpisodesResponse(acks=acks)

    @staticmethod
    def _filter_names(
        flt: episode_pb2.EpisodeFilter, prefix: str, v: c.Violations
    ) -> tuple[set[str], set[str]]:
        v.identifier(f"{prefix}.agent_id", flt.agent_id, required=False)
        v.identifier(f"{prefix}.session_id", flt.session_id, required=False)
        for i, t in enumerate(flt.types):
            if t not in EPISODE_TYPES:
                v.add(f"{prefix}.types[{i}]", f"unknown enum value {t}")
        for i, o in enumerate(flt.outcomes):
            if o not in EPISODE_OUTCOMES:
                v.add(f"{prefix}.outcomes[{i}]", f"unknown enum value {o}")
        types = {_type_name(t) for t in flt.types if t in EPISODE_TYPES}
        outcomes = {_outcome_name(o) for o in flt.outcomes if o in EPISODE_OUTCOMES}
        return types, outcomes

    @staticmethod
    def _matches(
        entry: StoredEntry, flt: episode_pb2.EpisodeFilter, types: set[str], outcomes: set[str]
    ) -> bool:
        return (
            (not flt.agent_id or entry.agent_id == flt.agent_id)
            and (not flt.session_id or entry.session_id == flt.session_id)
            and (not types or entry.type in types)
            and (not outcomes or entry.outcome in outcomes)
        )

    @mapped_stream
    async def SubscribeEpisodes(
        self,
        request: episode_service_pb2.SubscribeEpisodesRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[episode_service_pb2.SubscribeEpisodesResponse]:
        tenant = self._tenant(context)
        v = c.Violations()
        types, outcomes = self._filter_names(request.filter, "filter", v)
        interval = 15.0
        if request.HasField("heartbeat_interval"):
            interval = request.heartbeat_interval.ToTimedelta().total_seconds()
            if not 1 <= interval <= 300:
                v.add("heartbeat_interval", "must be between 1 s and 300 s")
        start = request.WhichOneof("start")
        if start == "after_cursor" and not is_stream_id(request.after_cursor):
            v.add("after_cursor", "is not a cursor this service issued")
        if request.max_batch > MAX_SUBSCRIBE_BATCH:
            v.add("max_batch", f"must be at most {MAX_SUBSCRIBE_BATCH}")
        v.raise_if_any()
        after = None
        if start == "after_cursor":
            after = request.after_cursor
        elif start == "start_time":
            after = _position_before(request.start_time)
        position = await self._episodes.start_of_tail(tenant, after)
        last_sent = time.monotonic()
        async for batch in self._episodes.tail(tenant, position):
            if self.draining.is_set():
                raise ShuttingDown()
            matching = []
            for entry in batch:
                position = entry.stream_id
                if self._matches(entry, request.filter, types, outcomes):
                    matching.append(entry)
            if matching:
                last_sent = time.monotonic()
            if not request.max_batch:
                for entry in matching:
                    yield self._live_response(tenant, entry)
            else:
                for i in range(0, len(matching), request.max_batch):
                    chunk = matching[i : i + request.max_batch]
                    yield episode_service_pb2.SubscribeEpisodesResponse(
                        batch=episode_service_pb2.EpisodeBatch(
                            episodes=[self._live_response(tenant, e).episode for e in chunk]
                        ),
                        cursor=chunk[-1].stream_id,
                    )
            if time.monotonic() - last_sent >= interval:
                last_sent = time.monotonic()
                heartbeat = episode_service_pb2.Heartbeat()
                heartbeat.server_time.GetCurrentTime()
                yield episode_service_pb2.SubscribeEpisodesResponse(
                    heartbeat=heartbeat, cursor=position
                )

    def _live_response(
        self, tenant: Tenant, entry: StoredEntry
    ) -> episode_service_pb2.SubscribeEpisodesResponse:
        """Built once per entry for all of a tenant's subscribers (they share the tail)."""
        key = (tenant.name, entry.stream_id)  # stream ids repeat across tenants' streams
        response = self._live.get(key)
        if response is None:
            response = episode_service_pb2.SubscribeEpisodesResponse(
                episode=_from_entry(entry), cursor=entry.stream_id
            )
            self._live[key] = response
        return response

    @mapped
    async def ListEpisodes(
        self, request: episode_service_pb2.ListEpisodesRequest, context: grpc.aio.ServicerContext
    ) -> episode_service_pb2.ListEpisodesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        types, outcomes = self._filter_names(request.filter, "filter", v)
        size = c.page_size("page_size", request.page_size, 50, 1000, v)
        v.raise_if_any()
        fingerprint = page_fingerprint(self._tokens, tenant, request)
        if request.page_token:
            _, position = page_start(self._tokens, request.page_token, fingerprint)
            start = "(" + position.decode()
        elif request.HasField("start_time"):
            start = f"{max(0, request.start_time.ToMilliseconds())}-0"  # none exist before 1970
        else:
            start = "-"
        end = "+"
        if request.HasField("end_time"):
            end_ms = request.end_time.ToMilliseconds()
            if end_ms <= 0:  # before the epoch: no episode can match
                return episode_service_pb2.ListEpisodesResponse()
            end = f"{end_ms - 1}-{MAX_SEQ}"
        scan_limit = max(4 * size, 1000)  # bounded work per call, even when few entries match
        scanned = await self._episodes.scan(tenant, start, end, scan_limit)
        episodes: list[episode_pb2.Episode] = []
        last, budget, full = "", self._page_bytes, False
        for entry in scanned:
            if self._matches(entry, request.filter, types, outcomes):
                episode = _from_entry(entry)
                budget -= episode.ByteSize() + 8  # and its field tag and length
                if budget < 0 and episodes:  # the next page starts with it
                    full = True
                    break
                episodes.append(episode)
            last = entry.stream_id
            if len(episodes) == size:
                break
        more = full or (
            bool(scanned) and (len(scanned) == scan_limit or last != scanned[-1].stream_id)
        )
        return episode_service_pb2.ListEpisodesResponse(
            episodes=episodes,
            next_page_token=self._tokens.encode(fingerprint, 0, last.encode()) if more else "",
        )

    @mapped
    async def SearchEpisodes(
        self,
        request: episode_service_pb2.SearchEpisodesRequest,
        context: grpc.aio.ServicerContext,
    ) -> episode_service_pb2.SearchEpisodesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        types, outcomes = self._filter_names(request.filter, "filter", v)
        size = c.page_size("page_size", request.page_size, 10, 100, v)
        v.text("query", request.query, limit=MAX_TEXT_BYTES)
        v.raise_if_any()
        fingerprint = page_fingerprint(self._tokens, tenant, request)
        offset, _ = page_start(self._tokens, request.page_token, fingerprint)
        if offset >= 1000:
            lag = await self._episodes.lag(tenant)
            return episode_service_pb2.SearchEpisodesResponse(index_lag=lag)
        found = await self._episodes.search(
            tenant,
            request.query,
            EpisodeQuery(
                agent_id=request.filter.agent_id,
                session_id=request.filter.session_id,
                types=tuple(sorted(types)),
                outcomes=tuple(sorted(outcomes)),
                start_time=(
                    request.start_time.ToNanoseconds() / 1e9
                    if request.HasField("start_time")
                    else None
                ),
                end_time=(
                    request.end_time.ToNanoseconds() / 1e9 if request.HasField("end_time") else None
                ),
                offset=offset,
                limit=size,
            ),
        )
        response = episode_service_pb2.SearchEpisodesResponse(index_lag=found.lag)
        for hit, stored in found.page:
            if stored is not None:
                response.results.add(episode=_from_entry(stored), similarity=hit.similarity)
        if found.total > offset + size:
            response.next_page_token = self._tokens.encode(fingerprint, offset + size)
        return response
