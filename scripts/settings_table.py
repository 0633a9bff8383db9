"""The README's settings table from the Settings model (the single source of truth).

python -m scripts.settings_table            # print it
python -m scripts.settings_table --write    # replace the table in README.md
"""

from __future__ import annotations

import sys
from pathlib import Path

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


HEADER = "| variable | default | meaning |"
README = Path(__file__).resolve().parent.parent / "README.md"


def write(readme: Path = README) -> None:
    """Replace the table that starts at HEADER (and runs while lines start with "|")."""
    lines = readme.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(HEADER))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    readme.write_text("".join([*lines[:start], table(), *lines[end:]]))


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    else:
        sys.stdout.write(table())
