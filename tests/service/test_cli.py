"""The service's commands: `plateau keys create` and `plateau db upgrade`."""

from __future__ import annotations

import sqlalchemy as sa
from typer.testing import CliRunner

from app.core.config import get_settings
from app.db.models import ApiKey
from app.db.session import session_scope
from app.services.keys import authenticate
from cli.main import app


def run(args, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("PLATEAU_DATABASE_URL", "PLATEAU_BROKER_URL", "PLATEAU_VAR_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()


def test_keys_create_prints_the_key_alone_on_the_last_line_and_stores_a_hash(
    monkeypatch, tmp_path
):
    assert run(["db", "upgrade"], monkeypatch, tmp_path).exit_code == 0

    result = run(["keys", "create", "--tenant", "acme"], monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("plt_") and " " not in key
    url = f"sqlite:///{tmp_path / 'var' / 'plateau.sqlite'}"
    with session_scope(url) as session:
        assert authenticate(session, key).name == "acme"
        stored = session.execute(sa.select(ApiKey.prefix, ApiKey.key_hash)).one()
    assert key not in stored and stored.prefix in key
    assert key.encode() not in (tmp_path / "var" / "plateau.sqlite").read_bytes()


def test_keys_create_needs_a_migrated_database(monkeypatch, tmp_path):
    result = run(["keys", "create", "--tenant", "acme"], monkeypatch, tmp_path)

    assert result.exit_code == 2
    assert "plateau db upgrade" in result.output


def test_up_refuses_a_public_address(monkeypatch, tmp_path):
    result = run(["up", "--host", "0.0.0.0"], monkeypatch, tmp_path)

    assert result.exit_code == 2
    assert "loopback" in result.output
