"""Writes refused before the embedded Redis's disk fills up.

With `appendfsync always`, Redis cannot take back a write whose AOF append failed, so on a full
disk it exits (its callers never see an acknowledgement, so nothing acknowledged is lost, but
the store is down until space is freed). The guard looks at the free space under the data
directory (one statvfs, at most every `interval_s`) and refuses calls that write while it is
below the margin: they answer RESOURCE_EXHAUSTED (STORAGE_FULL, with a retry delay), reads keep
working, and Redis keeps running. Background work (access counts, maintenance, the archiver)
writes a little more, which the margin leaves room for.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .domain.errors import StorageFull

log = logging.getLogger(__name__)


class DiskGuard:
    def __init__(self, path: Path, min_free_bytes: int, interval_s: float = 0.2) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.interval_s = interval_s
        self.free_bytes = -1
        self.full = False
        self._checked = float("-inf")

    def _measure(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def check(self) -> None:
        """Raise StorageFull while the free space is under the margin."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            self._checked = now
            try:
                self.free_bytes = self._measure()
            except OSError:  # the directory went away: Redis will say what is wrong
                self.free_bytes = -1
            full = 0 <= self.free_bytes < self.min_free_bytes
            if full != self.full:
                self.full = full
                if full:
                    log.error(
                        "only %.1f MB free under %s (margin %.1f MB): refusing writes until "
                        "space is freed",
                        self.free_bytes / 2**20,
                        self.path,
                        self.min_free_bytes / 2**20,
                    )
                else:
                    log.warning("%.1f MB free under %s: taking writes again", *self._where())
        if self.full:
            raise StorageFull("its disk is nearly full")

    def _where(self) -> tuple[float, Path]:
        return self.free_bytes / 2**20, self.path
