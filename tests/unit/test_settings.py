from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from broker.settings import Settings, SettingsError, load_settings, settings_markdown_table

KEK = base64.urlsafe_b64encode(b"k" * 32).decode()
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_matches_the_code() -> None:
    text = README.read_text()
    block = text.split("<!-- settings-table:start -->")[1].split("<!-- settings-table:end -->")[0]
    assert block.strip() == settings_markdown_table()


def test_every_setting_is_documented() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no docstring"


def test_env_beats_toml_beats_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('issuer = "https://from-file.example"\naccess_token_ttl = 300\n')
    monkeypatch.setenv("BROKER_ISSUER", "https://from-env.example")
    settings = load_settings(config)
    assert settings.issuer == "https://from-env.example"
    assert settings.access_token_ttl == 300
    assert settings.refresh_reuse_grace == 5.0


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("BROKER_ACCESS_TOKEN_TTL", "soon", "BROKER_ACCESS_TOKEN_TTL"),
        ("BROKER_ISSUER", "https://x.example/", "BROKER_ISSUER"),
        ("BROKER_SECRET_KEY", "short", "BROKER_SECRET_KEY"),
        ("BROKER_UPSTREAM_STRATEGY", "magic", "BROKER_UPSTREAM_STRATEGY"),
    ],
)
def test_invalid_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(named)
    assert value not in message or env != "BROKER_SECRET_KEY"


def test_unknown_toml_key_and_bad_toml(tmp_path: Path) -> None:
    bad = tmp_path / "a.toml"
    bad.write_text("isuer = 'x'\n")
    with pytest.raises(SettingsError, match="isuer: unknown setting"):
        load_settings(bad)
    broken = tmp_path / "b.toml"
    broken.write_text("issuer = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_SECRET_KEY", KEK)
    monkeypatch.setenv("BROKER_SHOTGRID_SCRIPT_KEY", "script-secret-value")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert KEK not in text
        assert "script-secret-value" not in text


def test_production_problems_one_line_each() -> None:
    problems = load_settings().production_problems()
    assert all(re.match(r"^BROKER_[A-Z_]+", p) for p in problems)
    assert any(p.startswith("BROKER_ISSUER") for p in problems)
    ok = load_settings(
        issuer="https://auth.example",
        shotgrid_url="https://sg.example",
        store_url="sqlite:///x.db",
        secret_key=KEK,
        shotgrid_script_name="s",
        shotgrid_script_key="k",
    )
    assert ok.production_problems() == []
    insecure = load_settings(
        issuer="http://auth.example",
        shotgrid_url="https://sg.example",
        store_url="sqlite:///x.db",
        secret_key=KEK,
        upstream_strategy="custody",
    )
    assert any("https" in p for p in insecure.production_problems())
