"""Script calls that share one round trip with other commands.

redis-py's pipelines make sure of a script with SCRIPT EXISTS before every execution: one more
round trip per call. Here the scripts go by EVALSHA alone; when Redis answers NOSCRIPT (it restarted
or its scripts were flushed: NOSCRIPT means the script did not run), the script is loaded and
the whole round trip sent again. Every command sent with it must be safe to send twice.

redis-py's cluster pipeline refuses scripts, so on a Redis Cluster the calls go out together
(each to the node of its keys' slot) and the other commands follow in a pipeline of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

ScriptCall = tuple[Sequence[Any], Sequence[Any]]  # keys, args


async def evalsha_pipelined(
    client: Any,
    script: AsyncScript,
    calls: Sequence[ScriptCall],
    then: Callable[[Any], None] | None = None,
) -> list[Any]:
    """Run `script` once per (keys, args), then the commands `then` adds to the pipeline, in one
    round trip; the scripts' replies, each an exception object where that call failed."""
    if isinstance(client, RedisCluster):
        return await _on_cluster(client, script, calls, then)
    for attempt in (1, 2):
        async with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            if then is not None:
                then(pipe)
            replies = await pipe.execute(raise_on_error=False)
        results = list(replies[: len(calls)])
        if attempt == 1 and any(isinstance(r, NoScriptError) for r in results):
            await client.script_load(script.script)
            continue
        for reply in replies[len(calls) :]:
            if isinstance(reply, Exception):
                raise reply
        return results
    raise AssertionError("unreachable")


async def _on_cluster(
    client: RedisCluster,
    script: AsyncScript,
    calls: Sequence[ScriptCall],
    then: Callable[[Any], None] | None,
) -> list[Any]:
    """The same on a cluster: the scripts concurrently, then, after they all answered, the
    other commands."""
    results = await asyncio.gather(
        *(run_on_cluster(client, script, keys, args) for keys, args in calls),
        return_exceptions=True,
    )
    if then is not None:
        async with client.pipeline() as pipe:
            then(pipe)
            await pipe.execute()
    return list(results)


async def run_on_cluster(
    client: RedisCluster, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
) -> Any:
    """One script call on the node that serves its keys. On NOSCRIPT the script goes whole
    (EVAL, which caches it there): redis-py's own retry loads it on the primaries it knows,
    which right after a failover are not yet the ones serving the keys."""
    try:
        return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await client.execute_command("EVAL", script.script, len(keys), *keys, *args)
