"""Two broker processes on one SQLite store share the ShotGrid event watcher's lease: while
both poll, only one reads ShotGrid's event log, and a user deactivated there has their
session ended once. Real OS processes (the lease is the store's, not a lock in memory),
the real ShotGrid client against the emulator, the system clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from broker.app import make_upstream
from broker.components import build_components
from broker.revocation.watcher import WATERMARK
from broker.store import open_store
from broker.upstream import Identity
from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.broker import broker_settings
from tests.support.servers import ServerThread, reserve_port

SEARCH = "rest:event_log_entries:search"

WATCHER = """
import json, os, sys, time
from broker.app import make_upstream
from broker.components import build_components
from broker.settings import load_settings
from broker.store import open_store

values, stop = json.loads(sys.argv[1]), sys.argv[2]
settings = load_settings(**values)
store = open_store(settings.store_url)
parts = build_components(settings, store, make_upstream(settings))
watcher = parts.watcher
assert watcher is not None
print("ready", flush=True)
reads, ended = 0, []
while True:
    stopping = os.path.exists(stop)
    result = watcher.poll_once()
    if result is not None:
        reads += 1
        ended += result.ended
    if stopping:
        break
    time.sleep(watcher.poll)  # the app's loop paces itself so (not synchronisation)
print(json.dumps({"reads": reads, "ended": ended}), flush=True)
"""


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_two_processes_one_reader(tmp_path: Path) -> None:
    emu = ShotGridEmulator.default()
    site = ServerThread(emu.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS).start()
    settings = broker_settings(tmp_path, site.url, reserve_port(), shotgrid_events_poll=0.05)
    store = open_store(settings.store_url or "")
    upstream = make_upstream(settings)
    processes: list[subprocess.Popen[str]] = []
    try:
        parts = build_components(settings, store, upstream)
        # Read from the log's current end (a new watcher would start there too).
        store.raise_watermark(WATERMARK, parts.upstream.latest_event_id())
        alice = Identity(user_id=101, login="alice", email="", name="Alice", active=True)
        assert parts.upstream.user_by_id(alice.user_id).login == "alice"
        sid = parts.sessions.new_session(alice).sid
        values = {
            key: getattr(settings, key)
            for key in (
                "issuer",
                "shotgrid_url",
                "store_url",
                "shotgrid_script_name",
                "shotgrid_events_poll",
                "log_format",
            )
        }
        values["secret_key"] = settings.secret_key.get_secret_value()
        values["shotgrid_script_key"] = settings.shotgrid_script_key.get_secret_value()  # type: ignore[union-attr]
        stop = tmp_path / "stop"
        searches = emu.calls[SEARCH]
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", WATCHER, json.dumps(values), str(stop)],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        emu.set_active("alice", False)
        wait_for(lambda: (s := store.get_session(sid)) is not None and s.revoked)
        stop.touch()
        reports = []
        for process in processes:
            out, _ = process.communicate(timeout=30)
            assert process.returncode == 0
            reports.append(json.loads(out.strip().splitlines()[-1]))
        readers = [r for r in reports if r["reads"] > 0]
        assert len(readers) == 1, reports
        assert [e for r in reports for e in r["ended"]] == [sid]
        # Each read is one search of the event log; the other process made none.
        assert emu.calls[SEARCH] - searches == readers[0]["reads"]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        upstream.close()
        store.close()
        site.stop()
