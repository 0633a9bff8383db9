"""LangGraph's long-term memory store (`BaseStore`) on Aether Memory.

    from aether_memory_client.langgraph import AetherStore

    store = AetherStore("127.0.0.1:50051", tenant="demo", agent="assistant")
    graph = builder.compile(store=store)  # nodes use it as any LangGraph store

Each item is one memory of `agent`, stored under a key made of its namespace and key (so a put
replaces the item in place, and equal values under two keys stay two items). The value is the
memory's content as JSON, or, when `fields` says which parts of a value to index, their text
is the content and the JSON rides in the metadata. A namespace prefix is a tag on the memory,
so a search under a prefix is one filtered hybrid search (vector, keywords, re-ranking) in the
service; `filter` conditions on the value are applied here, as LangGraph's own stores do.
Install with `pip install 'aether-memory-client[langgraph]'`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from aether.memory.v1 import memory_pb2, memory_service_pb2
from google.protobuf import json_format, timestamp_pb2
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

from .client import Client

NAMESPACE_TAG = "langgraph-ns:"  # + a digest of one namespace prefix
UNINDEXED_TAG = "langgraph-unindexed"  # put with index=False: listed, never a search hit
METADATA = "langgraph"  # the metadata field holding namespace, key and (maybe) the JSON value
MAX_DEPTH = 31  # a memory holds at most 32 tags: one per prefix, and maybe UNINDEXED_TAG
SEARCH_PAGE = 100  # SearchMemories' largest page; at most 1000 results are reachable
LIST_PAGE = 1000  # ListMemories' largest page


class AetherStore(BaseStore):
    """A LangGraph `BaseStore` whose items are memories of one agent in Aether Memory.

    `fields`: the paths of a value to index for search (LangGraph's `IndexConfig["fields"]`
    syntax, e.g. `["text", "notes[*].body"]`); by default the whole value. The service embeds
    the text itself, so no embedding function is configured here. Per-item TTLs are not
    supported (the service's tiers set retention).
    """

    supports_ttl = False

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        agent: str = "langgraph",
        tenant: str | None = None,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float | None = 30.0,
        fields: Sequence[str] | None = None,
    ) -> None:
        self.agent = agent
        self.client = Client(
            target, tenant=tenant, api_key=api_key, credentials=credentials, timeout_s=timeout_s
        )
        whole = fields is None or list(fields) == ["$"]
        self._paths = None if whole else [tokenize_path(f) for f in fields or ()]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> AetherStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- BaseStore ---------------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run the operations in order; a put and a get of one item in a batch see each other."""
        results: list[Result] = []
        for op in ops:
            validate_op_namespace(op)
            if isinstance(op, GetOp):
                results.append(self._get(op.namespace, op.key))
            elif isinstance(op, PutOp):
                self._put(op)
                results.append(None)
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise ValueError(f"unknown operation {type(op).__name__}")
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """`batch` on a worker thread (the synchronous channel is thread-safe)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.batch, list(ops))

    # ---- operations ----------------------------------------------------------------------------

    def _get(self, namespace: tuple[str, ...], key: str) -> Item | None:
        memory = self._find(namespace, key)
        fields = None if memory is None else _item_fields(memory)
        return None if fields is None else Item(**fields)

    def _find(self, namespace: tuple[str, ...], key: str) -> memory_pb2.Memory | None:
        try:
            response = self.client.memory.GetMemory(
                memory_service_pb2.GetMemoryRequest(
                    agent_id=self.agent, key=_memory_key(namespace, key)
                )
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                return None
            raise
        return response.memory

    def _put(self, op: PutOp) -> None:
        if op.value is None:
            found = self._find(op.namespace, op.key)
            if found is not None:
                self.client.memory.ForgetMemories(
                    memory_service_pb2.ForgetMemoriesRequest(
                        agent_id=self.agent, ids=memory_service_pb2.MemoryIds(ids=[found.id])
                    )
                )
            return
        if len(op.namespace) > MAX_DEPTH:
            raise InvalidNamespaceError(
                f"namespace {op.namespace} is deeper than {MAX_DEPTH} labels"
            )
        value = _dumps(op.value)
        meta: dict[str, Any] = {"namespace": list(op.namespace), "key": op.key}
        tags = [_namespace_tag(op.namespace[:depth]) for depth in range(1, len(op.namespace) + 1)]
        content = value
        paths = None if op.index is None else [tokenize_path(p) for p in op.index or ()]
        if op.index is False:
            tags.append(UNINDEXED_TAG)
        elif paths is not None or self._paths is not None:
            texts = [t for p in paths or self._paths or [] for t in get_text_at_path(op.value, p)]
            if texts:
                content = "\n".join(texts)
                meta["value"] = value
        memory = memory_pb2.Memory(
            agent_id=self.agent, key=_memory_key(op.namespace, op.key), content=content, tags=tags
        )
        memory.metadata.update({METADATA: meta})
        self.client.memory.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=memory))

    def _search(self, op: SearchOp) -> list[SearchItem]:
        wanted = op.offset + op.limit
        found: list[SearchItem] = []
        for memory, score in self._candidates(op.namespace_prefix, op.query):
            item = _item(memory, score)
            if item is None or (op.query and UNINDEXED_TAG in memory.tags):
                continue
            if all(_matches(item.value.get(k), v) for k, v in (op.filter or {}).items()):
                found.append(item)
                if len(found) >= wanted:
                    break
        return found[op.offset : wanted]

    def _candidates(
        self, prefix: tuple[str, ...], query: str | None
    ) -> Iterator[tuple[memory_pb2.Memory, float | None]]:
        """The agent's memories under `prefix`: by relevance to `query`, or newest first."""
        token = ""
        while True:
            if query:
                searched = self.client.memory.SearchMemories(
                    memory_service_pb2.SearchMemoriesRequest(
                        agent_id=self.agent,
                        query=query,
                        filter=_under(prefix),
                        page_size=SEARCH_PAGE,
                        page_token=token,
                    )
                )
                yield from ((r.memory, r.score) for r in searched.results)
                token = searched.next_page_token
            else:
                listed = self.client.memory.ListMemories(
                    memory_service_pb2.ListMemoriesRequest(
                        agent_id=self.agent,
                        filter=_under(prefix),
                        page_size=LIST_PAGE,
                        page_token=token,
                    )
                )
                yield from ((m, None) for m in listed.memories)
                token = listed.next_page_token
            if not token:
                return

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        """Every namespace holding an item, matched, cut to `max_depth`, sorted, paged. One
        listing of the agent's items (of one prefix when a condition names it exactly)."""
        conditions = op.match_conditions or ()
        exact = [
            c.path for c in conditions if c.match_type == "prefix" and "*" not in tuple(c.path)
        ]
        namespaces: set[tuple[str, ...]] = set()
        for memory, _ in self._candidates(tuple(max(exact, key=len, default=())), None):
            item = _item(memory)
            if item is None or not all(_holds(c, item.namespace) for c in conditions):
                continue
            depth = op.max_depth
            namespaces.add(item.namespace if depth is None else item.namespace[:depth])
        return sorted(namespaces)[op.offset : op.offset + op.limit]


# ---- encoding ------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _memory_key(namespace: tuple[str, ...], key: str) -> str:
    """The service's key of an item: its namespace and key, unambiguously (JSON)."""
    return json.dumps([*namespace, key], ensure_ascii=False, separators=(",", ":"))


def _namespace_tag(prefix: tuple[str, ...]) -> str:
    """One tag per namespace prefix; a digest keeps any label within a tag's 128 bytes."""
    digest = hashlib.blake2b(_dumps(list(prefix)).encode(), digest_size=16).hexdigest()
    return NAMESPACE_TAG + digest


def _under(prefix: tuple[str, ...]) -> memory_pb2.MemoryFilter:
    return memory_pb2.MemoryFilter(tags=[_namespace_tag(prefix)] if prefix else [])


def _time(value: timestamp_pb2.Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _item_fields(memory: memory_pb2.Memory) -> dict[str, Any] | None:
    """The LangGraph item a memory holds, as Item's arguments; None for a memory the store did
    not write."""
    meta = json_format.MessageToDict(memory.metadata).get(METADATA)
    if not isinstance(meta, dict) or "namespace" not in meta or "key" not in meta:
        return None
    return {
        "namespace": tuple(meta["namespace"]),
        "key": meta["key"],
        "value": json.loads(meta.get("value") or memory.content),
        "created_at": _time(memory.create_time),
        "updated_at": _time(memory.update_time),
    }


def _item(memory: memory_pb2.Memory, score: float | None = None) -> SearchItem | None:
    """The item as a search answers it, with its score (None without a query)."""
    fields = _item_fields(memory)
    return None if fields is None else SearchItem(**fields, score=score)


# ---- filters (the semantics of LangGraph's InMemoryStore and PostgresStore) ----------------------


def _holds(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    if condition.match_type not in ("prefix", "suffix"):
        raise ValueError(f"unknown match type {condition.match_type!r}")
    path = tuple(condition.path)
    if not path:
        return True
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p in ("*", n) for p, n in zip(path, part, strict=True))


_OPERATORS = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: float(a) > float(b),
    "$gte": lambda a, b: float(a) >= float(b),
    "$lt": lambda a, b: float(a) < float(b),
    "$lte": lambda a, b: float(a) <= float(b),
}


def _matches(value: Any, condition: Any) -> bool:
    """A value against one filter condition: equality, nested objects, lists element-wise, or
    operators ({"$gt": 3}) compared as numbers."""
    if isinstance(condition, dict):
        if any(k.startswith("$") for k in condition):
            for name, operand in condition.items():
                if name not in _OPERATORS:
                    raise ValueError(f"unsupported filter operator {name!r}")
                if value is None and name not in ("$eq", "$ne"):
                    return False
                if not _OPERATORS[name](value, operand):
                    return False
            return True
        return isinstance(value, dict) and all(
            _matches(value.get(k), v) for k, v in condition.items()
        )
    if isinstance(condition, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(condition)
            and all(_matches(a, b) for a, b in zip(value, condition, strict=True))
        )
    return bool(value == condition)
