"""Every client snippet in the README, run as a user would against a live server: the Python
one with this interpreter, the TypeScript one type-checked by the client's tsc and run by node
with `@aether-memory/client` installed from this checkout, the Go one built as its own module
that points at this checkout's client. Each in its own tenant; each must print what it found."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from aether_memory.app import Running

ROOT = Path(__file__).resolve().parents[2]
TS_CLIENT = ROOT / "clients" / "typescript"
GO_CLIENT = ROOT / "clients" / "go"


def snippet(language: str) -> str:
    clients = (ROOT / "README.md").read_text().split("## Clients", 1)[1].split("\n## ", 1)[0]
    found = re.findall(rf"```{language}\n(.*?)```", clients, flags=re.DOTALL)
    assert len(found) == 1, f"one {language} snippet expected in the README's Clients section"
    return str(found[0])


def aimed(code: str, running: Running) -> str:
    """The snippet, at the test server and a tenant of its own."""
    assert "127.0.0.1:50051" in code and '"demo"' in code
    tenant = f"readme-{uuid.uuid4().hex[:8]}"
    return code.replace("127.0.0.1:50051", running.address).replace('"demo"', f'"{tenant}"')


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command's result; one that runs past 200 s (inside the test's own 300 s) is killed
    and reported with what it printed so far, so a hang shows where it stopped."""
    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=200,
        )
    except subprocess.TimeoutExpired as expired:

        def text(value: bytes | str | None) -> str:
            return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

        return subprocess.CompletedProcess(
            command, -9, text(expired.stdout), "killed after 200 s\n" + text(expired.stderr)
        )


def check_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "I am allergic to peanuts" in result.stdout, result.stdout


async def test_the_python_snippet_runs(service: Running, tmp_path: Path) -> None:
    program = tmp_path / "snippet.py"
    program.write_text(aimed(snippet("python"), service))
    result = await asyncio.to_thread(run, [sys.executable, str(program)], tmp_path)
    check_output(result)
    assert "1 episode recorded" in result.stdout


@pytest.mark.skipif(
    not (TS_CLIENT / "dist" / "src" / "index.js").exists(), reason="`make clients` builds it"
)
async def test_the_typescript_snippet_compiles_and_runs(service: Running, tmp_path: Path) -> None:
    # `npm install ./clients/typescript @bufbuild/protobuf` links the package into
    # node_modules, and brings the protobuf runtime it is built on: as here.
    scope = tmp_path / "node_modules" / "@aether-memory"
    scope.mkdir(parents=True)
    (scope / "client").symlink_to(TS_CLIENT, target_is_directory=True)
    (tmp_path / "node_modules" / "@bufbuild").symlink_to(
        TS_CLIENT / "node_modules" / "@bufbuild", target_is_directory=True
    )
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    (tmp_path / "snippet.ts").write_text(aimed(snippet("ts"), service))
    tsc = TS_CLIENT / "node_modules" / ".bin" / "tsc"
    compiled = await asyncio.to_thread(
        run,
        [
            str(tsc),
            *("--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022"),
            *("--strict", "--skipLibCheck", "--types", "node", "--typeRoots"),
            str(TS_CLIENT / "node_modules" / "@types"),
            "snippet.ts",
        ],
        tmp_path,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    # The live tail has no deadline: node exits only if leaving the `for await` loop cancelled
    # the subscription (a client that did not would be killed at 200 s here).
    result = await asyncio.to_thread(run, ["node", "snippet.js"], tmp_path)
    check_output(result)
    assert "live: me web_search" in result.stdout


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go")
async def test_the_go_snippet_builds_and_runs(service: Running, tmp_path: Path) -> None:
    (tmp_path / "main.go").write_text(aimed(snippet("go"), service))
    module = "github.com/aether-memory/aether/clients/go"
    go_mod = (GO_CLIENT / "go.mod").read_text()
    requires = go_mod.split("\n", 1)[1].replace("module " + module, "")
    (tmp_path / "go.mod").write_text(
        f"module readme\n{requires}\nrequire {module} v0.0.0\nreplace {module} => {GO_CLIENT}\n"
    )
    shutil.copy(GO_CLIENT / "go.sum", tmp_path / "go.sum")
    # Offline: the modules `make clients` fetched are in the module cache.
    result = await asyncio.to_thread(
        run, ["go", "run", "."], tmp_path, GOFLAGS="-mod=mod", GOPROXY="off"
    )
    check_output(result)
    assert "1 episode recorded" in result.stdout
