"""A function-calling agent loop with memory as its tools: the model gets the OpenAI-format
schemas (`tools.openai_tools()`), and every tool call it makes goes to `memory.tools.call`,
whose JSON result (or error, naming the argument) goes back to the model as the tool's message.

With OPENAI_API_KEY set (and `pip install openai`), the model is OpenAI's; without, the loop
replays the tool calls a model made in a recorded run, so the example runs anywhere.

    python clients/python/examples/tool_loop.py --target 127.0.0.1:50051 --tenant demo
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from aether_memory_client import Memory, tools

TASK = "Remember that I am allergic to peanuts, then tell me what dinner must avoid."
Call = tuple[str, str, str]  # (call id, tool name, JSON arguments)
# The tool calls a model made for TASK in a recorded run, turn by turn.
RECORDED: list[list[Call]] = [
    [("c1", "store_memory", '{"content": "The user is allergic to peanuts.", "tags": ["health"]}')],
    [("c2", "search_memory", '{"query": "food allergies", "k": 3}')],
    [("c3", "store_memory", '{"content": "x", "importance": 3}')],  # refused: the error says why
]


def recorded_model(turn: int, _messages: list[dict[str, Any]]) -> list[Call]:
    return RECORDED[turn] if turn < len(RECORDED) else []


def openai_model(turn: int, messages: list[dict[str, Any]]) -> list[Call]:
    from openai import OpenAI  # only with OPENAI_API_KEY

    reply = OpenAI().chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=tools.openai_tools()
    )
    message = reply.choices[0].message
    messages.append(message.model_dump(exclude_none=True))
    return [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]


def main(args: argparse.Namespace) -> None:
    model = openai_model if os.environ.get("OPENAI_API_KEY") else recorded_model
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    with Memory(args.target, tenant=args.tenant, agent=args.agent) as memory:
        for turn in range(8):
            calls = model(turn, messages)
            if not calls:
                break
            for call_id, name, arguments in calls:
                try:
                    result: Any = memory.tools.call(name, arguments)
                except tools.ToolCallError as error:
                    result = {"error": str(error)}
                messages.append(
                    {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}
                )
                print(f"{name}({arguments}) -> {json.dumps(result)[:160]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--agent", default="tool-agent")
    main(parser.parse_args())
