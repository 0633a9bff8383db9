"""The README's promises that code can check: two set-up commands, CI runs one, settings table."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.settings_table import table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_holds_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Set up", 1)[1].split("## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", setup, flags=re.DOTALL)
    commands = [
        line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.strip()
    ]
    assert commands == ["make serve", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_settings_table_matches_the_settings_model() -> None:
    assert table() in README, "regenerate it: python -m scripts.settings_table --write"
