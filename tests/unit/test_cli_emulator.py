"""`token-broker shotgrid-emulator` as an operator runs it (a subprocess of the venv)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shotgrid_emulator import Directory, DirectoryError
from tests.support.servers import free_port

pytestmark = pytest.mark.timeout(30)


def broker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args], capture_output=True, text=True, timeout=20
    )


def test_help() -> None:
    r = broker("shotgrid-emulator", "--help")
    assert r.returncode == 0
    assert "--users" in r.stdout and "--port" in r.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read users file"),
        ("[[users]\nlogin = ", "not valid TOML"),
        ('[[users]]\nlogin = "x"\n', "users[0].id is required"),
        ('[[users]]\nid = 1\nlogin = "x"\nprojects = [9]\n', "unknown project 9"),
        ('[[users]]\nid = 1\nlogin = "x"\n[[users]]\nid = 2\nlogin = "x"\n', "duplicate"),
        ('[site]\nuser_authentication_method = "magic"\n', "user_authentication_method"),
        (
            '[site]\nauthentication_app_session_launcher_enabled = "yes"\n',
            "authentication_app_session_launcher_enabled must be of type bool",
        ),
        ('[[users]]\nid = 1\nlogin = "x"\ntotp_secret = "JBSWY3DP"\n', "needs two_factor"),
        (
            '[[users]]\nid = 1\nlogin = "x"\ntwo_factor = true\ntotp_secret = "not base32!"\n',
            "totp_secret: TOTP secret is not base32",
        ),
        ('[[users]]\nid = 1\nlogin = "x"\npermission_rule_set = ""\n', "must not be empty"),
    ],
)
def test_bad_users_file_is_one_line_and_nonzero(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "users.toml"
    if content is not None:
        path.write_text(content)
    r = broker("shotgrid-emulator", "--port", "1", "--users", str(path))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("token-broker: ") and fragment in lines[0]
    assert r.stdout == ""


def test_users_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(
        """
[site]
user_authentication_method = "saml2"
authentication_app_session_launcher_enabled = true

[[projects]]
id = 1
name = "Only"

[[users]]
id = 10
login = "zed"
password = "zed-pw"
projects = [1]
may_sudo = true
two_factor = true
totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEH"
permission_rule_set = "Supervisor"

[[users]]
id = 11
login = "yan"
permission_rule_set = "Admin"

[[scripts]]
id = 20
name = "svc"
key = "svc-key"
"""
    )
    directory = Directory.from_toml_file(path)
    zed = directory.user("zed")
    assert zed is not None and zed.projects == [1] and zed.may_sudo
    assert directory.check_password("zed", "zed-pw") is zed
    assert directory.check_password("zed", "nope") is None
    assert "zed-pw" not in repr(directory)
    assert directory.user_authentication_method == "saml2"
    assert directory.app_session_launcher_enabled is True
    assert zed.two_factor and zed.totp_secret == "JBSWY3DPEHPK3PXPJBSWY3DPEH"
    assert "JBSWY3DPEHPK3PXPJBSWY3DPEH" not in repr(directory)
    # A custom group gets an id of its own next to the stock ones.
    assert directory.permission_rule_sets["Supervisor"] not in {5, 7, 8}
    assert directory.user("yan").permission_rule_set == "Admin"  # type: ignore[union-attr]


def test_users_file_defaults_keep_the_launcher_off(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text('[[users]]\nid = 1\nlogin = "x"\n')
    directory = Directory.from_toml_file(path)
    assert directory.app_session_launcher_enabled is False
    assert directory.users[0].permission_rule_set == "Artist"


def test_demo_directory_matches_the_contract() -> None:
    demo = Directory.demo()
    assert demo.app_session_launcher_enabled is True
    assert [(u.login, u.id, u.permission_rule_set) for u in demo.users] == [
        ("alice", 101, "Artist"),
        ("bob", 102, "Artist"),
        ("carol", 103, "Artist"),
        ("dave", 104, "Artist"),
        ("erin", 105, "Artist"),
        ("frank", 106, "Admin"),
    ]
    frank = demo.check_password("frank", "frank-pw")
    assert frank is not None and frank.active and frank.projects == [201, 202, 203]
    assert (frank.email, frank.name) == ("frank@example.com", "Frank Admin")
    dave = demo.user("dave")
    assert dave is not None and dave.two_factor and dave.totp_secret == "JBSWY3DPEHPK3PXP"


def test_mapping_rejects_bool_as_id() -> None:
    with pytest.raises(DirectoryError, match=re.escape("users[0].id")):
        Directory.from_mapping({"users": [{"id": True, "login": "x"}]})


def test_serves_and_prints_its_url() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "shotgrid-emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"ShotGrid emulator listening on http://127.0.0.1:{port}"
        # The socket is listening once the line is printed: no readiness polling needed.
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/access_token",
            data={"grant_type": "password", "username": "alice", "password": "alice-pw"},
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        r = broker("shotgrid-emulator", "--port", str(busy.getsockname()[1]))
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "cannot listen" in r.stderr
