"""Shared fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from costwarden.storage.migrate import migrate
from tests.helpers import gateway_toml


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A config file on a migrated SQLite database (``cw.db`` beside it); no upstream is
    called (the CLI's commands never do)."""
    path = tmp_path / "costwarden.toml"
    url = f"sqlite:///{tmp_path}/cw.db"
    path.write_text(gateway_toml("http://127.0.0.1:9", url), encoding="utf-8")
    migrate(url)
    return str(path)
