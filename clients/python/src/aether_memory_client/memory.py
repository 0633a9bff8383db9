"""The high-level Python API: memories, sessions and episodes as plain values, no protobuf.

    from aether_memory_client import Memory

    with Memory("127.0.0.1:50051", tenant="demo", agent="me") as memory:
        memory.add("I am allergic to peanuts", tags=["health"])
        for hit in memory.search("which foods should I avoid?", k=3):
            print(hit.score, hit.content)
        chat = memory.session("s1")
        chat.append("user", "Book a table for two")
        saved = chat.checkpoint("before booking")
        memory.record("restaurant_search", outcome="success", session="s1")
        chat.restore(saved)

`AsyncMemory` is the same for asyncio (`async with AsyncMemory(...) as memory:`). Both sit on
`Client` / `AsyncClient`, so they retry reads after UNAVAILABLE the same way, and errors are
the server's gRPC statuses (`grpc.RpcError`, with the offending field named in its details).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar, cast

import grpc
from aether.memory.v1 import (
    agent_state_pb2,
    episode_pb2,
    episode_service_pb2,
    memory_pb2,
    memory_service_pb2,
    working_memory_pb2,
)
from google.protobuf import json_format

from ._agent import ToolCall, arguments_of, jsonable, log, prompt_block, struct
from .client import AsyncClient, Client
from .tools import AsyncTools, Tools

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class MemoryRecord:
    """A stored memory."""

    id: str
    content: str
    agent_id: str
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    importance: float | None = None
    session_id: str = ""
    created: datetime | None = None
    happened: datetime | None = None  # event_time: when the remembered thing happened
    key: str = ""  # the name it was added under, if any


@dataclass(frozen=True)
class Hit(MemoryRecord):
    """A search result: the memory, its final score (higher is better) and its cosine
    similarity to the query."""

    score: float = 0.0
    similarity: float = 0.0


@dataclass(frozen=True)
class Added(MemoryRecord):
    """What `add` stored; `deduplicated` when the agent already had this content, `replaced`
    when `key` named a memory, which now holds the new text."""

    deduplicated: bool = False
    replaced: bool = False


@dataclass(frozen=True)
class Message:
    """One message of a session's working memory."""

    role: str
    content: str


def _messages(session: working_memory_pb2.Session) -> list[Message]:
    return [Message(m.role, m.content) for m in session.messages]


def _append_request(
    session_id: str, agent: str, role: str, content: str
) -> memory_service_pb2.AppendWorkingMemoryRequest:
    return memory_service_pb2.AppendWorkingMemoryRequest(
        session_id=session_id,
        agent_id=agent,
        messages=[working_memory_pb2.ContextMessage(role=role, content=content)],
    )


def _episode(
    name: str,
    agent: str,
    kind: str,
    outcome: str | None,
    payload: Mapping[str, Any] | None,
    session: str | None,
    event_id: str | None,
) -> episode_service_pb2.RecordEpisodeRequest:
    """An episode: `kind` is tool_call, llm_call, error, checkpoint, ... (EpisodeType without
    its prefix), `outcome` success, failure, cancelled or pending."""
    episode = episode_pb2.Episode(
        event_id=event_id or uuid.uuid4().hex,
        agent_id=agent,
        session_id=session or "",
        type=episode_pb2.EpisodeType.Value(f"EPISODE_TYPE_{kind.upper()}"),
        name=name,
    )
    if outcome:
        episode.outcome = episode_pb2.EpisodeOutcome.Value(f"EPISODE_OUTCOME_{outcome.upper()}")
    if payload:
        episode.payload.update(dict(payload))
    return episode_service_pb2.RecordEpisodeRequest(episode=episode)


def _record_fields(memory: memory_pb2.Memory) -> dict[str, Any]:
    return {
        "id": memory.id,
        "content": memory.content,
        "agent_id": memory.agent_id,
        "tags": tuple(memory.tags),
        "metadata": json_format.MessageToDict(memory.metadata),
        "importance": memory.importance if memory.HasField("importance") else None,
        "session_id": memory.session_id,
        "created": memory.create_time.ToDatetime() if memory.HasField("create_time") else None,
        "happened": memory.event_time.ToDatetime() if memory.HasField("event_time") else None,
        "key": memory.key,
    }


