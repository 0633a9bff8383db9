"""A LangGraph graph whose long-term memory is Aether Memory: `AetherStore` is passed to
`compile(store=...)`, and the node uses it as LangGraph's docs show (`store.search`, `store.put`
under a per-user namespace). Memories outlive the thread: a later conversation recalls them.

    pip install './clients/python[langgraph]' langgraph
    python clients/python/examples/langgraph_agent.py --target 127.0.0.1:50051 --tenant demo
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any, TypedDict

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.store.base import BaseStore

from aether_memory_client.langgraph import AetherStore


class State(TypedDict):
    user: str
    message: str
    recalled: list[str]


def remember(state: State, *, store: BaseStore) -> dict[str, Any]:
    """Recall what this user said before that bears on the message, then keep the message."""
    namespace = ("users", state["user"], "memories")
    hits = store.search(namespace, query=state["message"], limit=2)
    store.put(namespace, uuid.uuid4().hex, {"text": state["message"]})
    return {"recalled": [hit.value["text"] for hit in hits]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--tenant", default="demo")
    args = parser.parse_args()

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    with AetherStore(args.target, tenant=args.tenant, agent="langgraph-example") as store:
        graph = builder.compile(checkpointer=InMemorySaver(), store=store)
        said = ["I am allergic to peanuts.", "I moved to Lisbon last spring."]
        for n, message in enumerate(said):
            graph.invoke(
                {"user": "ana", "message": message, "recalled": []},
                {"configurable": {"thread_id": f"first-{n}"}},
            )
        later = graph.invoke(
            {"user": "ana", "message": "Which snacks are safe for me?", "recalled": []},
            {"configurable": {"thread_id": "later"}},
        )
        print("recalled:", later["recalled"][0])
        print("namespaces:", store.list_namespaces(prefix=("users",)))


if __name__ == "__main__":
    main()
