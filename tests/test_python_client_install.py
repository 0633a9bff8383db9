"""The Python client as a user installs it: into a clean virtualenv of its own, from its own
pyproject, beside nothing else. Its declared protobuf floor must be the version its generated
code checks for at import: an older protobuf must be refused by pip, not fail at import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"


def gencode_version() -> str:
    text = (CLIENT / "src" / "aether" / "memory" / "v1" / "memory_pb2.py").read_text()
    found = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", text)
    assert found, "no runtime version check in the generated code"
    return ".".join(found.groups())


def test_the_declared_protobuf_floor_is_the_generated_codes() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    protobuf = next(d for d in project["dependencies"] if d.startswith("protobuf"))
    assert f">={gencode_version()}" in protobuf, protobuf


def test_the_client_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    installed = subprocess.run(
        [*pip, "install", str(CLIENT)], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    imported = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import aether_memory_client, grpc_status\n"
            "from aether.memory.v1 import memory_service_pb2_grpc, episode_service_pb2_grpc\n"
            "from aether_memory_client import tools\n"
            "assert len(tools.openai_tools()) == len(tools.catalog()) > 10\n"
            "print(aether_memory_client.AsyncClient.__name__)",
        ],
        capture_output=True,
        text=True,
    )
    assert imported.stdout.strip() == "AsyncClient", imported.stderr
    # Beside a library that pins protobuf 6, pip refuses the install instead of leaving
    # generated code that cannot import.
    old = subprocess.run(
        [*pip, "install", "--dry-run", str(CLIENT), "protobuf==6.31.1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert old.returncode != 0 and "protobuf" in old.stderr, old.stdout + old.stderr
