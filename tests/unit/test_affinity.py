"""BROKER_PIN_WORKERS' CPU claiming (`broker.affinity`), across real processes: each gets
a CPU of its own, one too many runs unpinned, and a CPU comes free when its holder ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HOLD = (
    "import os, sys; from pathlib import Path; from broker.affinity import pin_to_own_cpu; "
    "cpu = pin_to_own_cpu(Path(sys.argv[1])); "
    "print(cpu, ','.join(map(str, sorted(os.sched_getaffinity(0)))), flush=True); "
    "sys.stdin.read()"
)
#: At most two CPUs for these processes, so the test is the same on a 64-core runner.
CPUS = set(sorted(os.sched_getaffinity(0))[:2])


class Holder:
    """A process that claims a CPU and keeps it until `release()`."""

    def __init__(self, lock_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, CPUS),
        )
        assert self.proc.stdout is not None
        claimed, allowed = self.proc.stdout.readline().split()
        self.cpu = None if claimed == "None" else int(claimed)
        self.allowed = {int(c) for c in allowed.split(",")}

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        if holder.proc.poll() is None:
            holder.release()


def test_each_process_claims_its_own_cpu(tmp_path: Path, holders: list[Holder]) -> None:
    for _ in CPUS:
        holders.append(Holder(tmp_path))
    assert {h.cpu for h in holders} == CPUS
    for holder in holders:
        assert holder.allowed == {holder.cpu}  # pinned, not just recorded

    extra = Holder(tmp_path)
    holders.append(extra)
    assert extra.cpu is None
    assert extra.allowed == CPUS  # left as it was

    freed = holders[0].cpu
    holders[0].release()
    again = Holder(tmp_path)
    holders.append(again)
    assert again.cpu == freed


def test_a_lock_file_that_is_not_ours_is_skipped(tmp_path: Path, holders: list[Holder]) -> None:
    first = min(CPUS)
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / f"token-broker-cpu{first}.lock").symlink_to(tmp_path / "elsewhere")
    holder = Holder(tmp_path)
    holders.append(holder)
    if len(CPUS) > 1:
        assert holder.cpu == max(CPUS)
    else:
        assert holder.cpu is None
