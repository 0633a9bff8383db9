"""What the agent wrapper (Session.tool, Session.context, Session.close) shares between its
sync and asyncio forms: a tool call's arguments and episode, and the prompt block."""

from __future__ import annotations

import inspect
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aether.memory.v1 import episode_pb2, episode_service_pb2
from google.protobuf import struct_pb2

log = logging.getLogger("aether_memory_client")

# What an episode keeps of a tool's result inline; a larger one is noted by its size (episode
# payloads are capped at 64 KiB by the server).
MAX_INLINE_RESULT = 8 * 1024


def arguments_of(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """A call's arguments by parameter name, defaults applied: the cache key and the episode's
    record of what the tool was asked."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return {name: jsonable(value) for name, value in bound.arguments.items()}


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def trace_id() -> str:
    """The current OpenTelemetry trace id, when the agent runs under a tracer."""
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


@dataclass
class ToolCall:
    """One run of a wrapped tool, recorded as an episode when it ends."""

    name: str
    agent: str
    session: str
    arguments: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    start_wall: float = field(default_factory=time.time)
    trace: str = field(default_factory=trace_id)

    def episode(
        self,
        outcome: str,
        result: Any = None,
        error: BaseException | None = None,
        cached: bool = False,
    ) -> episode_service_pb2.RecordEpisodeRequest:
        payload: dict[str, Any] = {"arguments": self.arguments}
        if error is not None:
            payload["error"] = f"{type(error).__name__}: {error}"[:MAX_INLINE_RESULT]
        elif result is not None:
            text = json.dumps(jsonable(result))
            if len(text) <= MAX_INLINE_RESULT:
                payload["result"] = json.loads(text)
            else:
                payload["result_bytes"] = len(text)
        if cached:
            payload["cached"] = True
        episode = episode_pb2.Episode(
            event_id=uuid.uuid4().hex,
            agent_id=self.agent,
            session_id=self.session,
            type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
            name=self.name,
            outcome=episode_pb2.EpisodeOutcome.Value(f"EPISODE_OUTCOME_{outcome.upper()}"),
            trace_id=self.trace,
        )
        episode.payload.update(payload)
        episode.latency.FromNanoseconds(int((time.perf_counter() - self.started) * 1e9))
        episode.start_time.FromNanoseconds(int(self.start_wall * 1e9))
        return episode_service_pb2.RecordEpisodeRequest(episode=episode)


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(value))
    return out


def prompt_block(memories: Sequence[tuple[str, str]], messages: Sequence[tuple[str, str]]) -> str:
    """What the agent knows, ready to paste into a prompt: relevant memories (with the date
    each happened) and the session's latest messages."""
    lines: list[str] = []
    if memories:
        lines.append("Relevant memories:")
        lines += [f"- [{when}] {text}" if when else f"- {text}" for when, text in memories]
    if messages:
        if lines:
            lines.append("")
        lines.append("Recent conversation:")
        lines += [f"{role}: {content}" for role, content in messages]
    return "\n".join(lines)
