"""SummarizeMemories with a summarizer endpoint configured, through the real `openai` client.

No model can run here, so the endpoint is a small HTTP server in this process that speaks the
OpenAI chat completions protocol (the same wire format vLLM, llama.cpp and Ollama serve): it
records each request and answers with a fixed text, or fails when told to.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aether.memory.v1 import memory_pb2, memory_service_pb2

from aether_memory.app import serve
from aether_memory.settings import Settings

from .conftest import Client, new_client


class ChatEndpoint:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.fail_with: int | None = None
        self.answer = "The user plans an April trip to Kyoto on a $3,000 budget."
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(body)
                endpoint.authorizations.append(self.headers.get("Authorization"))
                if self.path != "/v1/chat/completions" or endpoint.fail_with:
                    self.send_response(endpoint.fail_with or 404)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "unavailable"}}')
                    return
                reply = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": endpoint.answer},
                            "finish_reason": "stop",
                        }
                    ],
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ChatEndpoint]:
    chat = ChatEndpoint()
    thread = threading.Thread(target=chat.server.serve_forever, daemon=True)
    thread.start()
    yield chat
    chat.server.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def summarizing_channel(
    endpoint: ChatEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[grpc.aio.Channel]:
    settings = Settings(
        port=0,
        data_dir=tmp_path_factory.mktemp("summarizer-redis"),
        redis_url=None,
        maintenance_interval_s=3600,
        grace_s=1.0,
        summarizer_url=endpoint.url,
        summarizer_model="test-model",
        summarizer_api_key="sk-test",  # type: ignore[arg-type]
        summarizer_timeout_s=5.0,
    )
    async with serve(settings) as running, grpc.aio.insecure_channel(running.address) as ch:
        yield ch


@pytest.fixture
def summarizing(summarizing_channel: grpc.aio.Channel) -> Client:
    return new_client(summarizing_channel)  # a tenant of its own per test


TURNS = [
    "The user is planning a trip to Japan in April.",
    "They want to see the cherry blossoms in Kyoto.",
    "Their budget for the trip is about three thousand dollars.",
]


async def summarize(client: Client) -> memory_service_pb2.SummarizeMemoriesResponse:
    for turn in TURNS:
        await client.memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    agent_id="a",
                    session_id="trip",
                    content=turn,
                    tier=memory_pb2.MEMORY_TIER_WORKING,
                )
            ),
            metadata=client.md,
        )
    response: memory_service_pb2.SummarizeMemoriesResponse = await client.memory.SummarizeMemories(
        memory_service_pb2.SummarizeMemoriesRequest(
            agent_id="a", session_id="trip", max_sentences=2
        ),
        metadata=client.md,
    )
    return response


async def test_the_endpoint_writes_the_summary(summarizing: Client, endpoint: ChatEndpoint) -> None:
    endpoint.fail_with = None
    endpoint.requests.clear()
    response = await summarize(summarizing)
    summary = response.summary
    assert summary.content == endpoint.answer
    assert summary.type == memory_pb2.MEMORY_TYPE_SUMMARY and len(summary.related_ids) == 3
    assert summary.metadata["method"] == "endpoint:test-model"
    (sent,) = endpoint.requests
    assert sent["model"] == "test-model" and sent["temperature"] == 0
    system, user = sent["messages"]
    assert "at most 2 sentences" in system["content"]
    assert [line.split(". ", 1)[1] for line in user["content"].splitlines()[1:]] == TURNS
    assert endpoint.authorizations[-1] == "Bearer sk-test"


async def test_a_failing_endpoint_falls_back_to_the_extractive_summary(
    summarizing: Client, endpoint: ChatEndpoint
) -> None:
    endpoint.fail_with = 503
    endpoint.requests.clear()
    response = await summarize(summarizing)
    summary = response.summary
    assert summary.metadata["method"] == "extractive-centroid"
    assert "503" in summary.metadata["summarizer_error"]
    chosen = [t for t in TURNS if t in summary.content]
    assert len(chosen) == 2 and summary.content == " ".join(chosen)
    assert len(endpoint.requests) == 3  # the client's own retries on 5xx, then the fallback
    working = await summarizing.memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(
            agent_id="a", filter=memory_pb2.MemoryFilter(tiers=[memory_pb2.MEMORY_TIER_WORKING])
        ),
        metadata=summarizing.md,
    )
    assert list(working.memories) == []  # the sources left working memory either way
