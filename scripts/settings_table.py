"""Print the README's settings table from the Settings model (the single source of truth)."""

from __future__ import annotations

import sys

from aether_memory.settings import Settings


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = f"AETHER_{name.upper()}"
        if name in ("redis_url", "mongo_url"):
            variable += f" (or {name.upper()})"
        default = "unset" if field.default is None else f"`{field.default}`"
        rows.append(f"| `{variable}` | {default} | {field.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
