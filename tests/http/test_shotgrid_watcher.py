"""The ShotGrid event watcher against the emulator: a user deactivated in ShotGrid loses
every session at the next poll (on the feed, with back-channel logouts), a change undone
within one poll ends nothing, a permission-group change is reported and ends nothing,
ShotGrid failing keeps the watermark, and one reader polls across brokers on one store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from broker.revocation.watcher import LEASE, WATERMARK, ShotGridEventWatcher
from broker.upstream import UpstreamUnavailable, UserChange
from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.broker import RunningBroker, broker_settings, broker_with_emulator, run_broker
from tests.support.clock import MovableClock
from tests.support.servers import ServerThread, reserve_port
from tests.support.services import claims_of, login

SEARCH = "rest:event_log_entries:search"


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def env(tmp_path: Path, clock: MovableClock) -> Iterator[tuple[RunningBroker, ShotGridEmulator]]:
    with broker_with_emulator(tmp_path, clock) as (broker, emu, _site):
        yield broker, emu


def watcher_of(running: RunningBroker) -> ShotGridEventWatcher:
    watcher = running.broker.watcher
    assert watcher is not None
    return watcher


def signed_in(running: RunningBroker, user: str) -> str:
    with running.client() as http:
        return str(claims_of(login(running, http, user)["access_token"])["sid"])


def revoked(running: RunningBroker, sid: str) -> bool:
    session = running.broker.store.get_session(sid)
    return session is not None and session.revoked


def test_deactivation_ends_every_session_of_that_user_at_the_next_poll(
    env: tuple[RunningBroker, ShotGridEmulator],
) -> None:
    running, emu = env
    watcher = watcher_of(running)
    emu.set_permission_group("frank", "Artist")  # history before the first poll
    first = watcher.poll_once()
    assert first is not None and first.started_at == 1 and first.events == 0
    alice = [signed_in(running, "alice"), signed_in(running, "alice")]
    bob = signed_in(running, "bob")
    emu.set_active("alice", False)
    result = watcher.poll_once()
    assert result is not None and sorted(result.ended) == sorted(alice)
    assert all(revoked(running, sid) for sid in alice) and not revoked(running, bob)
    feed = httpx.get(f"{running.url}/revocations").json()
    assert {e.get("sid") for e in feed["entries"]} == set(alice)
    assert running.broker.store.get_watermark(WATERMARK) == 2
    again = watcher.poll_once()  # nothing new: nothing read twice
    assert again is not None and again.events == 0 and again.ended == []


def test_a_change_undone_within_one_poll_ends_nothing(
    env: tuple[RunningBroker, ShotGridEmulator],
) -> None:
    running, emu = env
    watcher = watcher_of(running)
    watcher.poll_once()
    sid = signed_in(running, "alice")
    emu.set_active("alice", False)
    emu.set_active("alice", True)
    calls = emu.calls["rest:human_users:id"]
    result = watcher.poll_once()
    assert result is not None and result.events == 2 and result.ended == []
    assert not revoked(running, sid)
    assert emu.calls["rest:human_users:id"] == calls + 1  # the deactivation was re-checked


def test_permission_change_is_reported_and_ends_nothing(
    env: tuple[RunningBroker, ShotGridEmulator],
) -> None:
    running, emu = env
    watcher = watcher_of(running)
    seen: list[UserChange] = []
    watcher.on_permission_change(seen.append)
    watcher.on_permission_change(lambda change: 1 / 0)  # a broken hook stops nothing
    watcher.poll_once()
    sid = signed_in(running, "alice")
    emu.set_permission_group("alice", "Admin")
    result = watcher.poll_once()
    assert result is not None and result.ended == [] and not revoked(running, sid)
    (change,) = seen
    assert (change.user_id, change.attribute, change.old_value, change.new_value) == (
        101,
        "permission_rule_set",
        "Artist",
        "Admin",
    )


def test_shotgrid_failing_keeps_the_watermark(
    env: tuple[RunningBroker, ShotGridEmulator],
) -> None:
    running, emu = env
    watcher = watcher_of(running)
    watcher.poll_once()
    sid = signed_in(running, "bob")
    emu.set_active("bob", False)
    emu.faults.set("/api/v1/entity", status=503, times=10)
    with pytest.raises(UpstreamUnavailable):
        watcher.poll_once()
    assert running.broker.store.get_watermark(WATERMARK) == 0 and not revoked(running, sid)
    emu.faults.clear()
    result = watcher.poll_once()
    assert result is not None and result.ended == [sid]


def test_watcher_is_off_without_a_poll_or_a_script(tmp_path: Path, clock: MovableClock) -> None:
    with broker_with_emulator(tmp_path, clock, shotgrid_events_poll=0) as (running, _, _):
        assert running.broker.watcher is None
    with broker_with_emulator(
        tmp_path / "b", clock, shotgrid_script_name=None, shotgrid_script_key=None
    ) as (running, _, _):
        assert running.broker.watcher is None


def test_one_reader_across_brokers_on_one_store(tmp_path: Path, clock: MovableClock) -> None:
    emu = ShotGridEmulator.default(clock=clock)
    site = ServerThread(emu.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS).start()
    try:
        ports = reserve_port(), reserve_port()
        first = broker_settings(tmp_path, site.url, ports[0])
        second = first.model_copy(update={"issuer": f"http://127.0.0.1:{ports[1]}"})
        with run_broker(first, clock, ports[0]) as a, run_broker(second, clock, ports[1]) as b:
            wa, wb = watcher_of(a), watcher_of(b)
            assert wa.poll_once() is not None  # a holds the lease
            searches = emu.calls[SEARCH]
            for _ in range(3):
                assert wb.poll_once() is None  # b reads nothing from ShotGrid
                assert wa.poll_once() is not None
            assert emu.calls[SEARCH] == searches + 3
            # a stops polling without letting go: b takes over once the lease lapses.
            clock.advance(wa.lease.total_seconds() - 1)
            assert wb.poll_once() is None
            clock.advance(2)
            sid = signed_in(a, "alice")
            emu.set_active("alice", False)
            taken = wb.poll_once()
            assert taken is not None and taken.ended == [sid]
            assert wa.poll_once() is None
            # b shuts down and lets go: a reads again at once, from where b left off.
            wb.release()
            resumed = wa.poll_once()
            assert resumed is not None and resumed.events == 0
            assert a.broker.store.get_watermark(WATERMARK) == 1
    finally:
        site.stop()
    assert LEASE == "shotgrid-events"


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_app_polls_by_itself(tmp_path: Path, clock: MovableClock) -> None:
    with broker_with_emulator(
        tmp_path, clock, shotgrid_events_poll=0.2, app_options={"revocation_tasks": True}
    ) as (running, emu, _site):
        wait_for(lambda: running.broker.store.get_watermark(WATERMARK) is not None)
        sid = signed_in(running, "alice")
        emu.set_active("alice", False)
        wait_for(lambda: revoked(running, sid))
