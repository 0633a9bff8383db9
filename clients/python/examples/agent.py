"""The Python example agent: stores and searches memories, checkpoints and restores its working
memory, records a burst of episodes over the bidirectional stream, and watches the episode log
live until it has seen every peer's burst.

    python clients/python/examples/agent.py --target 127.0.0.1:50051 --tenant demo \
        --agent py-agent --peers ts-agent,go-agent --burst 50 --since-ms 1767225600000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from aether.memory.v1 import episode_pb2, episode_service_pb2
from google.protobuf import timestamp_pb2

from aether_memory_client import AsyncMemory


async def main(args: argparse.Namespace) -> None:
    peers = [p for p in args.peers.split(",") if p]
    async with AsyncMemory(
        args.target, tenant=args.tenant, api_key=args.api_key, agent=args.agent
    ) as memory:
        client = memory.client  # the stubs, for the live subscription and the episode stream
        since = timestamp_pb2.Timestamp()
        since.FromMilliseconds(args.since_ms or int(time.time() * 1000))
        subscription = client.episodes.SubscribeEpisodes(
            episode_service_pb2.SubscribeEpisodesRequest(start_time=since)
        )

        async def watch() -> Counter[str]:
            seen: Counter[str] = Counter()
            async for response in subscription:
                if response.HasField("episode"):
                    seen[response.episode.agent_id] += 1
                if all(seen[p] >= args.burst for p in peers):
                    return seen
            raise RuntimeError("subscription ended early")

        watcher = asyncio.create_task(watch())
        for content in (
            "The user prefers window seats on long flights.",
            "The user's daughter is called Maya.",
        ):
            await memory.add(content)
        [best] = await memory.search("where does the user like to sit on a plane?", k=1)
        assert "window" in best.content, best

        chat = await memory.start_session("plan the trip", session_id=f"{args.agent}-session")
        checkpoint = await chat.checkpoint("before tools")
        await chat.append("user", "a step to undo")
        assert len(await chat.restore(checkpoint)) == 1

        @chat.tool()
        async def plan_trip(destination: str) -> str:
            return f"itinerary for {destination}"

        await plan_trip("Lisbon")  # recorded as an episode of the session

        acks = await client.record(
            [
                episode_pb2.Episode(
                    event_id=f"{args.agent}-{i}",
                    agent_id=args.agent,
                    type=episode_pb2.EPISODE_TYPE_TOOL_CALL,
                    name="web_search",
                    outcome=episode_pb2.EPISODE_OUTCOME_SUCCESS,
                )
                for i in range(args.burst)
            ]
        )
        assert all(a.WhichOneof("result") == "written" for a in acks)
        seen = await asyncio.wait_for(watcher, 90)
        subscription.cancel()
        print(
            f"{args.agent}: stored, searched, restored checkpoint {checkpoint}, "
            f"recorded {len(acks)} episodes, saw {dict(seen)}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--agent", default="py-agent")
    parser.add_argument("--peers", default="")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--since-ms", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
