"""Test-wide settings: Hypothesis explores randomly on developers' machines (that is how it found
the query-escaping bugs) and replays a fixed sequence in CI, so a red CI run is reproducible."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