def _store_request(
    text: str,
    agent: str,
    tags: Iterable[str],
    metadata: Mapping[str, Any] | None,
    importance: float | None,
    session: str | None,
    request_id: str | None,
    key: str | None = None,
) -> memory_service_pb2.StoreMemoryRequest:
    memory = memory_pb2.Memory(agent_id=agent, content=text, tags=list(tags), key=key or "")
    if metadata:
        memory.metadata.CopyFrom(struct(metadata))
    if importance is not None:
        memory.importance = importance
    if session:
        memory.session_id = session
    return memory_service_pb2.StoreMemoryRequest(memory=memory, request_id=request_id or "")


def _added(response: memory_service_pb2.StoreMemoryResponse) -> Added:
    return Added(
        **_record_fields(response.memory),
        deduplicated=response.deduplicated,
        replaced=response.replaced,
    )


def _get_request(
    memory_id: str, key: str | None, agent: str
) -> memory_service_pb2.GetMemoryRequest:
    if key:
        return memory_service_pb2.GetMemoryRequest(agent_id=agent, key=key)
    return memory_service_pb2.GetMemoryRequest(id=memory_id)


def _search_request(
    query: str, agent: str, k: int, tags: Iterable[str], min_similarity: float | None
) -> memory_service_pb2.SearchMemoriesRequest:
    request = memory_service_pb2.SearchMemoriesRequest(agent_id=agent, query=query, page_size=k)
    if tags:
        request.filter.tags.extend(tags)
    if min_similarity is not None:
        request.min_similarity = min_similarity
    return request


def _hits(response: memory_service_pb2.SearchMemoriesResponse) -> list[Hit]:
    return [
        Hit(
            **_record_fields(r.memory),
            score=r.score,
            similarity=r.breakdown.vector_similarity,
        )
        for r in response.results
    ]


def _forget_request(agent: str, ids: Sequence[str]) -> memory_service_pb2.ForgetMemoriesRequest:
    return memory_service_pb2.ForgetMemoriesRequest(
        agent_id=agent, ids=memory_service_pb2.MemoryIds(ids=list(ids))
    )


def _failed(error: BaseException) -> str:
    cancelled = isinstance(error, (KeyboardInterrupt, asyncio.CancelledError))
    return "cancelled" if cancelled else "failure"


def _cache_lookup(
    tool_name: str, arguments: dict[str, Any]
) -> memory_service_pb2.GetToolResultRequest:
    return memory_service_pb2.GetToolResultRequest(tool_name=tool_name, arguments=struct(arguments))


def _cache_hit(found: memory_service_pb2.GetToolResultResponse) -> tuple[bool, Any]:
    if not found.hit:
        return False, None
    return True, json_format.MessageToDict(found.tool_result.result).get("value")


def _cache_entry(
    tool_name: str, arguments: dict[str, Any], result: Any, ttl_s: float
) -> memory_service_pb2.PutToolResultRequest:
    request = memory_service_pb2.PutToolResultRequest(
        tool_result=agent_state_pb2.ToolResult(
            tool_name=tool_name,
            arguments=struct(arguments),
            result=struct({"value": jsonable(result)}),
        )
    )
    request.ttl.FromNanoseconds(int(ttl_s * 1e9))
    return request


def _summarize_request(
    agent: str, session_id: str, max_sentences: int
) -> memory_service_pb2.SummarizeMemoriesRequest:
    return memory_service_pb2.SummarizeMemoriesRequest(
        agent_id=agent, session_id=session_id, max_sentences=max_sentences
    )


def _closed(
    session: Session | AsyncSession, summary: MemoryRecord | None, checkpoint: int | None
) -> episode_service_pb2.RecordEpisodeRequest:
    payload: dict[str, Any] = {"summary_id": summary.id if summary else None}
    if checkpoint is not None:
        payload["checkpoint"] = checkpoint
    return _episode(
        "session_closed", session.agent, "checkpoint", "success", payload, session.id, None
    )


def _prompt(hits: Sequence[MemoryRecord], recent: Sequence[Message]) -> str:
    memories = [(h.happened.date().isoformat() if h.happened else "", h.content) for h in hits]
    return prompt_block(memories, [(m.role, m.content) for m in recent])


