"""Waiting on a condition instead of sleeping for a guessed time: a loaded CI machine takes
longer than any guess, and an idle one should not wait out the guess."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    within_s: float = 10.0,
    every_s: float = 0.02,
) -> float:
    """Poll `condition` until it holds; the seconds it took. AssertionError naming `what` when
    it does not hold within `within_s`."""
    started = time.monotonic()
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return time.monotonic() - started
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        await asyncio.sleep(every_s)
