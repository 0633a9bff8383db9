"""Working memory, checkpoints, agent state and tool results as plain values.

They are JSON documents in the hot tier (RedisJSON) and the archive, so the values are typed
dicts: the stores read and write them as they are, with no copy into another shape, which
matters for a session of a thousand messages answered on every append. Times are integer
microseconds since the epoch (RedisJSON prints some floats with a digit fewer than Python
wrote them, so a float time read back could differ from the one a write returned).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class MessageDoc(TypedDict):
    """One message of a session's working memory."""

    role: str
    content: str
    metadata: dict[str, Any]
    create_time: NotRequired[int]  # set when it was appended


class SessionDoc(TypedDict):
    """A session's working memory: its messages (newest last), free state, and a revision that
    counts its writes (for compare-and-set)."""

    session_id: str
    agent_id: str
    messages: list[MessageDoc]
    state: dict[str, Any]
    revision: NotRequired[int]
    update_time: NotRequired[int]
    expire_time: NotRequired[int | None]  # when it lapses unless written again


class CheckpointDoc(TypedDict):
    """A numbered copy of a session; listed without its `session`."""

    session_id: str
    number: int
    label: str
    create_time: int
    session: NotRequired[SessionDoc]


class AgentStateDoc(TypedDict):
    """An agent's own key-value state, with a revision that counts its writes."""

    agent_id: str
    state: dict[str, Any]
    revision: int
    update_time: NotRequired[int]


class ToolResultDoc(TypedDict):
    """A tool's result cached under its name and canonical arguments until `expire_time`."""

    tool_name: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    create_time: NotRequired[int]
    expire_time: NotRequired[int]