class Session:
    """A session's working memory, its checkpoints, and memories stored into it."""

    def __init__(self, memory: Memory, session_id: str, agent: str) -> None:
        self.memory, self.id, self.agent = memory, session_id, agent

    def append(self, role: str, content: str) -> list[Message]:
        """Add a message; returns the session's messages after it."""
        stub = self.memory.client.memory
        return _messages(
            stub.AppendWorkingMemory(_append_request(self.id, self.agent, role, content)).session
        )

    def messages(self) -> list[Message]:
        """The session's messages; none when it was never written or has expired."""
        try:
            response = self.memory.client.memory.GetWorkingMemory(
                memory_service_pb2.GetWorkingMemoryRequest(session_id=self.id)
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return _messages(response.session)

    def checkpoint(self, label: str = "") -> int:
        """Save the session as it is now; returns the checkpoint's number."""
        response = self.memory.client.memory.CreateCheckpoint(
            memory_service_pb2.CreateCheckpointRequest(session_id=self.id, label=label)
        )
        return int(response.checkpoint.number)

    def restore(self, number: int) -> list[Message]:
        """Roll the session back to a checkpoint; returns its messages then."""
        response = self.memory.client.memory.RestoreCheckpoint(
            memory_service_pb2.RestoreCheckpointRequest(session_id=self.id, number=number)
        )
        return _messages(response.session)

    def remember(self, text: str, **fields: Any) -> Added:
        """Store a long-term memory from this session (it learns its place in the session)."""
        return self.memory.add(text, agent=self.agent, session=self.id, **fields)

    def tool(
        self, name: str | None = None, *, cache_ttl_s: float | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a tool function: each call is recorded as an episode of this session (its
        arguments, result or error, latency, outcome and the current trace id). With
        `cache_ttl_s`, a call with the same arguments within the TTL returns the cached result
        without running the tool. Memory being unreachable never fails the tool: the episode
        or cache write is skipped with a warning."""

        def wrap(fn: Callable[P, R]) -> Callable[P, R]:
            tool_name = name or fn.__name__

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                call = ToolCall(tool_name, self.agent, self.id, arguments_of(fn, args, kwargs))
                if cache_ttl_s is not None:
                    hit, value = self._cached(tool_name, call.arguments)
                    if hit:
                        self._record(call.episode("success", value, cached=True))
                        return cast(R, value)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    self._record(call.episode(_failed(error), error=error))
                    raise
                self._record(call.episode("success", result))
                if cache_ttl_s is not None:
                    self._cache(tool_name, call.arguments, result, cache_ttl_s)
                return result

            return run

        return wrap

    def _cached(self, tool_name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        try:
            found = self.memory.client.memory.GetToolResult(_cache_lookup(tool_name, arguments))
        except grpc.RpcError as error:
            log.warning("tool cache not read for %s: %s", tool_name, error.code())
            return False, None
        return _cache_hit(found)

    def _cache(self, tool_name: str, arguments: dict[str, Any], result: Any, ttl_s: float) -> None:
        try:
            self.memory.client.memory.PutToolResult(
                _cache_entry(tool_name, arguments, result, ttl_s)
            )
        except grpc.RpcError as error:
            log.warning("tool result not cached for %s: %s", tool_name, error.code())

    def _record(self, request: episode_service_pb2.RecordEpisodeRequest) -> None:
        try:
            self.memory.client.episodes.RecordEpisode(request)
        except grpc.RpcError as error:
            log.warning("episode not recorded for %s: %s", request.episode.name, error.code())

    def context(self, query: str | None = None, *, k: int = 5, messages: int = 10) -> str:
        """What to put in the prompt: the `k` memories most relevant to `query` and the last
        `messages` messages of this session, as plain text (empty when there is neither)."""
        hits = self.memory.search(query, agent=self.agent, k=k) if query else []
        recent = self.messages()[-messages:] if messages else []
        return _prompt(hits, recent)

    def compress_and_close(self, max_sentences: int = 5) -> MemoryRecord | None:
        """End the session: its memories compacted into one summary memory (None when it
        stored none), a last checkpoint of its working memory, and a checkpoint episode."""
        try:
            summary: MemoryRecord | None = MemoryRecord(
                **_record_fields(
                    self.memory.client.memory.SummarizeMemories(
                        _summarize_request(self.agent, self.id, max_sentences)
                    ).summary
                )
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            summary = None
        number = None
        try:
            number = self.checkpoint("closed")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        self.memory.client.episodes.RecordEpisode(_closed(self, summary, number))
        return summary


class Memory:
    """Synchronous memories of one agent (each call may name another with `agent=`)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        agent: str = "default",
        tenant: str | None = None,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        self.agent = agent
        self.client = Client(
            target, tenant=tenant, api_key=api_key, credentials=credentials, timeout_s=timeout_s
        )

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def tools(self) -> Tools:
        """This agent's memory as tools a model calls: `memory.tools.call(name, arguments)`
        runs a tool call from OpenAI, Anthropic or any loop (schemas: `tools.openai_tools()`)."""
        return Tools(self.client, self.agent)

    def add(
        self,
        text: str,
        *,
        agent: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        session: str | None = None,
        request_id: str | None = None,
        key: str | None = None,
    ) -> Added:
        """Store `text`; with `request_id`, a retry returns the first call's answer; with
        `key`, the agent's memory under that key takes the new text (an upsert)."""
        response = self.client.memory.StoreMemory(
            _store_request(
                text, agent or self.agent, tags, metadata, importance, session, request_id, key
            )
        )
        return _added(response)

    def search(
        self,
        query: str,
        *,
        agent: str | None = None,
        k: int = 10,
        tags: Iterable[str] = (),
        min_similarity: float | None = None,
    ) -> list[Hit]:
        """The best `k` memories for `query`, best first (hybrid search, re-ranked)."""
        return _hits(
            self.client.memory.SearchMemories(
                _search_request(query, agent or self.agent, k, tags, min_similarity)
            )
        )

    def get(
        self, memory_id: str = "", *, key: str | None = None, agent: str | None = None
    ) -> MemoryRecord:
        """A memory by its id, or the agent's memory added under `key`."""
        response = self.client.memory.GetMemory(_get_request(memory_id, key, agent or self.agent))
        return MemoryRecord(**_record_fields(response.memory))

    def forget(self, *ids: str, agent: str | None = None) -> list[str]:
        """Forget these memories; returns the ids that were forgotten."""
        response = self.client.memory.ForgetMemories(_forget_request(agent or self.agent, ids))
        return list(response.forgotten_ids)

    def session(self, session_id: str, *, agent: str | None = None) -> Session:
        return Session(self, session_id, agent or self.agent)

    def start_session(
        self, task: str | None = None, *, session_id: str | None = None, agent: str | None = None
    ) -> Session:
        """A new session (a fresh id unless given), its working memory opened with `task` as
        the first user message when there is one."""
        session = self.session(session_id or uuid.uuid4().hex, agent=agent)
        if task:
            session.append("user", task)
        return session

    def record(
        self,
        name: str,
        *,
        kind: str = "tool_call",
        outcome: str | None = None,
        payload: Mapping[str, Any] | None = None,
        session: str | None = None,
        event_id: str | None = None,
        agent: str | None = None,
    ) -> str:
        """Record one episode (a tool call by default); returns its episode id. With the same
        `event_id` again, the first one's id comes back and nothing is stored twice."""
        response = self.client.episodes.RecordEpisode(
            _episode(name, agent or self.agent, kind, outcome, payload, session, event_id)
        )
        return str(response.episode.episode_id)


class AsyncSession:
    """The asyncio twin of `Session`."""

    def __init__(self, memory: AsyncMemory, session_id: str, agent: str) -> None:
        self.memory, self.id, self.agent = memory, session_id, agent

    async def append(self, role: str, content: str) -> list[Message]:
        response = await self.memory.client.memory.AppendWorkingMemory(
            _append_request(self.id, self.agent, role, content)
        )
        return _messages(response.session)

    async def messages(self) -> list[Message]:
        try:
            response = await self.memory.client.memory.GetWorkingMemory(
                memory_service_pb2.GetWorkingMemoryRequest(session_id=self.id)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
        return _messages(response.session)

    async def checkpoint(self, label: str = "") -> int:
        response = await self.memory.client.memory.CreateCheckpoint(
            memory_service_pb2.CreateCheckpointRequest(session_id=self.id, label=label)
        )
        return int(response.checkpoint.number)

    async def restore(self, number: int) -> list[Message]:
        response = await self.memory.client.memory.RestoreCheckpoint(
            memory_service_pb2.RestoreCheckpointRequest(session_id=self.id, number=number)
        )
        return _messages(response.session)

    async def remember(self, text: str, **fields: Any) -> Added:
        return await self.memory.add(text, agent=self.agent, session=self.id, **fields)

    def tool(
        self, name: str | None = None, *, cache_ttl_s: float | None = None
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """`Session.tool` for coroutine functions."""

        def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn!r} is not a coroutine function; use Session.tool")
            tool_name = name or fn.__name__

            @functools.wraps(fn)
            async def run(*args: P.args, **kwargs: P.kwargs) -> R:
                call = ToolCall(tool_name, self.agent, self.id, arguments_of(fn, args, kwargs))
                if cache_ttl_s is not None:
                    hit, value = await self._cached(tool_name, call.arguments)
                    if hit:
                        await self._record(call.episode("success", value, cached=True))
                        return cast(R, value)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as error:
                    await self._record(call.episode(_failed(error), error=error))
                    raise
                await self._record(call.episode("success", result))
                if cache_ttl_s is not None:
                    await self._cache(tool_name, call.arguments, result, cache_ttl_s)
                return result

            return run

        return wrap

    async def _cached(self, tool_name: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
        try:
            found = await self.memory.client.memory.GetToolResult(
                _cache_lookup(tool_name, arguments)
            )
        except grpc.aio.AioRpcError as error:
            log.warning("tool cache not read for %s: %s", tool_name, error.code())
            return False, None
        return _cache_hit(found)

    async def _cache(
        self, tool_name: str, arguments: dict[str, Any], result: Any, ttl_s: float
    ) -> None:
        try:
            await self.memory.client.memory.PutToolResult(
                _cache_entry(tool_name, arguments, result, ttl_s)
            )
        except grpc.aio.AioRpcError as error:
            log.warning("tool result not cached for %s: %s", tool_name, error.code())

    async def _record(self, request: episode_service_pb2.RecordEpisodeRequest) -> None:
        try:
            await self.memory.client.episodes.RecordEpisode(request)
        except grpc.aio.AioRpcError as error:
            log.warning("episode not recorded for %s: %s", request.episode.name, error.code())

    async def context(self, query: str | None = None, *, k: int = 5, messages: int = 10) -> str:
        """`Session.context`."""
        hits = await self.memory.search(query, agent=self.agent, k=k) if query else []
        recent = (await self.messages())[-messages:] if messages else []
        return _prompt(hits, recent)

    async def compress_and_close(self, max_sentences: int = 5) -> MemoryRecord | None:
        """`Session.compress_and_close`."""
        try:
            response = await self.memory.client.memory.SummarizeMemories(
                _summarize_request(self.agent, self.id, max_sentences)
            )
            summary: MemoryRecord | None = MemoryRecord(**_record_fields(response.summary))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            summary = None
        number = None
        try:
            number = await self.checkpoint("closed")
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await self.memory.client.episodes.RecordEpisode(_closed(self, summary, number))
        return summary


class AsyncMemory:
    """The asyncio twin of `Memory`."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        agent: str = "default",
        tenant: str | None = None,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 30.0,
    ) -> None:
        self.agent = agent
        self.client = AsyncClient(
            target, tenant=tenant, api_key=api_key, credentials=credentials, timeout_s=timeout_s
        )

    async def __aenter__(self) -> AsyncMemory:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    @property
    def tools(self) -> AsyncTools:
        """This agent's memory as tools a model calls: `await memory.tools.call(name, args)`."""
        return AsyncTools(self.client, self.agent)

    async def add(
        self,
        text: str,
        *,
        agent: str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        session: str | None = None,
        request_id: str | None = None,
        key: str | None = None,
    ) -> Added:
        response = await self.client.memory.StoreMemory(
            _store_request(
                text, agent or self.agent, tags, metadata, importance, session, request_id, key
            )
        )
        return _added(response)

    async def search(
        self,
        query: str,
        *,
        agent: str | None = None,
        k: int = 10,
        tags: Iterable[str] = (),
        min_similarity: float | None = None,
    ) -> list[Hit]:
        return _hits(
            await self.client.memory.SearchMemories(
                _search_request(query, agent or self.agent, k, tags, min_similarity)
            )
        )

    async def get(
        self, memory_id: str = "", *, key: str | None = None, agent: str | None = None
    ) -> MemoryRecord:
        response = await self.client.memory.GetMemory(
            _get_request(memory_id, key, agent or self.agent)
        )
        return MemoryRecord(**_record_fields(response.memory))

    async def forget(self, *ids: str, agent: str | None = None) -> list[str]:
        response = await self.client.memory.ForgetMemories(
            _forget_request(agent or self.agent, ids)
        )
        return list(response.forgotten_ids)

    def session(self, session_id: str, *, agent: str | None = None) -> AsyncSession:
        return AsyncSession(self, session_id, agent or self.agent)

    async def start_session(
        self, task: str | None = None, *, session_id: str | None = None, agent: str | None = None
    ) -> AsyncSession:
        """`Memory.start_session`."""
        session = self.session(session_id or uuid.uuid4().hex, agent=agent)
        if task:
            await session.append("user", task)
        return session

    async def record(
        self,
        name: str,
        *,
        kind: str = "tool_call",
        outcome: str | None = None,
        payload: Mapping[str, Any] | None = None,
        session: str | None = None,
        event_id: str | None = None,
        agent: str | None = None,
    ) -> str:
        response = await self.client.episodes.RecordEpisode(
            _episode(name, agent or self.agent, kind, outcome, payload, session, event_id)
        )
        return str(response.episode.episode_id)
