"""The tool-result cache: a tool's result kept for a TTL under its name and canonical arguments,
so key order and number formatting in the arguments never split one call into two entries."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from ..domain.documents import ToolResultDoc
from ..domain.tenant import Tenant
from ..telemetry import instruments


class ToolResults(Protocol):
    async def get_tool_result(self, tenant: Tenant, digest: str) -> ToolResultDoc | None: ...

    async def put_tool_result(
        self, tenant: Tenant, digest: str, entry: ToolResultDoc, ttl_s: float
    ) -> ToolResultDoc: ...


def digest(tool_name: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps([tool_name, arguments], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=20).hexdigest()


class ToolCache:
    def __init__(self, results: ToolResults, default_ttl_s: float) -> None:
        self._results = results
        self.default_ttl_s = default_ttl_s

    async def get(
        self, tenant: Tenant, tool_name: str, arguments: dict[str, Any]
    ) -> ToolResultDoc | None:
        """The live cached entry, or None (counted as a hit or a miss)."""
        found = await self._results.get_tool_result(tenant, digest(tool_name, arguments))
        instruments().cache_lookups.add(
            1, {"aether.cache": "tool", "aether.cache.result": "miss" if found is None else "hit"}
        )
        return found

    async def put(
        self,
        tenant: Tenant,
        tool_name: str,
        arguments: dict[str, Any],
        result: dict[str, Any],
        ttl_s: float | None,
    ) -> ToolResultDoc:
        """Cache `result` for `ttl_s` (None: the configured default); the entry with its times."""
        entry: ToolResultDoc = {"tool_name": tool_name, "arguments": arguments, "result": result}
        return await self._results.put_tool_result(
            tenant,
            digest(tool_name, arguments),
            entry,
            self.default_ttl_s if ttl_s is None else ttl_s,
        )
