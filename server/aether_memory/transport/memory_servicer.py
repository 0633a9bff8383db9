"""MemoryService: validate, convert, one use-case call, convert back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from aether.memory.v1 import (
    agent_state_pb2,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    working_memory_pb2,
)
from google.protobuf.message import Message

from ..domain.documents import AgentStateDoc, CheckpointDoc, ToolResultDoc
from ..domain.errors import InvalidField, TooLarge
from ..domain.memory import Memory, MemoryFilter
from ..domain.paging import PageTokens
from ..domain.scoring import Weights
from ..domain.tenant import Tenant
from ..service.agent_state import AgentStates
from ..service.idempotency import Idempotent
from ..service.memories import MUTABLE_PATHS, MemoryBank, SearchRequest
from ..service.ports import Replication
from ..service.self_model import SelfModel
from ..service.sessions import Sessions
from ..service.tool_cache import ToolCache
from ..settings import Settings
from . import convert as c
from .access import may_write
from .errors import mapped
from .paging import page_fingerprint, page_start
from .tenancy import call_tenant

M = TypeVar("M", bound=Message)
MAX_BATCH = 100
MAX_QUERY_BYTES = 8192
MAX_STATE_BYTES = 64 * 1024
MAX_TOOL_RESULT_BYTES = 256 * 1024
MAX_APPEND = 100
# RerankMode -> SearchRequest.rerank (unset: the server's setting).
RERANK_CHOICES = {
    memory_service_pb2.RERANK_MODE_LEARNED: True,
    memory_service_pb2.RERANK_MODE_NONE: False,
}


class MemoryServicer(memory_service_pb2_grpc.MemoryServiceServicer):
    def __init__(
        self,
        bank: MemoryBank,
        sessions: Sessions,
        states: AgentStates,
        idempotent: Idempotent,
        tools: ToolCache,
        page_tokens: PageTokens,
        settings: Settings,
        self_model: SelfModel,
        replicas: Replication | None = None,
    ) -> None:
        """`replicas`: what each write waits for before it is answered (errors.WRITES)."""
        self._replicas = replicas
        self._bank = bank
        self._sessions = sessions
        self._states = states
        self._idempotent = idempotent
        self._tools = tools
        self._tokens = page_tokens
        self._settings = settings
        self._self_model = self_model

    def _tenant(self, context: grpc.aio.ServicerContext) -> Tenant:
        return call_tenant(context, self._settings.default_tenant)

    async def confirm_replicated(self, context: grpc.aio.ServicerContext) -> None:
        if self._replicas is not None:
            await self._replicas.confirm(self._tenant(context))

    # ---- long-term memory -----------------------------------------------------------------

    def _storing(
        self, tenant: Tenant, request: memory_service_pb2.StoreMemoryRequest, draft: Memory
    ) -> Callable[[], Awaitable[memory_service_pb2.StoreMemoryResponse]]:
        async def compute() -> memory_service_pb2.StoreMemoryResponse:
            stored = await self._bank.store(tenant, draft, c.vector_of(request.memory.embedding))
            return memory_service_pb2.StoreMemoryResponse(
                memory=c.memory_to_proto(stored.memory, full=False),
                deduplicated=stored.deduplicated,
                replaced=stored.replaced,
            )

        return compute

    async def _store_one(
        self, tenant: Tenant, request: memory_service_pb2.StoreMemoryRequest, draft: Memory
    ) -> memory_service_pb2.StoreMemoryResponse:
        return await self._idempotent.once(
            tenant,
            "StoreMemory",
            request,
            request.request_id,
            memory_service_pb2.StoreMemoryResponse,
            self._storing(tenant, request, draft),
        )

    @mapped
    async def StoreMemory(
        self, request: memory_service_pb2.StoreMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.StoreMemoryResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        if not request.HasField("memory"):
            raise InvalidField.one("memory", "is required")
        draft = c.memory_from_proto(request.memory, "memory", v)
        v.raise_if_any()
        return await self._store_one(tenant, request, draft)

    @mapped
    async def BatchStoreMemories(
        self,
        request: memory_service_pb2.BatchStoreMemoriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.BatchStoreMemoriesResponse:
        tenant = self._tenant(context)
        if not request.requests:
            raise InvalidField.one("requests", "must hold at least one request")
        if len(request.requests) > MAX_BATCH:
            raise TooLarge("requests", MAX_BATCH, "requests")
        v = c.Violations()
        drafts = [
            c.memory_from_proto(r.memory, f"requests[{i}].memory", v)
            for i, r in enumerate(request.requests)
        ]
        for i, r in enumerate(request.requests):
            if r.memory.embedding and len(r.memory.embedding) != self._bank.dimension:
                v.add(
                    f"requests[{i}].memory.embedding",
                    f"must have {self._bank.dimension} values, not {len(r.memory.embedding)}",
                )
        v.raise_if_any()  # atomic validation: nothing is stored when any item is invalid
        responses = await self._idempotent.each(
            tenant,
            "StoreMemory",
            [
                (r.request_id, r, f"requests[{i}].request_id", self._storing(tenant, r, draft))
                for i, (r, draft) in enumerate(zip(request.requests, drafts, strict=True))
            ],
            memory_service_pb2.StoreMemoryResponse,
        )
        return memory_service_pb2.BatchStoreMemoriesResponse(responses=responses)

    @mapped
    async def GetMemory(
        self, request: memory_service_pb2.GetMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.GetMemoryResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        if request.key:
            if request.id:
                v.add("id", "must be empty when key is set")
            v.identifier("agent_id", request.agent_id, required=True)
            c.check_key("key", request.key, v)
        else:
            v.identifier("id", request.id, required=True)
        v.enum("view", request.view, {1: None, 2: None}, allow_unset=True)
        v.raise_if_any()
        if request.key:
            memory = await self._bank.get_by_key(
                tenant, request.agent_id, request.key, record_access=may_write()
            )
        else:
            memory = await self._bank.get(tenant, request.id, record_access=may_write())
        return memory_service_pb2.GetMemoryResponse(
            memory=c.memory_to_proto(memory, full=request.view == memory_pb2.MEMORY_VIEW_FULL)
        )

    @mapped
    async def ListMemories(
        self, request: memory_service_pb2.ListMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.ListMemoriesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        flt = c.filter_from_proto(request.agent_id, request.filter, "filter", v)
        size = c.page_size("page_size", request.page_size, 50, 1000, v)
        v.enum("view", request.view, {1: None, 2: None}, allow_unset=True)
        v.raise_if_any()
        fingerprint = page_fingerprint(self._tokens, tenant, request)
        offset, _ = page_start(self._tokens, request.page_token, fingerprint)
        memories, more = await self._bank.page(tenant, flt, offset, size)
        full = request.view == memory_pb2.MEMORY_VIEW_FULL
        return memory_service_pb2.ListMemoriesResponse(
            memories=[c.memory_to_proto(m, full=full) for m in memories],
            next_page_token=self._tokens.encode(fingerprint, offset + size) if more else "",
        )

    @mapped
    async def SearchMemories(
        self, request: memory_service_pb2.SearchMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.SearchMemoriesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        flt = c.filter_from_proto(request.agent_id, request.filter, "filter", v)
        size = c.page_size("page_size", request.page_size, 10, 100, v)
        v.enum("mode", request.mode, {1: None, 2: None, 3: None}, allow_unset=True)
        v.enum("view", request.view, {1: None, 2: None}, allow_unset=True)
        v.enum("rerank", request.rerank, RERANK_CHOICES, allow_unset=True)
        mode = request.mode or memory_service_pb2.SEARCH_MODE_HYBRID
        if not request.query.strip() and not request.query_embedding:
            v.add("query", "is required unless query_embedding is given")
        if mode == memory_service_pb2.SEARCH_MODE_KEYWORD and not request.query.strip():
            v.add("query", "is required for keyword search")
        if len(request.query.encode()) > MAX_QUERY_BYTES:
            raise TooLarge("query", MAX_QUERY_BYTES)
        c.check_vector("query_embedding", request.query_embedding, v)
        weights = self._weights(request.weights, v)
        threshold = request.min_similarity if request.HasField("min_similarity") else None
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            v.add("min_similarity", "must be within -1.0..1.0 (a cosine similarity)")
        v.raise_if_any()
        fingerprint = page_fingerprint(self._tokens, tenant, request)
        offset, _ = page_start(self._tokens, request.page_token, fingerprint)
        if offset >= 1000:
            return memory_service_pb2.SearchMemoriesResponse()
        results, more = await self._bank.search(
            tenant,
            SearchRequest(
                filter=flt,
                query=request.query,
                query_vector=c.vector_of(request.query_embedding),
                use_vector=mode != memory_service_pb2.SEARCH_MODE_KEYWORD,
                use_keywords=mode != memory_service_pb2.SEARCH_MODE_VECTOR and bool(request.query),
                weights=weights,
                offset=offset,
                limit=size,
                rerank=RERANK_CHOICES.get(request.rerank),
                record_access=may_write(),
                min_similarity=threshold,
            ),
        )
        full = request.view == memory_pb2.MEMORY_VIEW_FULL
        return memory_service_pb2.SearchMemoriesResponse(
            results=[
                memory_service_pb2.SearchMemoriesResult(
                    memory=c.memory_to_proto(r.memory, full=full),
                    score=r.candidate.score,
                    breakdown=memory_pb2.ScoreBreakdown(
                        vector_similarity=r.candidate.vector_similarity,
                        keyword_score=r.candidate.keyword_score,
                        fused_rank_score=r.candidate.fused,
                        recency=r.candidate.recency,
                        importance=r.candidate.importance,
                        frequency=r.candidate.frequency,
                        rerank_score=r.candidate.rerank,
                    ),
                )
                for r in results
            ],
            next_page_token=self._tokens.encode(fingerprint, offset + size) if more else "",
        )

    @staticmethod
    def _weights(message: memory_service_pb2.SearchWeights, v: c.Violations) -> Weights:
        defaults = Weights()
        values = {}
        for name in ("relevance", "recency", "importance", "frequency"):
            if message.HasField(name):
                value = getattr(message, name)
                if not 0.0 <= value <= 100.0:
                    v.add(f"weights.{name}", "must be between 0 and 100")
                values[name] = value
        half_life = defaults.recency_half_life_s
        if message.HasField("recency_half_life"):
            half_life = message.recency_half_life.ToTimedelta().total_seconds()
            if half_life <= 0:
                v.add("weights.recency_half_life", "must be positive")
                half_life = defaults.recency_half_life_s
        return Weights(recency_half_life_s=half_life, **values)

    @mapped
    async def UpdateMemory(
        self, request: memory_service_pb2.UpdateMemoryRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.UpdateMemoryResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        paths = set(request.update_mask.paths)
        if "*" in paths:
            paths = set(MUTABLE_PATHS)
        if not paths:
            v.add("update_mask", "must name at least one field")
        for path in sorted(paths - MUTABLE_PATHS):
            v.add("update_mask", f"{path!r} cannot be updated")
        v.identifier("memory.id", request.memory.id, required=True)
        probe = memory_pb2.Memory()
        probe.CopyFrom(request.memory)
        if "content" not in paths:
            probe.content = "unchanged"  # only validate what the mask changes
        probe.agent_id = probe.agent_id or "unchanged"
        patch = c.memory_from_proto(probe, "memory", v)
        v.raise_if_any()
        patch.id = request.memory.id

        async def compute() -> memory_service_pb2.UpdateMemoryResponse:
            memory = await self._bank.update(
                tenant, patch, paths & MUTABLE_PATHS, c.vector_of(request.memory.embedding)
            )
            return memory_service_pb2.UpdateMemoryResponse(
                memory=c.memory_to_proto(memory, full=False)
            )

        return await self._idempotent.once(
            tenant,
            "UpdateMemory",
            request,
            request.request_id,
            memory_service_pb2.UpdateMemoryResponse,
            compute,
        )

    @mapped
    async def ForgetMemories(
        self, request: memory_service_pb2.ForgetMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.ForgetMemoriesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        selector = request.WhichOneof("selector")
        ids: list[str] | None = None
        flt: MemoryFilter | None = None
        if selector == "ids":
            ids = list(request.ids.ids)
            if not ids:
                v.add("ids.ids", "must hold at least one id")
            if len(ids) > 1000:
                raise TooLarge("ids.ids", 1000, "ids")
            for i, memory_id in enumerate(ids):
                v.identifier(f"ids.ids[{i}]", memory_id, required=True)
            v.identifier("agent_id", request.agent_id, required=True)
        elif selector == "filter":
            flt = c.filter_from_proto(request.agent_id, request.filter, "filter", v)
        else:
            v.add("selector", "set either ids or filter")
        v.raise_if_any()

        async def compute() -> memory_service_pb2.ForgetMemoriesResponse:
            forgotten = await self._bank.forget(tenant, request.agent_id, ids, flt, request.cascade)
            return memory_service_pb2.ForgetMemoriesResponse(forgotten_ids=forgotten)

        return await self._idempotent.once(
            tenant,
            "ForgetMemories",
            request,
            request.request_id,
            memory_service_pb2.ForgetMemoriesResponse,
            compute,
        )

    @mapped
    async def SummarizeMemories(
        self,
        request: memory_service_pb2.SummarizeMemoriesRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.SummarizeMemoriesResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("agent_id", request.agent_id, required=True)
        v.identifier("session_id", request.session_id, required=True)
        if not 0 <= request.max_sentences <= 50:
            v.add("max_sentences", "must be between 0 and 50")
        v.raise_if_any()

        async def compute() -> memory_service_pb2.SummarizeMemoriesResponse:
            summary, sources = await self._bank.summarize(
                tenant, request.agent_id, request.session_id, request.max_sentences or 5
            )
            return memory_service_pb2.SummarizeMemoriesResponse(
                summary=c.memory_to_proto(summary, full=False), source_ids=sources
            )

        return await self._idempotent.once(
            tenant,
            "SummarizeMemories",
            request,
            request.request_id,
            memory_service_pb2.SummarizeMemoriesResponse,
            compute,
        )

    # ---- working memory and checkpoints -----------------------------------------------------

    def _check_messages(
        self, field: str, messages: list[working_memory_pb2.ContextMessage], v: c.Violations
    ) -> None:
        for i, message in enumerate(messages):
            v.identifier(f"{field}[{i}].role", message.role, required=True)
            v.text(
                f"{field}[{i}].content", message.content, limit=c.MAX_CONTENT_BYTES, required=False
            )
            c.check_struct_size(f"{field}[{i}].metadata", message.metadata, c.MAX_METADATA_BYTES)

    @mapped
    async def GetWorkingMemory(
        self,
        request: memory_service_pb2.GetWorkingMemoryRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.GetWorkingMemoryResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("session_id", request.session_id, required=True)
        v.raise_if_any()
        doc = await self._sessions.get(tenant, request.session_id)
        return memory_service_pb2.GetWorkingMemoryResponse(session=c.session_to_proto(doc))

    @mapped
    async def PutWorkingMemory(
        self,
        request: memory_service_pb2.PutWorkingMemoryRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.PutWorkingMemoryResponse:
        tenant = self._tenant(context)
        session = request.session
        v = c.Violations()
        v.identifier("session.session_id", session.session_id, required=True)
        v.identifier("session.agent_id", session.agent_id, required=False)
        self._check_messages("session.messages", list(session.messages), v)
        c.check_struct_size("session.state", session.state, MAX_STATE_BYTES)
        if request.HasField("expected_revision") and request.expected_revision < 0:
            v.add("expected_revision", "must not be negative")
        v.raise_if_any()
        doc = await self._sessions.put(
            tenant,
            {
                "session_id": session.session_id,
                "agent_id": session.agent_id,
                "messages": [c.message_to_doc(m) for m in session.messages],
                "state": c.struct_to_dict(session.state),
            },
            request.expected_revision if request.HasField("expected_revision") else None,
        )
        return memory_service_pb2.PutWorkingMemoryResponse(session=c.session_to_proto(doc))

    @mapped
    async def AppendWorkingMemory(
        self,
        request: memory_service_pb2.AppendWorkingMemoryRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.AppendWorkingMemoryResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("session_id", request.session_id, required=True)
        v.identifier("agent_id", request.agent_id, required=False)
        if not request.messages:
            v.add("messages", "must hold at least one message")
        if len(request.messages) > MAX_APPEND:
            raise TooLarge("messages", MAX_APPEND, "messages")
        self._check_messages("messages", list(request.messages), v)
        v.raise_if_any()
        doc = await self._sessions.append(
            tenant,
            request.session_id,
            request.agent_id,
            [c.message_to_doc(m) for m in request.messages],
        )
        return memory_service_pb2.AppendWorkingMemoryResponse(session=c.session_to_proto(doc))

    def _checkpoint(self, doc: CheckpointDoc) -> working_memory_pb2.Checkpoint:
        message = working_memory_pb2.Checkpoint(
            session_id=doc["session_id"],
            number=int(doc["number"]),
            label=doc.get("label", ""),
            create_time=c.timestamp_us(doc["create_time"]),
        )
        if "session" in doc:
            message.session.CopyFrom(c.session_to_proto(doc["session"]))
        return message

    @mapped
    async def CreateCheckpoint(
        self,
        request: memory_service_pb2.CreateCheckpointRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.CreateCheckpointResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("session_id", request.session_id, required=True)
        v.text("label", request.label, limit=256, required=False)
        v.raise_if_any()
        doc = await self._sessions.checkpoint(tenant, request.session_id, request.label)
        return memory_service_pb2.CreateCheckpointResponse(checkpoint=self._checkpoint(doc))

    @mapped
    async def ListCheckpoints(
        self,
        request: memory_service_pb2.ListCheckpointsRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.ListCheckpointsResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("session_id", request.session_id, required=True)
        size = c.page_size("page_size", request.page_size, 50, 1000, v)
        v.raise_if_any()
        fingerprint = page_fingerprint(self._tokens, tenant, request)
        offset, _ = page_start(self._tokens, request.page_token, fingerprint)
        docs, more = await self._sessions.checkpoints(tenant, request.session_id, offset, size)
        return memory_service_pb2.ListCheckpointsResponse(
            checkpoints=[self._checkpoint(d) for d in docs],
            next_page_token=self._tokens.encode(fingerprint, offset + size) if more else "",
        )

    @mapped
    async def RestoreCheckpoint(
        self,
        request: memory_service_pb2.RestoreCheckpointRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.RestoreCheckpointResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("session_id", request.session_id, required=True)
        if request.number < 1:
            v.add("number", "must be at least 1")
        v.raise_if_any()
        doc = await self._sessions.restore(tenant, request.session_id, request.number)
        return memory_service_pb2.RestoreCheckpointResponse(session=c.session_to_proto(doc))

    # ---- tool cache ------------------------------------------------------------------------

    def _tool_result(self, doc: ToolResultDoc) -> agent_state_pb2.ToolResult:
        return agent_state_pb2.ToolResult(
            tool_name=doc["tool_name"],
            arguments=c.dict_to_struct(doc.get("arguments")),
            result=c.dict_to_struct(doc.get("result")),
            create_time=c.timestamp_us(doc.get("create_time")),
            expire_time=c.timestamp_us(doc.get("expire_time")),
        )

    @mapped
    async def GetToolResult(
        self, request: memory_service_pb2.GetToolResultRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.GetToolResultResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("tool_name", request.tool_name, required=True)
        v.raise_if_any()
        doc = await self._tools.get(tenant, request.tool_name, c.struct_to_dict(request.arguments))
        if doc is None:
            return memory_service_pb2.GetToolResultResponse(hit=False)
        return memory_service_pb2.GetToolResultResponse(
            hit=True, tool_result=self._tool_result(doc)
        )

    @mapped
    async def PutToolResult(
        self, request: memory_service_pb2.PutToolResultRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.PutToolResultResponse:
        tenant = self._tenant(context)
        entry = request.tool_result
        v = c.Violations()
        v.identifier("tool_result.tool_name", entry.tool_name, required=True)
        c.check_struct_size("tool_result.result", entry.result, MAX_TOOL_RESULT_BYTES)
        c.check_struct_size("tool_result.arguments", entry.arguments, c.MAX_METADATA_BYTES)
        ttl = None
        if request.HasField("ttl"):
            ttl = request.ttl.ToTimedelta().total_seconds()
            if not 1 <= ttl <= 7 * 24 * 3600:
                v.add("ttl", "must be between 1 s and 7 days")
        v.raise_if_any()
        doc = await self._tools.put(
            tenant,
            entry.tool_name,
            c.struct_to_dict(entry.arguments),
            c.struct_to_dict(entry.result),
            ttl,
        )
        return memory_service_pb2.PutToolResultResponse(tool_result=self._tool_result(doc))

    # ---- agent state and self-model ---------------------------------------------------------

    @staticmethod
    def _agent_state(doc: AgentStateDoc) -> agent_state_pb2.AgentState:
        return agent_state_pb2.AgentState(
            agent_id=doc["agent_id"],
            state=c.dict_to_struct(doc.get("state")),
            revision=int(doc.get("revision", 0)),
            update_time=c.timestamp_us(doc.get("update_time")),
        )

    @mapped
    async def GetAgentState(
        self, request: memory_service_pb2.GetAgentStateRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.GetAgentStateResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("agent_id", request.agent_id, required=True)
        v.raise_if_any()
        doc = await self._states.get(tenant, request.agent_id)
        return memory_service_pb2.GetAgentStateResponse(agent_state=self._agent_state(doc))

    @mapped
    async def UpdateAgentState(
        self,
        request: memory_service_pb2.UpdateAgentStateRequest,
        context: grpc.aio.ServicerContext,
    ) -> memory_service_pb2.UpdateAgentStateResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        state = request.agent_state
        v.identifier("agent_state.agent_id", state.agent_id, required=True)
        c.check_struct_size("agent_state.state", state.state, MAX_STATE_BYTES)
        only_keys: list[str] | None = None
        paths = list(request.update_mask.paths)
        if paths and paths != ["state"]:
            only_keys = []
            for path in paths:
                if not path.startswith("state.") or len(path) == len("state."):
                    v.add("update_mask", f"{path!r} must be 'state' or 'state.<key>'")
                else:
                    only_keys.append(path.removeprefix("state."))
        v.raise_if_any()
        doc = await self._states.update(
            tenant, state.agent_id, c.struct_to_dict(state.state), only_keys
        )
        return memory_service_pb2.UpdateAgentStateResponse(agent_state=self._agent_state(doc))

    @mapped
    async def DescribeSelf(
        self, request: memory_service_pb2.DescribeSelfRequest, context: grpc.aio.ServicerContext
    ) -> memory_service_pb2.DescribeSelfResponse:
        tenant = self._tenant(context)
        v = c.Violations()
        v.identifier("agent_id", request.agent_id, required=True)
        if len(request.topic.encode()) > MAX_QUERY_BYTES:
            raise TooLarge("topic", MAX_QUERY_BYTES)
        if not 0 <= request.max_memories <= 50:
            v.add("max_memories", "must be between 0 and 50")
        v.raise_if_any()
        described = await self._self_model.describe(
            tenant, request.agent_id, request.topic, request.max_memories, record_access=may_write()
        )
        response = memory_service_pb2.DescribeSelfResponse()
        for r in described.memories:
            response.memories.add(
                memory=c.memory_to_proto(r.memory, full=False), score=r.candidate.score
            )
        for tier, kind, count in described.counts:
            response.memory_counts.add(
                tier=c.TIER_TO_PROTO[tier], type=c.TYPE_TO_PROTO[kind], count=count
            )
        outcomes = described.outcomes
        stats = response.episode_stats
        stats.SetInParent()  # present even for an agent with no episodes
        stats.total, stats.succeeded, stats.failed = (
            outcomes.total,
            outcomes.succeeded,
            outcomes.failed,
        )
        if outcomes.mean_latency_ns is not None:
            stats.mean_latency.FromNanoseconds(outcomes.mean_latency_ns)
        if outcomes.window_start_ms is not None:
            stats.window_start_time.FromMilliseconds(outcomes.window_start_ms)
        if described.state is not None:
            response.agent_state.CopyFrom(self._agent_state(described.state))
        return response
