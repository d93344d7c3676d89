"""Allocator settings that keep a loading process's memory flat, applied when `service` is first
imported: before numpy (whose OpenBLAS starts threads at import) and pyarrow are loaded.

Measured on a 10M-row `trips ingest` (peak RSS, /usr/bin/time -v; runs differ by ±25 MiB here):
244–276 MiB with the defaults, 207–229 with glibc limited to two malloc arenas and pyarrow on
the system allocator from the start (the same two settings applied only when a job starts:
248–258). The reader, encoder and COPY writer threads allocate numpy and Arrow buffers of a few
MiB each; with an arena per thread and pyarrow's own allocator keeping freed pages, freed
blocks pile up in several places instead of being reused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter


def bound() -> None:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # read when pyarrow loads
    if "MALLOC_ARENA_MAX" in os.environ:  # the operator's choice, already applied by glibc
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: its allocator's own defaults
        pass
