"""Memory as function tools: the generated schemas (MCP, OpenAI, Anthropic) accept the arguments
a model would send and refuse bad ones, every argument lands on the request field it names, and
the dispatcher runs OpenAI-style calls (JSON text arguments) against the live service."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
from aether.memory.v1 import memory_service_pb2
from google.protobuf import json_format

from aether_memory.app import Running
from aether_memory_client import Memory, tools

ROOT = Path(__file__).resolve().parents[2]


def sample(schema: dict[str, Any]) -> Any:
    """A valid value of a schema, as a model might write it."""
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema["type"]
    if kind == "array":
        return [sample(schema["items"])]
    if kind == "object" and "properties" not in schema:  # a Struct: anything JSON
        return {"key": "value"}
    if kind == "object":
        props = schema["properties"]
        return {name: sample(props[name]) for name in schema.get("required", props)}
    if schema.get("format") == "date-time":
        return "2024-05-01T12:00:00Z"
    return {"string": "x", "integer": 3, "number": 0.5, "boolean": True}[kind]


def test_the_published_formats_are_the_catalogs() -> None:
    catalog = tools.catalog()
    for file, listed in (
        ("openai.json", tools.openai_tools()),
        ("anthropic.json", tools.anthropic_tools()),
        ("mcp.json", tools.mcp_tools()),
    ):
        assert json.loads((ROOT / "clients" / "tools" / file).read_text())["tools"] == listed
    for spec in catalog.values():
        jsonschema.Draft202012Validator.check_schema(spec.input_schema)
        assert spec.description and all(
            p.get("description") for p in spec.input_schema["properties"].values()
        ), spec.name


@pytest.mark.parametrize("name", sorted(tools.catalog()))
def test_each_argument_sets_the_field_it_names(name: str) -> None:
    spec = tools.catalog()[name]
    arguments = {a: sample(s) for a, s in spec.input_schema["properties"].items()}
    request = tools.build_request(spec, arguments, agent="me")
    body = json_format.MessageToDict(request, preserving_proto_field_name=True)
    for argument, rule in spec.arguments.items():
        value: Any = body
        for part in rule["path"].split("."):
            value = value[part]
        assert value not in (None, "", [], {}), (name, argument)
    for path, source in spec.fixed.items():
        value = body
        for part in path.split("."):
            value = value[part]
        if source == "agent":
            assert value == "me"


@pytest.mark.parametrize(
    ("name", "arguments", "field"),
    [
        ("search_memory", {}, "query"),
        ("search_memory", {"query": "x", "k": "ten"}, "k"),
        ("search_memory", {"query": "x", "types": ["gossip"]}, "types.0"),
        ("search_memory", {"query": "x", "tenant": "other"}, "tenant"),
        ("store_memory", {"content": 42}, "content"),
        ("store_memory", {"content": "x", "agent_id": "other"}, "agent_id"),
        (
            "append_working_memory",
            {"session_id": "s", "messages": [{"content": "hi"}]},
            "messages.0",
        ),
        ("record_episode", {"type": "nap"}, "type"),
        ("cache_tool_result", {"tool_name": "t", "ttl": -1}, "ttl"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    name: str, arguments: dict[str, Any], field: str
) -> None:
    spec = tools.catalog()[name]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(arguments, spec.input_schema)
    with pytest.raises(tools.ToolCallError) as refused:
        tools.build_request(spec, arguments, agent="me")
    assert (refused.value.code, refused.value.field) == ("INVALID_ARGUMENT", field)


def test_an_update_changes_only_the_fields_it_is_given() -> None:
    spec = tools.catalog()["update_memory"]
    request = tools.build_request(spec, {"memory_id": "m1", "tags": ["a"]}, agent="me")
    assert isinstance(request, memory_service_pb2.UpdateMemoryRequest)
    assert list(request.update_mask.paths) == ["tags"]
    assert request.memory.id == "m1"


async def test_openai_style_calls_run_against_the_service(service: Running) -> None:
    await asyncio.to_thread(_openai_style_calls, service.address, f"tools-{uuid.uuid4().hex[:8]}")


def _openai_style_calls(address: str, tenant: str) -> None:
    with Memory(address, tenant=tenant, agent="me") as memory:
        stored = memory.tools.call(
            "store_memory", json.dumps({"content": "Ana moved to Lisbon in May.", "tags": ["ana"]})
        )["memory"]
        hits = memory.tools.call("search_memory", '{"query": "where does Ana live?", "k": 3}')
        assert [r["memory"]["id"] for r in hits["results"]] == [stored["id"]]
        with Memory(address, tenant=tenant, agent="someone-else") as other:
            assert other.tools.call("search_memory", {"query": "Ana"}).get("results", []) == []

        with pytest.raises(tools.ToolCallError) as refused:
            memory.tools.call("store_memory", {"content": "x", "importance": 3})
        assert (refused.value.code, refused.value.field) == ("INVALID_ARGUMENT", "importance")
        with pytest.raises(tools.ToolCallError) as unknown:
            memory.tools.call("launch_rockets", {})
        assert unknown.value.code == "NOT_FOUND"
        with pytest.raises(tools.ToolCallError) as not_json:
            memory.tools.call("search_memory", "{query:")
        assert not_json.value.code == "INVALID_ARGUMENT"
        with pytest.raises(tools.ToolCallError) as missing:
            memory.tools.call("get_memory", {"memory_id": "nope"})
        assert missing.value.code == grpc.StatusCode.NOT_FOUND.name
