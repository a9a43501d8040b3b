"""broker/serving.py: the uvicorn options `serve`, `demo` and the tests share, and the
metrics directory `serve --workers N` makes when none is given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.serving import MULTIPROC_ENV, multiprocess_metrics, server_options
from broker.settings import load_settings


def test_server_options_follow_the_settings() -> None:
    settings = load_settings(http_head_timeout=3.5, http_idle_timeout=7.0, http_max_connections=50)
    options = server_options(settings)
    # The broker decides client addresses (broker/http/proxies.py); uvicorn must not first.
    assert options["proxy_headers"] is False and options["forwarded_allow_ips"] == []
    assert options["timeout_keep_alive"] == 7.0
    assert options["limit_concurrency"] == 51  # uvicorn refuses at len(connections) >= it
    assert options["http"].keywords == {"head_timeout": 3.5}


def test_one_worker_needs_no_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_metrics(1) as made:
        assert made is None and MULTIPROC_ENV not in os.environ


def test_a_given_metrics_directory_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with multiprocess_metrics(4) as made:
        assert made is None and os.environ[MULTIPROC_ENV] == str(tmp_path)
    assert tmp_path.is_dir() and os.environ[MULTIPROC_ENV] == str(tmp_path)


def test_several_workers_get_a_fresh_private_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_metrics(2) as made:
        assert made is not None and os.environ[MULTIPROC_ENV] == made
        directory = Path(made)
        assert directory.is_dir() and list(directory.iterdir()) == []
        assert directory.stat().st_mode & 0o077 == 0  # the broker's own
    assert not directory.exists() and MULTIPROC_ENV not in os.environ
