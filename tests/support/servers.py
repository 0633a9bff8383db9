"""Servers the benchmarks and tests start for themselves: a free port, and FerretDB.

FerretDB v1 on SQLite is a real MongoDB-wire-protocol server, built by `make` from
tools/ferretdb and started and stopped here on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

BINARY = Path(sys.executable).parent / "aether-ferretdb"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class FerretDB:
    """One FerretDB process over a throw-away state directory; stop() and start() again keep
    the same port and data, as a restarted database server would."""

    def __init__(self, state_dir: Path) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: `make test` builds it (needs Go)")
        self.state_dir = state_dir
        self.listen = "127.0.0.1:0"
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        self._process = subprocess.Popen(
            [
                str(BINARY),
                *("-listen", self.listen),
                *("-state-dir", str(self.state_dir)),
                *("-log-level", "error"),
            ],
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.startswith("mongodb://"):
            self._process.kill()
            raise RuntimeError(f"FerretDB did not start: {line!r}")
        self.url = line
        self.listen = line.removeprefix("mongodb://").rstrip("/")
        return self.url

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


class DelayProxy:
    """A TCP proxy that holds every chunk for `delay_s` in each direction: a slow database (or a
    slow network to it) that can be switched on and off while clients stay connected."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                sink.write(chunk)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


def service_env(**settings: str) -> dict[str, str]:
    """This environment without any setting of the service's (AETHER_*, OTEL_*, REDIS_URL,
    MONGO_URL), plus `settings`: what a `serve` process of a benchmark sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AETHER_", "OTEL_"))}
    for name in ("REDIS_URL", "MONGO_URL"):
        env.pop(name, None)
    return env | settings


def start_service(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`aether-memory serve` in its own process (and session), its output appended to a log."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "aether_memory", "serve"],
            env=env,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )


@contextlib.contextmanager
def ferretdb(state_dir: Path) -> Iterator[str]:
    """A FerretDB for the life of the context; yields its URL."""
    server = FerretDB(state_dir)
    try:
        yield server.start()
    finally:
        server.stop()
