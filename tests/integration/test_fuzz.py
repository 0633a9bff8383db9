"""Property-based fuzzing of every unary RPC and of RecordEpisodes: requests are generated from
the message descriptors (every field, nested messages, unknown enum values, RediSearch syntax and
odd unicode in strings). Whatever arrives, the service answers OK or a documented status with
google.rpc.Status details (never UNKNOWN or INTERNAL), and data stored beforehand is unchanged.

CI runs a derandomized, bounded pass (the "ci" Hypothesis profile); developers get new inputs
on every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aether.memory.v1 import (
    episode_service_pb2,
    memory_pb2,
    memory_service_pb2,
)
from google.protobuf import descriptor as d
from google.protobuf import message as pb_message
from google.protobuf import struct_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Client, failure

EXAMPLES = 40
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
SPICY = [
    "",
    " ",
    "*",
    "..",
    "@tenant:{other}",
    "a|b",
    "-(x)",
    "{t}:x",
    "%",
    "\x00",
    "ü̈ 🧠",
    "a" * 300,
    "aether:mem:{default}:x",
    "agent-1",
    "s1",
]
text = st.one_of(st.sampled_from(SPICY), st.text(max_size=40))


def strategy_for(descriptor: d.Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy of messages of `descriptor`: each field present or not, at any value."""
    if descriptor.full_name == "google.protobuf.Struct":
        scalar = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), text)
        return st.dictionaries(text, scalar, max_size=4).map(_struct)
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.integers(-(10**11), 10**11).map(lambda s: timestamp_pb2.Timestamp(seconds=s))
    fields = {}
    for field in descriptor.fields:
        value = _field(field, depth)
        if value is not None:
            fields[field.name] = st.one_of(st.none(), value)
    return st.fixed_dictionaries(fields).map(lambda kw: _build(descriptor, kw))


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def _build(descriptor: d.Descriptor, values: dict[str, Any]) -> pb_message.Message:
    from google.protobuf import message_factory

    message = message_factory.GetMessageClass(descriptor)()
    oneofs_set: set[str] = set()
    for name, value in values.items():
        if value is None:
            continue
        field = descriptor.fields_by_name[name]
        if field.containing_oneof is not None:
            if field.containing_oneof.name in oneofs_set:
                continue
            oneofs_set.add(field.containing_oneof.name)
        if field.is_repeated:
            target = getattr(message, name)
            for item in value:
                if field.type == d.FieldDescriptor.TYPE_MESSAGE:
                    target.add().CopyFrom(item)
                else:
                    target.append(item)
        elif field.type == d.FieldDescriptor.TYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _scalar(field: d.FieldDescriptor) -> st.SearchStrategy[Any] | None:
    t = field.type
    if t == d.FieldDescriptor.TYPE_STRING:
        return text
    if t == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=16)
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == d.FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-5, 50))
    if t in (d.FieldDescriptor.TYPE_INT32, d.FieldDescriptor.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (d.FieldDescriptor.TYPE_UINT32, d.FieldDescriptor.TYPE_UINT64):
        return st.integers(0, 2**32 - 1)
    return None


def _field(field: d.FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.type == d.FieldDescriptor.TYPE_MESSAGE:
        if depth > 3 or field.message_type.GetOptions().map_entry:
            return None
        single: st.SearchStrategy[Any] = st.deferred(
            lambda: strategy_for(field.message_type, depth + 1)
        )
    else:
        scalar = _scalar(field)
        if scalar is None:
            return None
        single = scalar
    if field.is_repeated:
        return st.lists(single, max_size=3)
    return single


UNARY = [
    (service, method)
    for service, module in (
        ("MemoryService", memory_service_pb2),
        ("EpisodeService", episode_service_pb2),
    )
    for method in module.DESCRIPTOR.services_by_name[service].methods
    if not method.client_streaming and not method.server_streaming
]


async def _canary(client: Client) -> tuple[str, str]:
    stored = await client.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(agent_id="agent-1", content="The fuzz canary must survive.")
        ),
        metadata=client.md,
    )
    return stored.memory.id, stored.memory.content


async def _check_canary(client: Client, canary: tuple[str, str]) -> None:
    got = await client.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=canary[0]), metadata=client.md
    )
    assert got.memory.content == canary[1]


def _check_status(error: grpc.aio.AioRpcError, method: str) -> None:
    assert error.code() in ALLOWED, f"{method}: {error.code()} {error.details()}"
    failure(error)  # a google.rpc.Status with details, or this raises


@pytest.mark.parametrize(("service_name", "method"), UNARY, ids=[f"{s}.{m.name}" for s, m in UNARY])
async def test_any_request_gets_a_documented_status_and_corrupts_nothing(
    client: Client, service_name: str, method: d.MethodDescriptor
) -> None:
    stub = client.memory if service_name == "MemoryService" else client.episodes
    call = getattr(stub, method.name)
    canary = await _canary(client)
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=EXAMPLES,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(strategy_for(method.input_type))
    def fuzz(request: pb_message.Message) -> None:
        # Hypothesis drives a sync function; each call runs on the test's loop in a thread-safe
        # way by scheduling it there from this worker thread.
        future = asyncio.run_coroutine_threadsafe(_one(call, request, method.name, client), loop)
        future.result(60)

    await asyncio.to_thread(fuzz)
    await _check_canary(client, canary)


async def _one(call: Any, request: pb_message.Message, name: str, client: Client) -> None:
    try:
        await call(request, metadata=client.md, timeout=30)
    except grpc.aio.AioRpcError as error:
        _check_status(error, name)


async def test_record_episodes_survives_any_request_stream(client: Client) -> None:
    canary = await _canary(client)
    loop = asyncio.get_running_loop()
    request_type = episode_service_pb2.RecordEpisodesRequest

    @settings(max_examples=EXAMPLES * 2, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(strategy_for(request_type.DESCRIPTOR), min_size=1, max_size=3))
    def fuzz(batch: list[pb_message.Message]) -> None:
        async def run() -> None:
            async def requests() -> AsyncIterator[pb_message.Message]:
                for r in batch:
                    yield r

            try:
                async for response in client.episodes.RecordEpisodes(
                    requests(), metadata=client.md, timeout=30
                ):
                    for ack in response.acks:
                        if ack.WhichOneof("result") == "error":
                            assert ack.error.code != grpc.StatusCode.INTERNAL.value[0]
            except grpc.aio.AioRpcError as error:
                _check_status(error, "RecordEpisodes")

        asyncio.run_coroutine_threadsafe(run(), loop).result(60)

    await asyncio.to_thread(fuzz)
    await _check_canary(client, canary)
