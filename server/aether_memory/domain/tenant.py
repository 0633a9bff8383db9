"""The tenant a call acts for: every memory, episode, session and key belongs to exactly one,
and nothing is read or written outside it."""

from __future__ import annotations

import re
from dataclasses import dataclass

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str

    def __post_init__(self) -> None:
        if not TENANT_PATTERN.match(self.name):
            raise ValueError(f"invalid tenant {self.name!r}")

    def __str__(self) -> str:
        return self.name
