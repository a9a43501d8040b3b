"""Idle keep-alive connections: the emulator keeps them open as long as a real site's load
balancer does (`IDLE_KEEPALIVE_SECONDS`), not uvicorn's 5 s that broke an idle
`shotgun_api3` client with BrokenPipeError.

An idle connection is a real socket timing out, so one test waits for real: against an
emulator served with a short keep-alive it shows both sides with the real client and the
server's connection count (`emu.peers`): idle for less than the keep-alive, the next call
reuses the connection; idle for longer, the server has closed it. The served
configuration then carries the constant that moves that boundary past 5 s.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest
import shotgun_api3

from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.servers import ServerThread, serve

pytestmark = pytest.mark.timeout(30)
SHORT_KEEPALIVE = 2
UVICORN_DEFAULT_KEEPALIVE = 5


@pytest.fixture
def short_site() -> Iterator[tuple[ShotGridEmulator, ServerThread]]:
    emu = ShotGridEmulator.default()
    with serve(emu.app, timeout_keep_alive=SHORT_KEEPALIVE) as srv:
        yield emu, srv


def client_socket(sg: shotgun_api3.Shotgun) -> socket.socket:
    """The one socket httplib2 keeps open for this client."""
    (conn,) = sg._get_connection().connections.values()
    assert conn.sock is not None
    return conn.sock  # type: ignore[no-any-return]


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the server has closed its end (EOF readable without consuming data)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def wait_until_closed(sock: socket.socket, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if readable:
            return sock.recv(1, socket.MSG_PEEK) == b""
    return False


def test_idle_shorter_than_keepalive_reuses_the_connection_longer_is_closed(
    short_site: tuple[ShotGridEmulator, ServerThread],
) -> None:
    emu, srv = short_site
    sg = shotgun_api3.Shotgun(srv.url, script_name="token-broker", api_key="token-broker-key")
    try:
        sg.find("Project", [])
        assert len(emu.peers) == 1
        sock = client_socket(sg)
        time.sleep(SHORT_KEEPALIVE / 2)  # the idleness under test, not a synchronisation
        assert not closed_by_peer(sock)
        sg.find("Project", [])
        assert len(emu.peers) == 1  # the same TCP connection served the second call
        assert client_socket(sg) is sock
        # Idle past the keep-alive: the server closes it (within a generous deadline).
        assert wait_until_closed(sock, deadline_s=SHORT_KEEPALIVE * 5)
    finally:
        sg.close()


def test_keepalive_outlasts_uvicorns_default_everywhere_the_tests_serve_it(
    site: ServerThread,
) -> None:
    assert IDLE_KEEPALIVE_SECONDS > UVICORN_DEFAULT_KEEPALIVE
    assert site.server.config.timeout_keep_alive == IDLE_KEEPALIVE_SECONDS


def test_an_idle_connection_is_still_open_after_uvicorns_default_would_have_closed_it(
    site: ServerThread, emulator: ShotGridEmulator
) -> None:
    """Checked on the server's own timer rather than by waiting 5 s: after a call, uvicorn
    arms the idle timeout of the connection; it is due IDLE_KEEPALIVE_SECONDS later."""
    sg = shotgun_api3.Shotgun(site.url, script_name="token-broker", api_key="token-broker-key")
    try:
        sg.find("Project", [])
        (connection,) = site.server.server_state.connections
        timer = connection.timeout_keep_alive_task
        assert timer is not None
        remaining = timer.when() - connection.loop.time()
        # The loop's clock is read from another thread than the one that armed the timer:
        # allow its float rounding (60.0000000000009 was seen).
        assert UVICORN_DEFAULT_KEEPALIVE < remaining <= IDLE_KEEPALIVE_SECONDS + 1e-6
        assert len(emulator.peers) == 1
    finally:
        sg.close()
