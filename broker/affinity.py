"""A `serve` worker process on one CPU of its own (`BROKER_PIN_WORKERS`).

A worker's event loop and its core threads share one GIL. Left to the scheduler they run
on different cores and hand the GIL across cores at every store call and signature: on
the refresh grant 24.5 context switches per request instead of 1.7, and 1,146 req/s
instead of about 1,550 (bench/token_bench.py with and without --no-pin).

uvicorn does not tell a worker its index, so each worker claims the first CPU of its
allowed set whose lock file it can lock. flock locks belong to the open file, and the
kernel drops them when the process ends, so a restarted worker takes a freed CPU back and
no stale state is left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

_held: list[int] = []
"""Lock file descriptors of the CPUs this process claimed, open for its lifetime."""


def pin_to_own_cpu(lock_dir: Path | None = None) -> int | None:
    """Claim a free CPU and move every thread of this process onto it (threads started
    later inherit it). The CPU, or None when every allowed CPU is taken."""
    directory = lock_dir if lock_dir is not None else Path(tempfile.gettempdir())
    for cpu in sorted(os.sched_getaffinity(0)):
        try:
            fd = os.open(
                directory / f"token-broker-cpu{cpu}.lock",
                os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        except OSError:
            continue  # not ours to use (another user's file, a symlink): try the next CPU
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held.append(fd)
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), {cpu})
        return cpu
    return None
